package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from a port on 127.0.0.1 to one upstream
// address and can cut or delay them. It is safe for concurrent use. Create it
// with Start and stop it with Close.
type Proxy struct {
	// atomics first
	state   atomic.Pointer[netState] // replaced whole under mu; read lock-free per chunk
	latency atomic.Int64             // time.Duration added to each upstream-to-client chunk

	upstream string
	ln       *net.TCPListener
	ctx      context.Context // canceled by Close; parent of every link's context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the accept goroutine and every link goroutine

	mu     sync.Mutex // protects following fields
	links  map[*link]struct{}
	closed bool
}

// Start listens on 127.0.0.1 on a free port and forwards every accepted
// connection to upstream, a "host:port" address such as "127.0.0.1:5432".
// It returns an error if upstream is not a host:port address or if it cannot
// listen. The upstream is not dialed until a client connects.
func Start(upstream string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return nil, fmt.Errorf("tcpproxy: upstream %q: %w", upstream, err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		upstream: upstream,
		ln:       ln,
		ctx:      ctx,
		cancel:   cancel,
		links:    make(map[*link]struct{}),
	}
	p.state.Store(forwarding)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the address clients should dial, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the port the proxy listens on.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Upstream returns the address the proxy forwards to, as given to Start.
func (p *Proxy) Upstream() string { return p.upstream }

// SetLatency sets the delay added to every chunk of bytes flowing from the
// upstream to the client; 0 or less means none, the default. It applies to
// open connections from their next chunk on.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(max(d, 0))) }

// Conns returns the number of client connections currently open through the
// proxy, including those held by a blackhole. Connections reset by
// Cut(Reset) are not counted.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening, closes every client and upstream connection and
// waits until every goroutine of the proxy has returned. Close is idempotent:
// later calls return nil at once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cancel()
	for l := range p.links {
		p.dropLocked(l, false)
	}
	p.mu.Unlock()

	err := p.ln.Close()
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("tcpproxy: close: %w", err)
	}
	return nil
}

// acceptLoop accepts connections until the listener is closed.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off like net/http.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		p.admit(c)
	}
}

// admit registers an accepted connection and starts serving it, or resets it
// at once when the proxy is cut with Reset or closed.
func (p *Proxy) admit(c *net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.state.Load().resetting() {
		resetConn(c)
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	l := &link{client: c, ctx: ctx, cancel: cancel}
	p.links[l] = struct{}{}
	p.wg.Add(1)
	go p.serve(l)
}

// resetConn closes c so that its peer sees a TCP reset, not an orderly close.
func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
