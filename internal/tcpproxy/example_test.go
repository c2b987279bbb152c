package tcpproxy_test

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dbrouter/dbrouter/internal/tcpproxy"
)

func Example() {
	// An upstream that greets every connection and closes it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello")
			_ = c.Close()
		}
	}()
	defer func() { _ = ln.Close(); <-done }()

	p, err := tcpproxy.Start(ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	greet := func() string {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			return "fails" // reset while connecting
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		b, err := io.ReadAll(c)
		switch {
		case isTimeout(err):
			return "hangs"
		case err != nil:
			return "fails"
		}
		return string(b)
	}

	fmt.Println(greet())
	p.Cut(tcpproxy.Reset)
	fmt.Println(greet())
	p.Cut(tcpproxy.Blackhole)
	fmt.Println(greet())
	p.Restore()
	fmt.Println(greet())
	// Output:
	// hello
	// fails
	// hangs
	// hello
}
