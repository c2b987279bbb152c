package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SessionMode is how a DB honours sessions; see WithSessionMode.
type SessionMode struct {
	kind    sessionKind
	window  time.Duration // time mode
	maxWait time.Duration // causal mode
}

type sessionKind uint8

const (
	sessionNone sessionKind = iota
	sessionTime
	sessionCausal
)

// SessionTime makes a session's reads go to the primary for window after its
// last write, then to replicas again (what Rails does, with 2 s). It needs no
// WAL positions, so it works with any dialect. window must be > 0; see
// DefaultSessionWindow.
func SessionTime(window time.Duration) SessionMode {
	return SessionMode{kind: sessionTime, window: window}
}

// SessionCausal makes a session remember the primary's WAL insert position
// after its writes (asked for once, at the session's next read or Token);
// its reads go only to replicas that have replayed at least that far, else
// to the primary. With maxWait 0 the replicas'
// positions known from the last probes decide; with maxWait > 0 a read asks
// the replicas for their position and waits up to maxWait for one to catch
// up before using the primary. PostgreSQL dialect only: with Generic() it
// acts as SessionTime(DefaultSessionWindow). It is the default, with maxWait
// 0.
func SessionCausal(maxWait time.Duration) SessionMode {
	return SessionMode{kind: sessionCausal, maxWait: maxWait}
}

func (m SessionMode) validate(c *config) {
	switch {
	case m.kind == sessionTime && m.window <= 0:
		c.fail("WithSessionMode", fmt.Sprintf("SessionTime(%v)", m.window), "window must be > 0")
	case m.kind == sessionCausal && m.maxWait < 0:
		c.fail("WithSessionMode", fmt.Sprintf("SessionCausal(%v)", m.maxWait), "maxWait must be >= 0")
	}
}

// A Session is a sequence of statements that must read its own writes: a
// user's requests, say. Carry it in the context with WithSession. After a
// write made under it (ExecContext, a write query, a read-write transaction),
// its reads avoid replicas that have not caught up; see WithSessionMode. A
// Session is safe for concurrent use, and may be used with several DBs over
// the same cluster. One caveat, as database/sql shows no commit: a read of
// the session that runs concurrently with its transaction's Commit (or
// between a writing QueryRow and its Scan) may learn a position from just
// before that commit.
type Session struct {
	mu        sync.Mutex // protects following fields
	lsn       uint64     // the WAL position its reads must see
	lastWrite time.Time  // when it last wrote; zero: never
	pending   []*pendingWrite
}

// pendingWrite is a write of a session whose WAL position is not known yet:
// an ExecContext or QueryRowContext (learned lazily: one round trip for any
// number of writes, none when no read follows), a write through
// QueryContext (it commits only once its rows are closed), a read-write
// transaction (database/sql shows no commit), or a write whose position
// could not be learned. The session learns the primary's position at its
// next read or Token after the write ended, and reads from the primary
// until then.
type pendingWrite struct {
	db   *DB             // the DB that made it; nil for a resumed token's
	ctx  context.Context // of the query or transaction: once it is done, so is the write
	tx   *sql.Tx         // a transaction: ended once committed or rolled back
	rows *sql.Rows       // a writing query: ended once its rows are closed
	over *atomic.Bool    // a transaction or writing query of the SQL() face: ended once set
}

// ended reports whether the write is over, so that the primary's position
// from now on covers it. It may wait for the rows' or transaction's lock:
// call it without holding Session.mu.
func (p *pendingWrite) ended() bool {
	switch {
	case p.over != nil:
		return p.over.Load()
	case p.tx == nil && p.rows == nil:
		return true
	case p.ctx.Err() != nil:
		return true // being closed or rolled back: it commits nothing more
	case p.tx != nil:
		return txDone(p.tx)
	}
	_, err := p.rows.Columns() // fails once the rows are closed
	return err != nil
}

// pendingSnapshot returns a copy of the pending writes.
func (s *Session) pendingSnapshot() []*pendingWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending)
}

// dropPending removes the given entries, if still there.
func (s *Session) dropPending(done []*pendingWrite) {
	s.mu.Lock()
	s.pending = slices.DeleteFunc(s.pending, func(p *pendingWrite) bool { return slices.Contains(done, p) })
	s.mu.Unlock()
}

