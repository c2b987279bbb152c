package fakedriver

import "slices"

// Call is one entry of the call log kept after SetRecord(true).
type Call struct {
	Op  Op
	SQL string // the statement for OpQuery, OpExec and OpPrepare; "" otherwise
	// InTx reports that the call ran inside a transaction. OpBegin, OpCommit
	// and OpRollback count as inside the transaction they start or end.
	InTx bool
	// ReadOnlyTx reports that the transaction was begun with
	// TxOptions.ReadOnly. Always false when InTx is false.
	ReadOnlyTx bool
}

// Count returns how many times op ran on this node since New or the last
// Reset, successfully or not. It returns 0 for an unknown Op.
func (c *Connector) Count(op Op) int {
	i := op.index()
	if i == numOps {
		return 0
	}
	return int(c.counts[i].Load())
}

// SetRecord turns the call log on or off; it is off by default. Turning it
// off keeps the entries logged so far.
func (c *Connector) SetRecord(on bool) { c.record.Store(on) }

// Calls returns a copy of the call log, oldest first.
func (c *Connector) Calls() []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// Reset zeroes the counters and empties the call log. It leaves the hook,
// responder, down state, recording switch and open connections alone. It is
// meant to be called between phases of a test: operations running during
// Reset may be counted either side of it.
func (c *Connector) Reset() {
	for i := range c.counts {
		c.counts[i].Store(0)
	}
	c.mu.Lock()
	c.calls = nil
	c.mu.Unlock()
}

// note counts an operation and, when recording, logs it.
func (c *Connector) note(op opIndex, query string, inTx, readOnly bool) {
	c.counts[op].Add(1)
	if !c.record.Load() {
		return
	}
	c.mu.Lock()
	c.calls = append(c.calls, Call{Op: ops[op], SQL: query, InTx: inTx, ReadOnlyTx: inTx && readOnly})
	c.mu.Unlock()
}
