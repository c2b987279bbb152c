// Package tcpproxy is a small in-process TCP proxy for network-fault tests.
//
// A test puts one Proxy in front of each PostgreSQL node and gives the code
// under test the proxy's address instead of the node's. It can then cut or
// slow the network between that code and one node, while the nodes keep
// replicating among themselves directly.
//
// # Starting
//
//	p, err := tcpproxy.Start("127.0.0.1:5432") // the node's real address
//	if err != nil { ... }
//	defer p.Close()
//	dsn := fmt.Sprintf("host=127.0.0.1 port=%d ...", p.Port())
//
// Start listens on 127.0.0.1 on a free port. Every accepted connection is
// forwarded to the upstream address, dialed when the client connects (so the
// upstream need not be up when Start is called). If that dial fails, the
// client's connection is reset, as a refused connection would look. A Proxy
// never listens on or dials any other address.
//
// A Proxy is safe for concurrent use: Cut, Restore and SetLatency may be
// called while traffic flows, and they take effect for open connections too.
//
// # Faults
//
// Cut(Reset) closes every open connection at once with a TCP reset (clients'
// reads and writes fail with "connection reset by peer" or io.EOF) and, until
// Restore, accepts new connections only to reset them at once.
//
// Cut(Blackhole) is a silent partition: open connections stay open but no
// byte, and no close, passes in either direction; new connections are
// accepted but not forwarded (the upstream is not dialed). Clients hang until
// their own deadlines or timeouts. Bytes sent after Cut returns never arrive
// while the cut lasts; a chunk already on its way when Cut is called may.
// The client's TCP connection still ends at the proxy, whose kernel goes on
// ACKing the client's bytes and answering its keepalives: a blackhole is seen
// only through application-level timeouts (context deadlines, probe
// timeouts), not by TCP keepalive or TCP_USER_TIMEOUT, and a client's writes
// succeed until the socket buffers fill up.
//
// Restore ends a cut. After a blackhole the partition heals, as a real one
// would: connections that were held resume, the bytes held back are delivered
// in order, and connections accepted during the blackhole are forwarded now
// (their upstream is dialed on Restore). A client that gave up and closed its
// connection meanwhile just finds it closed. To drop the held connections
// instead, call Cut(Reset) before Restore.
//
// SetLatency(d) delays every chunk of bytes flowing from the upstream to the
// client by d (client to upstream is not delayed). The delay is per chunk and
// chunks of one connection are delayed one after another, so a response that
// arrives in several reads takes a multiple of d: this models a slow link for
// request/response protocols, not a precise network emulator.
//
// # Lifetime
//
// Each accepted connection is served by two goroutines, one per direction,
// plus the accept goroutine of the Proxy. When one side closes its sending
// half, the proxy passes that on (TCP half-close) and keeps copying the other
// direction; a connection is gone, and no longer counted by Conns, once both
// directions have ended or either side failed. Close stops listening, closes
// every connection and waits for every goroutine, so none outlives it.
package tcpproxy