// NewSession returns an empty session: its first reads may go to any replica.
func NewSession() *Session { return &Session{} }

// WithSession returns a context that carries s: statements under it read
// their own writes. A nil s removes the session ctx carried.
func WithSession(ctx context.Context, s *Session) context.Context {
	r := routeOf(ctx)
	r.session = s
	return context.WithValue(ctx, ctxKey{}, r)
}

const tokenVersion = "v1"

// Token returns the session's position as a short opaque string, for a
// cookie or a header; ResumeSession turns it back into a session, in this
// process or another. A write whose position is still unknown (see
// pendingWrite) is learned first; failing that, the token says so, and the
// resumed session learns it at its first read. Token uses
// context.Background internally; to bound that, use TokenContext.
func (s *Session) Token() string {
	return s.TokenContext(context.Background())
}

// TokenContext is Token with a context bounding the round trip that learns
// a pending write's position.
func (s *Session) TokenContext(ctx context.Context) string {
	_ = s.resolvePending(ctx, nil) // failing that, the token says a write is pending
	s.mu.Lock()
	defer s.mu.Unlock()
	var ms int64
	if !s.lastWrite.IsZero() {
		ms = s.lastWrite.UnixMilli()
	}
	tok := tokenVersion + "." + strconv.FormatUint(s.lsn, 16) + "." + strconv.FormatInt(ms, 16)
	if len(s.pending) > 0 {
		tok += "." + tokenPending
	}
	return tok
}

const tokenPending = "p"

// maxTokenLen bounds a token: "v1." + 16 + "." + 16 + ".p" is 39 bytes.
const maxTokenLen = 64

// ResumeSession returns a session at the position a Token encoded. A token
// it cannot parse gives an error for which errors.Is(err, ErrInvalidToken).
//
// A token carried by a client is the client's to forge: the worst a forged
// one does is send that client's reads to the primary (and, with
// SessionCausal(maxWait), make them wait maxWait first). A last write in the
// future counts as now.
func ResumeSession(token string) (*Session, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidToken, len(token), maxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != tokenVersion ||
		len(parts) == 4 && parts[3] != tokenPending {
		return nil, fmt.Errorf("%w: %.40q", ErrInvalidToken, token)
	}
	lsn, err1 := strconv.ParseUint(parts[1], 16, 64)
	ms, err2 := strconv.ParseInt(parts[2], 16, 64)
	if err1 != nil || err2 != nil || ms < 0 {
		return nil, fmt.Errorf("%w: %.40q", ErrInvalidToken, token)
	}
	s := &Session{lsn: lsn}
	if ms > 0 {
		s.lastWrite = time.UnixMilli(ms)
		if now := time.UnixMilli(time.Now().UnixMilli()); s.lastWrite.After(now) {
			s.lastWrite = now
		}
	}
	if len(parts) == 4 {
		s.pending = []*pendingWrite{{}}
	}
	return s, nil
}

func (s *Session) advance(lsn uint64, at time.Time) {
	s.mu.Lock()
	s.lsn = max(s.lsn, lsn)
	if at.After(s.lastWrite) {
		s.lastWrite = at
	}
	s.mu.Unlock()
}

// resolvePending learns the primary's WAL position for the session's
// writes that ended since its last read, and returns the error that kept it
// from learning it, if any: every commit that happened before
// now is at or before the primary's position now. reader is the DB about to
// read (nil from Token). Transactions still open stay pending (their writes
// are not visible to anyone yet), and so do writes whose position could not
// be learned.
func (s *Session) resolvePending(ctx context.Context, reader *DB) error {
	pending := s.pendingSnapshot()
	if len(pending) == 0 {
		return nil
	}
	db := reader
	var ended []*pendingWrite
	for _, p := range pending {
		if p.ended() {
			ended = append(ended, p)
			if db == nil {
				db = p.db
			}
		}
	}
	if len(ended) == 0 || db == nil {
		return nil
	}
	// One position covers every write that ended before it was read.
	if err := db.resolveWrite(ctx, s, db.cfg.clock.now()); err != nil {
		return err
	}
	s.dropPending(ended)
	return nil
}

// txDone reports whether tx was committed or rolled back, without touching
// its connection: StmtContext fails at once with sql.ErrTxDone on an ended
// transaction, and with another error (a statement of another database) on
// an open one.
func txDone(tx *sql.Tx) bool {
	return errors.Is(tx.StmtContext(context.Background(), &sql.Stmt{}).Close(), sql.ErrTxDone)
}

