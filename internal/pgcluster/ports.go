package pgcluster

import "net"

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. Both
// backends bind it later (postgres -p, a published container port), so
// another process may take it meanwhile: each retries on a new port when
// binding fails (localStartAttempts, dockerCreateTries).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
