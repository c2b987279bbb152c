package tcpproxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dbrouter/dbrouter/internal/tcpproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	ioTimeout   = 2 * time.Second        // generous deadline for reads that must succeed
	hangTimeout = 200 * time.Millisecond // deadline for reads that must hang
	prompt      = time.Second            // how soon a cut or a close must be seen
)

// echoServer echoes every byte back and counts what it receives.
type echoServer struct {
	ln       net.Listener
	received atomic.Int64 // bytes received over all connections
	accepted atomic.Int64 // connections accepted

	wg    sync.WaitGroup
	mu    sync.Mutex // protects following fields
	conns map[net.Conn]struct{}
}

// startEcho starts an echo server on 127.0.0.1:0, stopped when the test ends.
// On EOF from a client it closes that connection.
func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.echo(c)
	}
}

func (s *echoServer) echo(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		s.received.Add(int64(n))
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// startProxy starts a proxy in front of upstream, closed when the test ends.
func startProxy(t *testing.T, upstream string) *tcpproxy.Proxy {
	t.Helper()
	p, err := tcpproxy.Start(upstream)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	return p
}

// dial connects to p, closing the connection when the test ends.
func dial(t *testing.T, p *tcpproxy.Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends msg and reads the echo back.
func roundTrip(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	return expectRead(c, msg, ioTimeout)
}

// expectRead reads len(want) bytes within timeout and compares them.
func expectRead(c net.Conn, want string, timeout time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != want {
		return errors.New("got " + string(got) + ", want " + want)
	}
	return nil
}

// readErr reads one chunk with a deadline of timeout and returns the error.
func readErr(c net.Conn, timeout time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.Read(make([]byte, 16))
	return err
}

// expectFailure dials p and expects the dial or the first read to fail
// promptly, with no timeout: the proxy resets new connections.
func expectFailure(t *testing.T, p *tcpproxy.Proxy) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	if err != nil {
		return // reset before the dial returned: as a refused connection looks
	}
	err = readErr(c, prompt)
	_ = c.Close()
	require.Error(t, err)
	assert.False(t, isTimeout(err), "want a reset or EOF, got %v", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitConns waits until p has n open connections.
func waitConns(t *testing.T, p *tcpproxy.Proxy, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return p.Conns() == n }, ioTimeout, time.Millisecond,
		"Conns() = %d, want %d", p.Conns(), n)
}

func TestStart(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	host, port, err := net.SplitHostPort(p.Addr())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)
	assert.NotZero(t, p.Port())
	assert.Equal(t, port, itoa(p.Port()))
	assert.Equal(t, echo.addr(), p.Upstream())
	assert.Zero(t, p.Conns())
}

func itoa(n int) string { return (&net.TCPAddr{Port: n}).String()[1:] }

func TestStartBadUpstream(t *testing.T) {
	for _, upstream := range []string{"", "127.0.0.1", "no-port"} {
		t.Run(upstream, func(t *testing.T) {
			p, err := tcpproxy.Start(upstream)
			assert.Error(t, err)
			assert.Nil(t, p)
		})
	}
}

func TestForwardsBothWays(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	c := dial(t, p)
	for _, msg := range []string{"hello", "world", "x"} {
		require.NoError(t, roundTrip(c, msg))
	}

	t.Run("large", func(t *testing.T) {
		data := make([]byte, 4<<20)
		_, _ = rand.Read(data)
		c := dial(t, p)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(data)
			werr <- err
		}()
		got := make([]byte, len(data))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err)
		require.NoError(t, <-werr)
		assert.True(t, bytes.Equal(data, got), "echoed bytes differ")
	})
}

func TestHalfClose(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	c := dial(t, p)
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
	_, err := io.WriteString(c, "last words")
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	got, err := io.ReadAll(c) // the echo server closes on EOF: the proxy passes both FINs on
	require.NoError(t, err)
	assert.Equal(t, "last words", string(got))
	waitConns(t, p, 0)
}