// resolveWrite records a write of s that ended by now: in causal mode, the
// current primary's WAL insert position; in time mode, now.
func (db *DB) resolveWrite(ctx context.Context, s *Session, now time.Time) error {
	if db.closed.Load() {
		return ErrClosed // nothing runs after Close: the write stays pending, and its token says so
	}
	if !db.causal() {
		s.advance(0, now)
		return nil
	}
	p, err := db.primaryNode(ctx)
	if err != nil {
		return err
	}
	lsn, err := currentLSN(ctx, p, db.cfg.probeTimeout)
	if err != nil {
		return err
	}
	db.sawPrimaryAt(lsn)
	s.advance(lsn, now)
	return nil
}

func (db *DB) causal() bool {
	return db.cfg.session.kind == sessionCausal && db.cfg.dialect.knowsRoles()
}

// sawPrimaryAt records that the primary reached WAL position lsn.
func (db *DB) sawPrimaryAt(lsn uint64) {
	for {
		old := db.primaryLSN.Load()
		if lsn <= old || db.primaryLSN.CompareAndSwap(old, lsn) {
			return
		}
	}
}

// currentLSN returns the WAL insert position of primary n.
func currentLSN(ctx context.Context, n *node, timeout time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return queryLSN(ctx, n, "SELECT (pg_current_wal_insert_lsn() - '0/0')::text")
}

// replayedLSN asks replica n for its replayed WAL position and caches it.
func replayedLSN(ctx context.Context, n *node) (uint64, error) {
	v, err := queryLSN(ctx, n, "SELECT (COALESCE(pg_last_wal_replay_lsn(), '0/0') - '0/0')::text")
	if err != nil {
		return 0, err
	}
	for {
		old := n.replayed.Load()
		if v <= old || n.replayed.CompareAndSwap(old, v) {
			return v, nil
		}
	}
}

// queryLSN runs query, which returns one WAL position as decimal text, on n.
func queryLSN(ctx context.Context, n *node, query string) (uint64, error) {
	var lsn string
	if err := n.db.QueryRowContext(ctx, query, n.simple...).Scan(&lsn); err != nil {
		return 0, nodeErr(n, "query", err)
	}
	return strconv.ParseUint(lsn, 10, 64)
}

// noteWrite records a write made with ExecContext or QueryRowContext under
// session s, if any. Its WAL position is learned at the session's
// next read or Token: one round trip for any number of writes, and none for
// writes no read follows.
func (db *DB) noteWrite(s *Session) {
	if s != nil {
		db.note(s, &pendingWrite{db: db})
	}
}

// noteQueryWrite records a write made with QueryContext under session s (of
// ctx), if any: it commits only once its rows are closed.
func (db *DB) noteQueryWrite(ctx context.Context, s *Session, rows *sql.Rows) {
	if s != nil {
		db.note(s, &pendingWrite{db: db, ctx: ctx, rows: rows})
	}
}

// noteOpen records a transaction or writing query of the SQL() face under
// session s, if any: it is over once over is set.
func (db *DB) noteOpen(s *Session, over *atomic.Bool) {
	if s != nil {
		db.note(s, &pendingWrite{db: db, over: over})
	}
}

// noteTx records a read-write transaction begun under session s (of ctx),
// if any.
func (db *DB) noteTx(ctx context.Context, s *Session, tx *sql.Tx) {
	if s != nil {
		db.note(s, &pendingWrite{db: db, ctx: ctx, tx: tx})
	}
}

// note records write p of session s. Time mode needs no position: a
// statement counts as written now; a transaction, or a writing query whose
// rows are open, stays pending until it ends, and its window starts then. (Callers check for a session first, so that statements without one
// allocate nothing.)
func (db *DB) note(s *Session, p *pendingWrite) {
	if !db.causal() && p.tx == nil && p.rows == nil && p.over == nil {
		s.advance(0, db.cfg.clock.now())
		return
	}
	s.addPending(p)
}

