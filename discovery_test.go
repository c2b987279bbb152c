package dbrouter

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/fakedriver"
	"github.com/dbrouter/dbrouter/internal/testwait"
)

// fakeSource is a Discoverer whose answer the test sets.
type fakeSource struct {
	mu      sync.Mutex
	members []Member
	err     error
}

func (f *fakeSource) Discover(context.Context) ([]Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Member(nil), f.members...), f.err
}

func (f *fakeSource) set(err error, members ...Member) {
	f.mu.Lock()
	f.members, f.err = members, err
	f.mu.Unlock()
}

// discovered is fake PostgreSQL servers m0…m3 behind a DB from
// OpenDiscovered, driven by hand (no background goroutines).
type discovered struct {
	db   *DB
	src  *fakeSource
	pg   map[string]*fakePG
	conn map[string]*fakedriver.Connector
}

func newDiscovered(t *testing.T, opts ...Option) *discovered {
	t.Helper()
	return newDiscoveredSetup(t, func(map[string]*fakePG) {}, opts...)
}

// newDiscoveredSetup is newDiscovered with setup run on the servers before
// the DB is opened.
func newDiscoveredSetup(t *testing.T, setup func(map[string]*fakePG), opts ...Option) *discovered {
	t.Helper()
	d := &discovered{src: &fakeSource{}, pg: map[string]*fakePG{}, conn: map[string]*fakedriver.Connector{}}
	var cs []*fakedriver.Connector
	for i, name := range []string{"m0", "m1", "m2", "m3"} {
		c := fakedriver.New(name)
		cs = append(cs, c)
		d.conn[name] = c
		d.pg[name] = newFakePG(c, i > 0, 1)
	}
	setup(d.pg)
	drv, err := fakedriver.Register(cs...)
	require.NoError(t, err)
	d.src.set(nil, d.member("m0", true), d.member("m1", false), d.member("m2", false))
	db, err := OpenDiscovered(drv, d.src, append([]Option{withoutBackground(), WithPrimaryWait(0)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	d.db = db
	db.probeAll() // as OpenDiscovered does before it returns, when it runs its loops
	return d
}

func (d *discovered) member(name string, leader bool) Member {
	return Member{Name: name, DSN: name, Primary: leader}
}

// round asks the source and probes every node, as the loops would.
func (d *discovered) round() {
	d.db.discover()
	d.db.probeAll()
}

func TestOpenDiscoveredRoutesOverTheMembers(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	s := d.db.Status()
	assert.Equal(t, "m0", s.Primary)
	require.NotNil(t, s.Discovery)
	assert.True(t, s.Discovery.Reachable)
	assert.Equal(t, "m0", s.Discovery.Leader)
	assert.Equal(t, map[string]int{"m1": 2, "m2": 2}, tally(4, func() string { return served(t, d.db, ctx, "SELECT 1") }))
	_, err := d.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, d.conn["m0"].Count(fakedriver.OpExec))
}

// tally counts the answers of n calls.
func tally(n int, f func() string) map[string]int {
	m := map[string]int{}
	for range n {
		m[f()]++
	}
	return m
}

func TestMembersJoinAndLeave(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	d.src.set(nil, d.member("m0", true), d.member("m1", false), d.member("m2", false), d.member("m3", false))
	d.round()
	assert.Equal(t, map[string]int{"m1": 2, "m2": 2, "m3": 2}, tally(6, func() string { return served(t, d.db, ctx, "SELECT 1") }),
		"a member that joined serves reads once probed")

	d.src.set(nil, d.member("m0", true), d.member("m1", false), d.member("m3", false))
	d.round()
	before := d.conn["m2"].Count(fakedriver.OpQuery)
	for range 6 {
		assert.NotEqual(t, "m2", served(t, d.db, ctx, "SELECT 1"), "a member that left gets no new statements")
	}
	assert.Equal(t, before, d.conn["m2"].Count(fakedriver.OpQuery))
	testwait.Until(t, 10*time.Second, "m2 closed once idle", func() bool {
		_, ok := d.db.Status().Node("m2")
		return !ok
	})
	kinds := eventKindsOf(d.db)
	assert.Contains(t, kinds, EventMemberJoined)
	assert.Contains(t, kinds, EventMemberLeft)
}

func eventKindsOf(db *DB) []EventKind {
	db.events.flush()
	var ks []EventKind
	for _, e := range db.Status().Events {
		ks = append(ks, e.Kind)
	}
	return ks
}

// leaveBusy has m0, the leader, leave the source (m1 leads now) while a
// query's rows hold a connection of its pool; the caller closes them.
func (d *discovered) leaveBusy(t *testing.T) *sql.Rows {
	t.Helper()
	rows, err := d.db.QueryContext(UsePrimary(context.Background()), "SELECT 1")
	require.NoError(t, err)
	d.src.set(nil, d.member("m1", true), d.member("m2", false))
	d.pg["m1"].inRecovery.Store(false)
	d.round()
	return rows
}

func TestALeavingMemberDrainsBeforeItCloses(t *testing.T) {
	d := newDiscovered(t)
	rows := d.leaveBusy(t)
	st, ok := d.db.Status().Node("m0")
	require.True(t, ok, "m0 is still there while in use")
	assert.True(t, st.Draining)
	require.NoError(t, rows.Close())
	testwait.Until(t, 10*time.Second, "m0 closed once idle", func() bool {
		_, ok := d.db.Status().Node("m0")
		return !ok
	})
}

// Close closes a member that is still draining: its handle and its
// probes' pool, whatever still holds one of its connections.
func TestCloseClosesADrainingMember(t *testing.T) {
	d := newDiscovered(t)
	rows := d.leaveBusy(t)
	require.True(t, nodeStatus(t, d.db, "m0").Draining)
	require.NoError(t, d.db.Close())
	for _, name := range []string{"m0", "m1", "m2"} {
		assert.Equal(t, 1, d.conn[name].Closes(), "%s's handle closed", name)
	}
	require.NoError(t, rows.Close())
	assert.Zero(t, d.conn["m0"].OpenConns(), "m0's last connection closed once given back")
}

// A write that a member acknowledges after it left the source fails with
// ErrPrimaryLost, also while no other node is the primary yet: on Patroni,
// a leader that hung past ttl lost its member key with its leader key, and
// resumes running what it held while another member takes the key.
func TestAWriteAcknowledgedByAMemberThatLeftFails(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	entered, release := make(chan struct{}), make(chan struct{})
	d.conn["m0"].SetHook(func(_ context.Context, op fakedriver.Op, q string) error {
		if op == fakedriver.OpExec && q == "INSERT held" {
			close(entered)
			<-release
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := d.db.ExecContext(ctx, "INSERT held")
		done <- err
	}()
	<-entered
	d.src.set(nil, d.member("m1", true), d.member("m2", false)) // m1 holds the key, not promoted yet
	d.round()
	require.Empty(t, d.db.Status().Primary)
	close(release) // m0 acknowledges it now
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrPrimaryLost)
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not return")
	}
}

func TestAMemberWhoseAddressChangedIsANewMember(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	d.src.set(nil, d.member("m0", true), d.member("m1", false), Member{Name: "m2", DSN: "m3"})
	d.round()
	for range 4 {
		served(t, d.db, ctx, "SELECT 1")
	}
	assert.Positive(t, d.conn["m3"].Count(fakedriver.OpQuery), "the new address serves m2's reads")
	testwait.Until(t, 10*time.Second, "the old m2 closed", func() bool {
		n := 0
		for _, s := range d.db.Status().Nodes {
			if s.Name == "m2" {
				n++
			}
		}
		return n == 1
	})
}

// The leader key is the authority: a node that reports not-in-recovery but
// does not hold it takes no writes; the one that does takes them once it
// accepts writes.
func TestTheLeaderKeyDecidesWhoTakesWrites(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	// m1 reports not-in-recovery on a newer timeline, but the source still
	// names m0: m1 takes no writes, and while the two disagree neither does
	// m0 (the key may be moving: the source is asked again at once).
	d.pg["m1"].inRecovery.Store(false)
	d.pg["m1"].timeline.Store(2)
	d.round()
	assert.Empty(t, d.db.Status().Primary)
	assert.Equal(t, StateFenced, nodeStatus(t, d.db, "m1").State, "not the leader: no writes")
	_, err := d.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, ErrNoPrimary)
	assert.Zero(t, d.conn["m1"].Count(fakedriver.OpExec))
	assert.Equal(t, fastDiscovery, d.db.discoveryDelay(), "the source is asked more often meanwhile")

	// A node on the same timeline that does not hold the key never wins.
	d.pg["m1"].timeline.Store(1)
	d.round()
	assert.Equal(t, "m0", d.db.Status().Primary)
	assert.Equal(t, StateFenced, nodeStatus(t, d.db, "m1").State)

	d.src.set(nil, d.member("m0", false), d.member("m1", true), d.member("m2", false))
	d.pg["m1"].timeline.Store(2)
	d.pg["m0"].inRecovery.Store(true) // demoted
	d.round()
	assert.Equal(t, "m1", d.db.Status().Primary)
	_, err = d.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	assert.Equal(t, 1, d.conn["m1"].Count(fakedriver.OpExec))

	// The source names m2 before its server accepts writes: none takes them.
	d.src.set(nil, d.member("m0", false), d.member("m1", false), d.member("m2", true))
	d.pg["m1"].inRecovery.Store(true)
	d.round()
	assert.Empty(t, d.db.Status().Primary)
	_, err = d.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	assert.ErrorIs(t, err, ErrNoPrimary)
	d.pg["m2"].inRecovery.Store(false)
	d.pg["m2"].timeline.Store(3)
	d.round()
	assert.Equal(t, "m2", d.db.Status().Primary)
}

// A failover the HA manager undid: the old leader took the key back. Its
// fence lifts; without the source's word the router would keep the
// rightful primary fenced. (Seen on Patroni: every read and write failed
// until the DB was recreated.)
func TestTheLeaderKeyLiftsAFence(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	d.pg["m1"].inRecovery.Store(false)
	d.pg["m1"].timeline.Store(2)
	d.src.set(nil, d.member("m0", false), d.member("m1", true), d.member("m2", false))
	d.round()
	require.Equal(t, "m1", d.db.Status().Primary)
	require.Equal(t, StateFenced, nodeStatus(t, d.db, "m0").State)

	d.pg["m1"].inRecovery.Store(true) // rewound to follow m0 again
	d.pg["m1"].timeline.Store(1)
	d.src.set(nil, d.member("m0", true), d.member("m1", false), d.member("m2", false))
	d.round()
	assert.Equal(t, "m0", d.db.Status().Primary)
	assert.Equal(t, StateUp, nodeStatus(t, d.db, "m0").State)
	_, err := d.db.ExecContext(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
}

// Without a source, a fence lifts too, when the node on the newer timeline
// has itself become a replica on the older one.
func TestAFenceLiftsWhenTheNewerTimelineIsGone(t *testing.T) {
	pc := newPGCluster(t, 2)
	pc.pg[1].inRecovery.Store(false)
	pc.pg[1].timeline.Store(2)
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	pc.pg[1].fail.Store(true) // the winner down: the fence holds
	pc.probe()
	pc.probe()
	require.Equal(t, StateFenced, nodeStatus(t, pc.db, "primary").State)
	pc.pg[1].fail.Store(false)
	pc.pg[1].inRecovery.Store(true) // rewound: a replica on timeline 1
	pc.pg[1].timeline.Store(1)
	pc.probe()
	assert.Equal(t, "primary", pc.db.Status().Primary)
	assert.Equal(t, StateUp, nodeStatus(t, pc.db, "primary").State)
	assert.True(t, nodeStatus(t, pc.db, "replica1").Readable)
}

// When the source cannot be reached, routing goes on over the last members,
// by the router's own rules, and Status and an event say so.
func TestSourceUnreachable(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	d.src.set(errors.New("connection refused"))
	d.round()
	s := d.db.Status()
	require.NotNil(t, s.Discovery)
	assert.False(t, s.Discovery.Reachable)
	assert.Error(t, s.Discovery.LastError)
	assert.Equal(t, "m0", s.Primary, "routing goes on")
	assert.Contains(t, served(t, d.db, ctx, "SELECT 1"), "m")
	assert.Contains(t, eventKindsOf(d.db), EventSourceUnreachable)
	// Its own rules: m1 promoted to timeline 2 wins, without the key.
	d.pg["m1"].inRecovery.Store(false)
	d.pg["m1"].timeline.Store(2)
	d.round()
	assert.Equal(t, "m1", d.db.Status().Primary)

	d.src.set(nil, d.member("m0", false), d.member("m1", true), d.member("m2", false))
	d.round()
	assert.True(t, d.db.Status().Discovery.Reachable)
	assert.Contains(t, eventKindsOf(d.db), EventSourceReachable)
}

// slowSource answers as src does, but only after delay (or the context's
// end): a source that tries several endpoints in turn, each with its own
// timeout, as patroni.Source does with a frozen REST API first.
type slowSource struct {
	*fakeSource
	delay time.Duration
}

func (s slowSource) Discover(ctx context.Context) ([]Member, error) {
	select {
	case <-time.After(s.delay):
		return s.fakeSource.Discover(ctx)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// TestASourceMayTakeLongerThanAProbe: the source is asked with a deadline of
// its own, longer than a probe's, so that a source that needs a few seconds
// (one frozen REST API of several, each given a second) is still heard.
func TestASourceMayTakeLongerThanAProbe(t *testing.T) {
	d := newDiscovered(t, WithProbeTimeout(200*time.Millisecond))
	d.db.disc.d = slowSource{d.src, 1500 * time.Millisecond}
	d.src.set(nil, d.member("m0", true), d.member("m1", false), d.member("m2", false), d.member("m3", false))
	d.round()
	s := d.db.Status()
	require.NotNil(t, s.Discovery)
	assert.True(t, s.Discovery.Reachable, "the source was cut short: %v", s.Discovery.LastError)
	assert.Len(t, s.Nodes, 4, "m3 joined")
}

func TestNoLoadBalanceMembersServeNoReads(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	m2 := d.member("m2", false)
	m2.NoLoadBalance = true
	d.src.set(nil, d.member("m0", true), d.member("m1", false), m2)
	d.round()
	for range 4 {
		assert.Equal(t, "m1", served(t, d.db, ctx, "SELECT 1"))
	}
	assert.True(t, nodeStatus(t, d.db, "m2").NoLoadBalance)
}

func TestOpenDiscoveredRejectsBadInput(t *testing.T) {
	c := fakedriver.New("x")
	drv, err := fakedriver.Register(c)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		drv  string
		src  Discoverer
		opts []Option
		want error
	}{
		{"nil source", drv, nil, nil, ErrInvalidArgument},
		{"unknown driver", "nope", &fakeSource{}, nil, ErrInvalidArgument},
		{"names", drv, &fakeSource{members: []Member{{Name: "x", DSN: "x"}}}, []Option{WithNames("a")}, ErrInvalidOption},
		{"zero discovery interval", drv, &fakeSource{members: []Member{{Name: "x", DSN: "x"}}}, []Option{WithDiscoveryInterval(0)}, ErrInvalidOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := OpenDiscovered(tc.drv, tc.src, tc.opts...)
			assert.Nil(t, db)
			assert.ErrorIs(t, err, tc.want)
		})
	}
	for _, tc := range []struct {
		name string
		src  *fakeSource
	}{
		{"source down", &fakeSource{err: errors.New("refused")}},
		{"no member", &fakeSource{}},
		{"a member twice", &fakeSource{members: []Member{{Name: "x", DSN: "x"}, {Name: "x", DSN: "x"}}}},
		{"a member without a DSN", &fakeSource{members: []Member{{Name: "x"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := OpenDiscovered(drv, tc.src)
			assert.Nil(t, db)
			assert.Error(t, err)
		})
	}
}

// The loops run for real: members join and leave, and Close leaves no
// goroutine (TestMain checks).
func TestDiscoveryLoop(t *testing.T) {
	ctx := context.Background()
	src := &fakeSource{}
	var cs []*fakedriver.Connector
	for i, name := range []string{"l0", "l1", "l2"} {
		c := fakedriver.New(name)
		newFakePG(c, i > 0, 1)
		cs = append(cs, c)
	}
	drv, err := fakedriver.Register(cs...)
	require.NoError(t, err)
	src.set(nil, Member{Name: "l0", DSN: "l0", Primary: true}, Member{Name: "l1", DSN: "l1"})
	db, err := OpenDiscovered(drv, src, WithDiscoveryInterval(20*time.Millisecond), WithProbeInterval(20*time.Millisecond))
	require.NoError(t, err)
	defer db.Close()
	assert.Equal(t, "l1", served(t, db, ctx, "SELECT 1"))
	src.set(nil, Member{Name: "l0", DSN: "l0", Primary: true}, Member{Name: "l2", DSN: "l2"})
	testwait.Until(t, 10*time.Second, "l2 serving reads", func() bool { return served(t, db, ctx, "SELECT 1") == "l2" })
	testwait.Until(t, 10*time.Second, "l1 gone", func() bool { _, ok := db.Status().Node("l1"); return !ok })
}

// TestPrimaryNeverHandsOutAMemberThatLeft: the primary leaves the source
// (a pod that moved: a new DSN is a new member) while the member named
// leader is not promoted yet, so no primary is known. Primary() must not
// hand out the last primary's handle, which is closed once it is idle.
func TestPrimaryNeverHandsOutAMemberThatLeft(t *testing.T) {
	d := newDiscovered(t)
	require.Equal(t, "m0", d.db.Status().Primary)
	d.src.set(nil, d.member("m1", true), d.member("m2", false))
	d.round()
	require.Equal(t, "", d.db.Status().Primary)
	testwait.Until(t, 10*time.Second, "m0 to be closed once idle", func() bool {
		_, ok := d.db.Status().Node("m0")
		return !ok
	})
	_, err := d.db.Primary().ExecContext(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err, "Primary() handed out the handle of a member that left")
}

// TestAProbeOfAMemberThatLeftIsNotRecorded: a member leaves (here: moves,
// the same name with a new DSN) while its probe waits for the server. Its
// probe, cancelled as it leaves, must not count as a failure: no "node
// down" for a member that left healthy, under the name the new member now
// has.
func TestAProbeOfAMemberThatLeftIsNotRecorded(t *testing.T) {
	d := newDiscovered(t, WithFailureThreshold(1))
	entered := make(chan struct{}, 1)
	d.conn["m2"].SetHook(func(ctx context.Context, op fakedriver.Op, q string) error {
		if q == postgresProbe {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-ctx.Done() // until the member leaves
			return ctx.Err()
		}
		return nil
	})
	n := d.db.mem.Load().byName["m2"]
	done := make(chan struct{})
	go func() { d.db.probeAndApply(n); close(done) }()
	<-entered
	d.src.set(nil, d.member("m0", true), d.member("m1", false), Member{Name: "m2", DSN: "m3"})
	d.db.discover() // the old m2 leaves, its probe is cancelled
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the probe of the member that left did not end")
	}
	for _, e := range d.db.Status().Events {
		assert.NotEqual(t, EventNodeDown, e.Kind, "%s: %v", e.Node, e.Err)
	}
	s, ok := d.db.Status().Node("m2")
	require.True(t, ok)
	assert.Equal(t, StateUp, s.State, "the new m2")
}

// TestAMovedMemberIsListedOnce: a member moves (the same name, a new DSN)
// while a connection of its old node is in use, so the old node drains
// under the name the new member has. Status lists the name once, the
// member's: twice, a metrics scrape fails on duplicate series and the
// status page shows two rows of one name.
func TestAMovedMemberIsListedOnce(t *testing.T) {
	ctx := context.Background()
	d := newDiscovered(t)
	old := d.db.mem.Load().byName["m2"]
	c, err := old.db.Conn(ctx) // in use: the old node cannot close yet
	require.NoError(t, err)
	defer c.Close()
	d.src.set(nil, d.member("m0", true), d.member("m1", false), Member{Name: "m2", DSN: "m3"})
	d.round()
	d.db.mu.Lock()
	draining := len(d.db.hs.draining)
	d.db.mu.Unlock()
	require.Equal(t, 1, draining, "the old m2 drains")
	var listed []NodeStatus
	for _, n := range d.db.Status().Nodes {
		if n.Name == "m2" {
			listed = append(listed, n)
		}
	}
	require.Len(t, listed, 1)
	assert.False(t, listed[0].Draining, "the member is listed, not the node draining under its name")
}