func TestConns(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	var conns []*net.TCPConn
	for i := range 3 {
		c := dial(t, p)
		require.NoError(t, roundTrip(c, "hi"))
		conns = append(conns, c)
		assert.Equal(t, i+1, p.Conns())
	}
	require.NoError(t, conns[0].Close())
	waitConns(t, p, 2)
	require.NoError(t, conns[1].Close())
	require.NoError(t, conns[2].Close())
	waitConns(t, p, 0)
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	upstream := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	p := startProxy(t, upstream)
	start := time.Now()
	expectFailure(t, p)
	assert.Less(t, time.Since(start), prompt)
	waitConns(t, p, 0)
}

func TestCutReset(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	c := dial(t, p)
	require.NoError(t, roundTrip(c, "before"))
	idle := dial(t, p) // never used: a connection idle in a pool
	waitConns(t, p, 2)

	start := time.Now()
	p.Cut(tcpproxy.Reset)
	assert.Zero(t, p.Conns(), "Cut(Reset) drops every connection before it returns")
	for _, c := range []net.Conn{c, idle} {
		err := readErr(c, prompt)
		require.Error(t, err)
		assert.False(t, isTimeout(err), "want a reset or EOF, got %v", err)
	}
	assert.Less(t, time.Since(start), prompt)

	// New connections are accepted and reset at once.
	for range 3 {
		expectFailure(t, p)
	}
	assert.Zero(t, p.Conns())

	p.Cut(tcpproxy.Reset) // again: nothing changes
	p.Restore()
	c2 := dial(t, p)
	require.NoError(t, roundTrip(c2, "after"))
	assert.Equal(t, 1, p.Conns())
}

func TestCutBlackhole(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	held := dial(t, p)
	require.NoError(t, roundTrip(held, "before"))
	received, accepted := echo.received.Load(), echo.accepted.Load()

	p.Cut(tcpproxy.Blackhole)
	p.Cut(tcpproxy.Blackhole) // again: nothing changes

	// Open connections stay open, but nothing flows.
	_, err := io.WriteString(held, "during")
	require.NoError(t, err)
	err = readErr(held, hangTimeout)
	assert.True(t, isTimeout(err), "want a timeout, got %v", err)

	// New connections are accepted but not forwarded.
	late := dial(t, p)
	_, err = io.WriteString(late, "late")
	require.NoError(t, err)
	err = readErr(late, hangTimeout)
	assert.True(t, isTimeout(err), "want a timeout, got %v", err)
	waitConns(t, p, 2)

	assert.Equal(t, received, echo.received.Load(), "bytes reached the upstream through a blackhole")
	assert.Equal(t, accepted, echo.accepted.Load(), "the upstream was dialed during a blackhole")

	// The partition heals: new connections work, held ones resume.
	p.Restore()
	fresh := dial(t, p)
	require.NoError(t, roundTrip(fresh, "after"))
	require.NoError(t, expectRead(held, "during", ioTimeout))
	require.NoError(t, expectRead(late, "late", ioTimeout))
	require.NoError(t, roundTrip(held, "again"))
	require.NoError(t, roundTrip(late, "again"))
	assert.Equal(t, 3, p.Conns())
}

func TestCutBlackholeThenReset(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	held := dial(t, p)
	require.NoError(t, roundTrip(held, "before"))
	p.Cut(tcpproxy.Blackhole)
	_, err := io.WriteString(held, "during")
	require.NoError(t, err)
	late := dial(t, p)
	waitConns(t, p, 2)
	received := echo.received.Load()

	p.Cut(tcpproxy.Reset)
	assert.Zero(t, p.Conns())
	for _, c := range []net.Conn{held, late} {
		err := readErr(c, prompt)
		require.Error(t, err)
		assert.False(t, isTimeout(err), "want a reset or EOF, got %v", err)
	}

	p.Restore()
	fresh := dial(t, p)
	require.NoError(t, roundTrip(fresh, "after"))
	assert.Equal(t, received+int64(len("after")), echo.received.Load(),
		"bytes held by the blackhole were delivered after Cut(Reset)")
}