// addPending records p. Writes that have ended are all covered by one
// position learned later, so they are replaced by a single fresh entry (p
// itself when p has ended): a session that only writes holds one entry plus
// its open transactions and rows, however many writes it makes. The
// replaced entries are not merged into one a concurrent read may be
// resolving (that read's position may predate p).
func (s *Session) addPending(p *pendingWrite) {
	var ended []*pendingWrite
	for _, q := range s.pendingSnapshot() {
		if q.ended() {
			ended = append(ended, q)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ended) > 0 {
		s.pending = slices.DeleteFunc(s.pending, func(q *pendingWrite) bool { return slices.Contains(ended, q) })
		if p.tx != nil || p.rows != nil || p.over != nil {
			s.pending = append(s.pending, &pendingWrite{db: p.db})
		}
	}
	s.pending = append(s.pending, p)
}

// sessionReplicas returns the replicas of t that may serve a read of s, or
// usePrimary when only the primary may; err when no node may (no primary
// became known while learning the position of its writes).
func (db *DB) sessionReplicas(ctx context.Context, s *Session, t *table) (replicas []*node, usePrimary bool, err error) {
	if err := s.resolvePending(ctx, db); errors.Is(err, ErrNoPrimary) || errors.Is(err, ErrClosed) {
		// Learning the position already waited for a primary: the read,
		// which may only use the primary now, must not wait again.
		return nil, true, err
	}
	s.mu.Lock()
	need, last, pending := s.lsn, s.lastWrite, len(s.pending) > 0
	s.mu.Unlock()
	if pending {
		// An open read-write transaction of this session may commit at any
		// moment, or a write's position is unknown: read where it writes.
		return nil, true, nil
	}
	if !db.causal() {
		window := db.cfg.session.window
		if window == 0 {
			window = DefaultSessionWindow
		}
		if !last.IsZero() && db.cfg.clock.now().Sub(last) < window {
			return nil, true, nil
		}
		return t.replicas, false, nil
	}
	if need == 0 {
		return t.replicas, false, nil
	}
	if known := db.primaryLSN.Load(); known != 0 && need > known {
		// Past any position the primary was seen at: a token from the
		// future (or forged), or a write of another process newer than
		// this one's last probe. Only the primary surely has it; no replica
		// is asked.
		return nil, true, nil
	}
	if caught := caughtUp(t.replicas, need); len(caught) > 0 {
		return caught, false, nil
	}
	if db.cfg.session.maxWait <= 0 || len(t.replicas) == 0 {
		return nil, true, nil
	}
	r, usePrimary := db.waitCaughtUp(ctx, t, need)
	return r, usePrimary, nil
}

// caughtUp returns the replicas whose known replayed position is at least
// need: replicas itself (no copy) when all of them are.
func caughtUp(replicas []*node, need uint64) []*node {
	all := true
	for _, n := range replicas {
		if n.replayed.Load() < need {
			all = false
			break
		}
	}
	if all {
		return replicas
	}
	var out []*node
	for _, n := range replicas {
		if n.replayed.Load() >= need {
			out = append(out, n)
		}
	}
	return out
}

// waitCaughtUp waits up to SessionCausal's maxWait for a replica of t to
// have replayed need, asking every replica at once (see awaitReplay); the
// first that has serves the read, else the primary does.
func (db *DB) waitCaughtUp(ctx context.Context, t *table, need uint64) ([]*node, bool) {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.session.maxWait)
	defer cancel()
	caught := make(chan *node, len(t.replicas))
	var wg sync.WaitGroup
	for _, n := range t.replicas {
		wg.Go(func() {
			if db.awaitReplay(ctx, n, need) {
				caught <- n
			}
		})
	}
	go func() { wg.Wait(); close(caught) }()
	n, ok := <-caught
	cancel() // the others stop polling
	wg.Wait()
	if !ok {
		return nil, true
	}
	return []*node{n}, false
}

// replayPoll is a replica's one poll of its replayed position, shared by the
// session reads waiting for it to catch up: however many wait, one query at
// a time asks the replica, and the queries back off from minReplayPoll to
// maxReplayPoll while the position does not move. (Each waiting read once
// asked every replica every millisecond, and a forged token made every
// request do so.)
type replayPoll struct {
	mu      sync.Mutex    // protects following fields
	running chan struct{} // closed when the poll in flight (its back-off included) ends; nil when none
	next    time.Time     // no query before
	delay   time.Duration // the back-off after the next query that finds no progress
}

const (
	minReplayPoll = time.Millisecond
	maxReplayPoll = 32 * time.Millisecond
)

