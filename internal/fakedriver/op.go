package fakedriver

// Op is a kind of operation, used by counters, the call log and hooks.
type Op string

// The operations a Connector counts, logs and passes to hooks.
const (
	OpConnect  Op = "connect"  // Connector.Connect: a new connection
	OpQuery    Op = "query"    // QueryContext on a conn or a stmt
	OpExec     Op = "exec"     // ExecContext on a conn or a stmt
	OpPrepare  Op = "prepare"  // PrepareContext on a conn
	OpBegin    Op = "begin"    // BeginTx on a conn
	OpCommit   Op = "commit"   // Commit of a transaction
	OpRollback Op = "rollback" // Rollback of a transaction
	OpPing     Op = "ping"     // Ping on a conn
)

// opIndex is an Op as an array index, so the hot path never compares strings.
type opIndex uint8

const (
	iConnect opIndex = iota
	iQuery
	iExec
	iPrepare
	iBegin
	iCommit
	iRollback
	iPing
	numOps
)

// ops maps an opIndex back to its Op.
var ops = [numOps]Op{
	iConnect:  OpConnect,
	iQuery:    OpQuery,
	iExec:     OpExec,
	iPrepare:  OpPrepare,
	iBegin:    OpBegin,
	iCommit:   OpCommit,
	iRollback: OpRollback,
	iPing:     OpPing,
}

// index returns op's index, or numOps for an unknown Op.
func (op Op) index() opIndex {
	for i, o := range ops {
		if o == op {
			return opIndex(i)
		}
	}
	return numOps
}