func TestSetLatency(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())
	c := dial(t, p)
	require.NoError(t, roundTrip(c, "warm up"))

	const latency = 100 * time.Millisecond
	p.SetLatency(latency) // applies to the open connection too
	start := time.Now()
	require.NoError(t, roundTrip(c, "slow"))
	assert.GreaterOrEqual(t, time.Since(start), latency)

	c2 := dial(t, p)
	start = time.Now()
	require.NoError(t, roundTrip(c2, "slow too"))
	assert.GreaterOrEqual(t, time.Since(start), latency)

	p.SetLatency(0)
	require.NoError(t, roundTrip(c, "fast"))
	p.SetLatency(-time.Second) // same as 0
	require.NoError(t, roundTrip(c, "fast"))
}

func TestClose(t *testing.T) {
	echo := startEcho(t)
	p, err := tcpproxy.Start(echo.addr())
	require.NoError(t, err)
	addr := p.Addr()

	plain := dial(t, p)
	require.NoError(t, roundTrip(plain, "hi"))

	// A chunk waiting out a long latency.
	slow := dial(t, p)
	require.NoError(t, roundTrip(slow, "hi"))
	p.SetLatency(time.Hour)
	received := echo.received.Load()
	_, err = io.WriteString(slow, "slow")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return echo.received.Load() > received }, ioTimeout, time.Millisecond)

	// Connections held by a blackhole.
	p.Cut(tcpproxy.Blackhole)
	held := dial(t, p)
	waitConns(t, p, 3)

	start := time.Now()
	require.NoError(t, p.Close())
	assert.Less(t, time.Since(start), prompt)
	assert.Zero(t, p.Conns())
	for _, c := range []net.Conn{plain, slow, held} {
		err := readErr(c, prompt)
		require.Error(t, err)
		assert.False(t, isTimeout(err), "want EOF, got %v", err)
	}

	assert.NoError(t, p.Close(), "Close is idempotent")
	p.Restore() // harmless after Close
	if c, err := net.DialTimeout("tcp", addr, ioTimeout); err == nil {
		err = readErr(c, prompt)
		_ = c.Close()
		assert.Error(t, err, "a closed proxy forwarded a new connection")
	}
}

// TestConcurrent runs clients while the network is cut, restored and slowed,
// for the race detector.
func TestConcurrent(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.addr())

	stop := make(chan struct{})
	var toggler sync.WaitGroup
	toggler.Add(1)
	go func() {
		defer toggler.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 5 {
			case 0:
				p.Cut(tcpproxy.Reset)
			case 1:
				p.Cut(tcpproxy.Blackhole)
			case 2:
				p.SetLatency(time.Millisecond)
			case 3:
				p.SetLatency(0)
			default:
				p.Restore()
			}
			_ = p.Conns()
		}
	}()

	var clients sync.WaitGroup
	for range 8 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for range 20 {
				c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
				if err != nil {
					continue
				}
				_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond))
				_, _ = io.WriteString(c, "ping")
				_, _ = io.ReadFull(c, make([]byte, 4))
				_ = c.Close()
			}
		}()
	}
	clients.Wait()
	close(stop)
	toggler.Wait()

	p.Restore()
	p.SetLatency(0)
	c := dial(t, p)
	require.NoError(t, roundTrip(c, "still works"))
}

func TestModeString(t *testing.T) {
	for _, tc := range []struct {
		mode tcpproxy.Mode
		want string
	}{
		{tcpproxy.Reset, "reset"},
		{tcpproxy.Blackhole, "blackhole"},
		{tcpproxy.Mode(7), "Mode(7)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.mode.String())
		})
	}
}
