package tcpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// bufSize is the largest chunk one read copies.
const bufSize = 32 << 10

// link is one client connection and, once dialed, its upstream connection.
type link struct {
	client *net.TCPConn
	ctx    context.Context // done once the link is dropped or the proxy closes
	cancel context.CancelFunc

	// protected by Proxy.mu
	upstream *net.TCPConn // nil until dialed
	open     int          // directions still copying
	dropped  bool
}

// serve dials the upstream for l (after any blackhole ends) and copies both
// directions until they end. It runs in its own goroutine, counted in p.wg.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	if !p.waitOpen(l) {
		return
	}
	var d net.Dialer
	c, err := d.DialContext(l.ctx, "tcp", p.upstream)
	if err != nil {
		p.drop(l, true) // as a refused connection would look
		return
	}
	up := c.(*net.TCPConn)

	p.mu.Lock()
	if l.dropped { // cut with Reset or closed while dialing
		p.mu.Unlock()
		resetConn(up)
		return
	}
	l.upstream = up
	l.open = 2
	p.wg.Add(1)
	p.mu.Unlock()

	go func() {
		defer p.wg.Done()
		p.pipe(l, l.client, up, true)
	}()
	p.pipe(l, up, l.client, false)
}

// pipe copies src to dst until src ends, then half-closes dst. When delayed,
// every chunk, and the end of the stream, waits for the latency first. Bytes
// are held while the network is blackholed. An error on either side drops
// the whole link with a reset.
func (p *Proxy) pipe(l *link, dst, src *net.TCPConn, delayed bool) {
	buf := make([]byte, bufSize)
	for {
		n, rerr := src.Read(buf)
		if n > 0 || rerr != nil {
			if delayed && !p.delay(l) {
				return
			}
			if !p.waitOpen(l) {
				return
			}
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				p.drop(l, true)
				return
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				p.drop(l, true)
				return
			}
			_ = dst.CloseWrite() // pass the half-close on
			p.halfDone(l)
			return
		}
	}
}

// waitOpen blocks while the network is blackholed. It reports false once l
// is dropped, true when bytes may flow.
func (p *Proxy) waitOpen(l *link) bool {
	for {
		if l.ctx.Err() != nil {
			return false
		}
		s := p.state.Load()
		if !s.blackholed() {
			return true
		}
		select {
		case <-s.healed:
		case <-l.ctx.Done():
			return false
		}
	}
}

// delay sleeps for the current latency. It reports false if l is dropped
// meanwhile.
func (p *Proxy) delay(l *link) bool {
	d := time.Duration(p.latency.Load())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// halfDone records that one direction of l ended cleanly, and drops l when
// both have.
func (p *Proxy) halfDone(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l.open--
	if l.open == 0 {
		p.dropLocked(l, false)
	}
}

// drop closes both sides of l; see dropLocked.
func (p *Proxy) drop(l *link, reset bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropLocked(l, reset)
}

// dropLocked forgets l, stops its goroutines and closes both of its sockets,
// with a TCP reset when reset is set and an orderly close otherwise. Dropping
// a link twice does nothing.
func (p *Proxy) dropLocked(l *link, reset bool) {
	if l.dropped {
		return
	}
	l.dropped = true
	delete(p.links, l)
	l.cancel()
	closeConn(l.client, reset)
	if l.upstream != nil {
		closeConn(l.upstream, reset)
	}
}

// closeConn closes c, with a TCP reset when reset is set.
func closeConn(c *net.TCPConn, reset bool) {
	if reset {
		resetConn(c)
		return
	}
	_ = c.Close()
}