// awaitReplay reports whether replica n has replayed need before ctx ends,
// polling it as the one poller or waiting for the poller's answer.
func (db *DB) awaitReplay(ctx context.Context, n *node, need uint64) bool {
	p := &n.replay
	for {
		if n.replayed.Load() >= need {
			return true
		}
		p.mu.Lock()
		if ch := p.running; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return false
			}
		}
		ch := make(chan struct{})
		p.running = ch
		wait := time.Until(p.next)
		p.mu.Unlock()

		before := n.replayed.Load()
		var err error
		if wait > 0 {
			err = sleep(ctx, wait)
		}
		if err == nil {
			if _, err = replayedLSN(ctx, n); err != nil && ctx.Err() == nil {
				db.signal(n, err)
			}
		}
		p.mu.Lock()
		if n.replayed.Load() > before || p.delay == 0 {
			p.delay = minReplayPoll
		} else {
			p.delay = min(2*p.delay, maxReplayPoll)
		}
		p.next = time.Now().Add(p.delay)
		p.running = nil
		p.mu.Unlock()
		close(ch)
		if err != nil {
			return n.replayed.Load() >= need
		}
	}
}

// sleep waits for d, or returns ctx's error if it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Lag limits (WithMaxLag).

// maxSamples bounds the history of the primary's WAL position kept for
// measuring replica lag in time.
const maxSamples = 4096

// lsnSample is the primary's WAL position at a time.
type lsnSample struct {
	at  time.Time
	lsn uint64
}

// samplePrimaryLocked records the primary's WAL position, for measuring
// replica lag in time. Only changes are kept.
func (db *DB) samplePrimaryLocked(n *node, now time.Time) {
	hs := &db.hs
	if n != hs.primary {
		return
	}
	if k := len(hs.samples); k > 0 && hs.samples[k-1].lsn == n.h.lsn {
		return
	}
	if len(hs.samples) == maxSamples {
		hs.samples = append(hs.samples[:0], hs.samples[maxSamples/2:]...)
	}
	hs.samples = append(hs.samples, lsnSample{at: now, lsn: n.h.lsn})
}

// lagLocked measures how far replica n is behind the primary, in bytes and
// in time, and reports whether that exceeds WithMaxLag. Time lag is how long
// ago the primary first reported a WAL position beyond what n has replayed,
// so an idle primary does not make a caught-up replica look late.
//
// While no primary is known the limit still holds: n is measured against
// the last positions the primary reported (nothing commits meanwhile, so
// the lag in time stops growing when the primary was lost) and against the
// most advanced replica, which is at most as far as the primary got.
func (db *DB) lagLocked(n *node, now time.Time) bool {
	n.h.lagBytes, n.h.lagTime = 0, 0
	if n.h.role != RoleReplica || !n.h.probed {
		return false
	}
	samples := db.hs.samples
	var sampled, ref uint64 // the primary's last known position; the one n is judged by
	if len(samples) > 0 {
		sampled = samples[len(samples)-1].lsn
	}
	ref = sampled
	if db.hs.primary == nil {
		for _, m := range db.nodeList() {
			if m.h.up && m.h.probed && m.h.role == RoleReplica {
				ref = max(ref, m.h.lsn)
			}
		}
		if !db.hs.lostAt.IsZero() && now.After(db.hs.lostAt) {
			now = db.hs.lostAt
		}
	}
	if n.h.lsn >= ref {
		return false
	}
	n.h.lagBytes = int64(ref - n.h.lsn)
	overBytes := db.cfg.maxLagBytes > 0 && n.h.lagBytes > db.cfg.maxLagBytes
	if n.h.lsn >= sampled {
		return overBytes // behind another replica only: no time to tell
	}
	i, _ := slices.BinarySearchFunc(samples, n.h.lsn, func(s lsnSample, lsn uint64) int {
		if s.lsn <= lsn {
			return -1
		}
		return 1
	})
	n.h.lagTime = max(now.Sub(samples[i].at), 0)
	// Behind everything the primary reported since it became primary (or
	// since this DB started): the lag in time is at least lagTime, maybe far
	// more. With a time limit, keep it out until it is within the history.
	unknown := i == 0
	return overBytes || db.cfg.maxLagTime > 0 && (unknown || n.h.lagTime > db.cfg.maxLagTime)
}
