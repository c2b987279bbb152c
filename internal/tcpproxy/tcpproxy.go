// Package tcpproxy is an in-process TCP proxy for network-cut tests: a test
// puts one in front of a PostgreSQL node and gives the code under test the
// proxy's address, then cuts the network between that code and the node
// while the nodes keep replicating among themselves directly.
//
//	p, err := tcpproxy.Start("127.0.0.1:5432") // the node's real address
//	defer p.Close()
//	dsn := fmt.Sprintf("host=127.0.0.1 port=%d ...", p.Port())
//	p.Cut()     // every connection reset; new ones reset at once
//	p.Restore() // connections are forwarded again
//
// A Proxy listens on 127.0.0.1 only, on a free port, and dials only its
// upstream, when a client connects (the upstream need not be up at Start).
// It is safe for concurrent use; Close stops it and waits for every
// goroutine it started.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Proxy forwards every connection to one upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu     sync.Mutex // protects following fields
	cut    bool
	closed bool
	conns  map[net.Conn]struct{} // both ends of every forwarded connection
}

// Start listens on a free 127.0.0.1 port and forwards to upstream.
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's address, 127.0.0.1:PORT.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the proxy's port on 127.0.0.1.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Cut resets every open connection (clients see "connection reset by peer"
// or EOF) and, until Restore, resets new ones as soon as they are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		reset(c)
	}
}

// Restore ends a cut: new connections are forwarded again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards client c to the upstream until either side ends.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	if !p.track(c) {
		return
	}
	defer p.untrack(c)
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		reset(c) // as a refused connection looks
		return
	}
	if !p.track(u) {
		u.Close()
		return
	}
	defer p.untrack(u)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if errors.Is(err, net.ErrClosed) || err != nil {
			reset(dst)
		} else if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite() // pass a half-close on
		}
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	c.Close()
	u.Close()
	<-done
}

// track registers c, or resets it when the proxy is cut or closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		reset(c)
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// reset closes c with a TCP reset rather than an orderly close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
