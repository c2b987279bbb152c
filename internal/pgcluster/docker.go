package pgcluster

// The docker backend: every node is a container of one image on a network of
// its own, made with testcontainers-go.
//
// Each container runs a small sh script instead of the image's entrypoint, so
// the only things it needs from an image are sh and the PostgreSQL server
// binaries on PATH: the official postgres images and the image that
// .ci/docker-setup.sh builds from the host's binaries (dbrouter-pg:15) both
// work. On its first run the script makes the data dir (initdb on the
// primary, pg_basebackup from node0 on a replica); on every later run
// (Node.Start after Crash or Stop) it finds the data dir and only execs
// postgres, so a restarted node keeps its data and its role: a crashed
// primary comes back as a primary on its old timeline. The data dir lives in
// the container's own file system, so it survives a restart and goes away
// with the container.
//
// Clients reach a node only through 127.0.0.1: port 5432 of each container is
// published on 127.0.0.1 at a host port chosen when the container is created
// and kept for its life, so a node's DSN stays the same across Crash, Stop and
// Start (a router under test keeps the DSN it was given). Start still re-reads
// the published port after a restart and updates Node.port should it ever
// differ; callers that hold DSNs across a restart rely on it not changing.
// Nodes reach each other by network alias (their Name) on port 5432.
//
// pgcluster never pulls images: the image must already be on the engine.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	mobynet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// Settings of the docker backend.
const (
	dockerDefaultImage = "postgres:16"
	dockerImageEnv     = "DBROUTER_PG_IMAGE"
	// dockerLabel is put on every container and network of a cluster, with
	// the cluster's id as value: `docker ps -a --filter label=dbrouter.pgcluster`
	// lists what pgcluster started.
	dockerLabel     = "dbrouter.pgcluster"
	dockerNodeLabel = "dbrouter.pgcluster.node"
	// dockerDataDir is the data dir inside every container; dockerInitDone
	// exists once the data dir is complete.
	dockerDataDir  = "/tmp/pgdata"
	dockerInitDone = "/tmp/pgdata.done"

	dockerStopTimeout   = 10 * time.Second // Stop: SIGINT (fast shutdown), then SIGKILL after this
	dockerPingTimeout   = 3 * time.Second  // dockerAvailable
	dockerCreateTries   = 5                // a host port taken between choosing it and binding it: try another
	dockerLogTailLines  = 40               // container log lines in an error
	dockerStatePollTime = 250 * time.Millisecond
)

// dockerPort is PostgreSQL's port inside every container.
var dockerPort = mobynet.MustParsePort("5432/tcp")

// dockerLoopback is the only address clients use to reach a container.
var dockerLoopback = netip.MustParseAddr("127.0.0.1")

// dockerEnvDefaults are set in the process environment when unset, before
// testcontainers-go reads its configuration (it reads it once per process).
// Without the host override it reports the gateway of the default network as
// the host of mapped ports when it runs inside a container, which must never
// be used here; the reaper (Ryuk) would need an image pull, and Close removes
// everything itself.
var dockerEnvDefaults = [...]struct{ key, value string }{
	{"TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1"},
	{"TESTCONTAINERS_RYUK_DISABLED", "true"},
}

// dockerAvailable reports whether a Docker engine answers a ping (DOCKER_HOST,
// else the default socket) within a few seconds. It does not touch
// testcontainers-go, which caches a failed discovery for the whole process.
func dockerAvailable() bool {
	ctx, cancel := context.WithTimeout(context.Background(), dockerPingTimeout)
	defer cancel()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return false
	}
	defer cli.Close()
	_, err = cli.Ping(ctx, client.PingOptions{})
	return err == nil
}

// dockerSetEnv applies dockerEnvDefaults and checks the host override.
func dockerSetEnv() error {
	for _, kv := range dockerEnvDefaults {
		if _, ok := os.LookupEnv(kv.key); !ok {
			if err := os.Setenv(kv.key, kv.value); err != nil {
				return err
			}
		}
	}
	if h := os.Getenv("TESTCONTAINERS_HOST_OVERRIDE"); !dockerLoopbackHost(h) {
		return fmt.Errorf("pgcluster: docker: TESTCONTAINERS_HOST_OVERRIDE=%q: nodes are reached only through 127.0.0.1; unset it or set it to 127.0.0.1", h)
	}
	return nil
}

func dockerLoopbackHost(h string) bool { return h == "127.0.0.1" || h == "localhost" }

// dockerCluster implements clusterImpl for the docker backend.
type dockerCluster struct {
	c     *Cluster
	id    string // value of dockerLabel on every container and network
	image string

	mu      sync.Mutex // protects following fields
	cli     *testcontainers.DockerClient
	network *testcontainers.DockerNetwork
	nodes   []*dockerNode
	closed  bool
}

// dockerNode implements nodeImpl for the docker backend.
type dockerNode struct {
	dc     *dockerCluster
	n      *Node
	script string // the container's command (sh -c)

	mu       sync.Mutex // protects following fields
	ctr      testcontainers.Container
	paused   bool
	bySignal bool // paused with SIGSTOP, the engine's freezer having refused
}

var (
	_ clusterImpl = (*dockerCluster)(nil)
	_ nodeImpl    = (*dockerNode)(nil)
)

// startDocker starts a primary and opts.Replicas replicas as containers of
// opts.Image (else $DBROUTER_PG_IMAGE, else postgres:16). It sets c.impl
// first, so Start can clean up after a failure half-way.
func startDocker(ctx context.Context, c *Cluster, opts Options) error {
	began := time.Now()
	image := opts.Image
	if image == "" {
		image = os.Getenv(dockerImageEnv)
	}
	if image == "" {
		image = dockerDefaultImage
	}
	id := dockerClusterID()
	dc := &dockerCluster{c: c, id: id, image: image}
	c.impl = dc
	if err := dockerSetEnv(); err != nil {
		return err
	}

	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("pgcluster: docker: %w", err)
	}
	dc.mu.Lock()
	dc.cli = cli
	dc.mu.Unlock()

	// Never pull: no registry is reachable on our machines, and an attempt
	// would only hang until its timeouts.
	if _, err := cli.ImageInspect(ctx, image); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("pgcluster: docker image %q is not on the engine and pgcluster never pulls: "+
				"build dbrouter-pg:15 with .ci/docker-setup.sh and set %s=dbrouter-pg:15, or pull the image yourself", image, dockerImageEnv)
		}
		return fmt.Errorf("pgcluster: docker: inspect image %q: %w", image, err)
	}

	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{dockerLabel: id}))
	if err != nil {
		return fmt.Errorf("pgcluster: docker: create network: %w", err)
	}
	dc.mu.Lock()
	dc.network = nw
	dc.mu.Unlock()
	c.logf("pgcluster: docker: cluster %s: image %s, network %s", id, image, nw.Name)

	nodes := make([]*Node, 1+opts.Replicas)
	dns := make([]*dockerNode, len(nodes))
	for i := range nodes {
		n := &Node{c: c, name: fmt.Sprintf("node%d", i), host: dockerLoopback.String()}
		dn := &dockerNode{dc: dc, n: n}
		if i == 0 {
			dn.script = dockerNodeScript(n.name, "")
		} else {
			dn.script = dockerNodeScript(n.name, nodes[0].name)
		}
		n.impl = dn
		nodes[i], dns[i] = n, dn
	}
	c.nodes = nodes
	dc.mu.Lock()
	dc.nodes = dns
	dc.mu.Unlock()

	if err := dns[0].create(ctx); err != nil {
		return err
	}
	// Replicas copy the primary with pg_basebackup, in parallel.
	errs := make([]error, opts.Replicas)
	var wg sync.WaitGroup
	for i, dn := range dns[1:] {
		wg.Go(func() { errs[i] = dn.create(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.logf("pgcluster: docker: primary + %d replicas running in %v", opts.Replicas, time.Since(began).Round(time.Millisecond))
	return nil
}

// dockerClusterID returns a short random id for labels and container names.
func dockerClusterID() string {
	var b [4]byte
	rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return hex.EncodeToString(b[:])
}

// dockerNodeScript is the sh script a node's container runs. primary is the
// network alias to copy from for a replica, "" for the primary. Only sh and
// the server binaries on PATH are used, so any PostgreSQL image works.
func dockerNodeScript(name, primary string) string {
	var init string
	if primary == "" {
		init = `initdb -D "$D" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync
	printf 'host all all all trust\nhost replication all all trust\n' >>"$D/pg_hba.conf"`
	} else {
		// The primary accepts connections before this container is created;
		// the loop only rides out a slow start.
		init = fmt.Sprintf(`n=0
	until pg_basebackup -h %[1]s -p 5432 -U postgres -D "$D" -R -X stream -c fast --no-sync; do
		n=$((n + 1))
		if [ "$n" -ge 120 ]; then echo "pgcluster: pg_basebackup from %[1]s kept failing" >&2; exit 1; fi
		rm -rf "$D"
		sleep 1
	done`, primary)
	}
	return fmt.Sprintf(`set -e
D=%[1]s
if [ ! -e %[2]s ]; then
	rm -rf "$D"
	%[3]s
	: >%[2]s
fi
chmod 700 "$D"
exec postgres -D "$D" \
	-c listen_addresses='*' \
	-c port=5432 \
	-c unix_socket_directories=/tmp \
	-c cluster_name=%[4]s \
	-c wal_level=replica \
	-c max_wal_senders=10 \
	-c max_replication_slots=10 \
	-c hot_standby=on \
	-c hot_standby_feedback=on \
	-c wal_keep_size=256MB \
	-c wal_log_hints=on \
	-c wal_retrieve_retry_interval=500ms \
	-c fsync=off \
	-c shared_buffers=32MB
`, dockerDataDir, dockerInitDone, init, name)
}

// create creates and starts the node's container, publishing port 5432 on a
// free 127.0.0.1 port, and waits until the server accepts connections.
func (dn *dockerNode) create(ctx context.Context) error {
	dc := dn.dc
	began := time.Now()
	dc.mu.Lock()
	nw := dc.network
	dc.mu.Unlock()
	for try := 1; ; try++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("pgcluster: docker: %s: free port: %w", dn.n.name, err)
		}
		req := testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image:        dc.image,
				Name:         fmt.Sprintf("pgcluster-%s-%s", dc.id, dn.n.name),
				Entrypoint:   []string{"sh", "-c", dn.script},
				ExposedPorts: []string{dockerPort.String()},
				Labels:       map[string]string{dockerLabel: dc.id, dockerNodeLabel: dn.n.name},
				ConfigModifier: func(cfg *container.Config) {
					cfg.User = "postgres"
					cfg.Hostname = dn.n.name
					cfg.StopSignal = "SIGINT" // postgres: fast shutdown
				},
				HostConfigModifier: func(hc *container.HostConfig) {
					hc.PortBindings = mobynet.PortMap{
						dockerPort: {{HostIP: dockerLoopback, HostPort: strconv.Itoa(port)}},
					}
				},
			},
			Started: true,
			Logger:  tclog.NewNoopLogger(),
		}
		if err := tcnetwork.WithNetwork([]string{dn.n.name}, nw).Customize(&req); err != nil {
			return fmt.Errorf("pgcluster: docker: %s: %w", dn.n.name, err)
		}
		ctr, err := testcontainers.GenericContainer(ctx, req)
		if ctr != nil {
			dn.mu.Lock()
			dn.ctr = ctr
			dn.mu.Unlock()
		}
		if err != nil {
			if try < dockerCreateTries && dockerPortTaken(err) && ctr != nil {
				dc.c.logf("pgcluster: docker: %s: host port %d was taken, trying another", dn.n.name, port)
				if terr := ctr.Terminate(ctx, testcontainers.StopTimeout(0)); terr != nil {
					return fmt.Errorf("pgcluster: docker: %s: %w", dn.n.name, errors.Join(err, terr))
				}
				dn.mu.Lock()
				dn.ctr = nil
				dn.mu.Unlock()
				continue
			}
			return fmt.Errorf("pgcluster: docker: %s: %w%s", dn.n.name, err, dn.logTail())
		}
		break
	}
	if err := dn.readPort(ctx); err != nil {
		return dn.failed(err)
	}
	if err := dn.waitReady(ctx); err != nil {
		return err
	}
	dc.c.logf("pgcluster: docker: %s ready on %s in %v", dn.n.name, dn.n.Addr(), time.Since(began).Round(time.Millisecond))
	return nil
}

// dockerPortTaken reports whether a container failed to start because its
// host port was taken meanwhile.
func dockerPortTaken(err error) bool {
	s := err.Error()
	return strings.Contains(s, "port is already allocated") || strings.Contains(s, "address already in use")
}

// container returns the node's container (nil before it was created).
func (dn *dockerNode) container() testcontainers.Container {
	dn.mu.Lock()
	defer dn.mu.Unlock()
	return dn.ctr
}

// readPort reads where port 5432 is published, refuses anything but
// 127.0.0.1, and updates Node.port should the port have changed.
func (dn *dockerNode) readPort(ctx context.Context) error {
	ctr := dn.container()
	if ctr == nil {
		return fmt.Errorf("pgcluster: docker: %s: no container", dn.n.name)
	}
	ep, err := ctr.PortEndpoint(ctx, dockerPort.String(), "")
	if err != nil {
		return fmt.Errorf("pgcluster: docker: %s: mapped port: %w", dn.n.name, err)
	}
	host, p, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("pgcluster: docker: %s: mapped endpoint %q: %w", dn.n.name, ep, err)
	}
	if !dockerLoopbackHost(host) {
		return fmt.Errorf("pgcluster: docker: %s: mapped endpoint %s is not on 127.0.0.1; refusing to use it", dn.n.name, ep)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return fmt.Errorf("pgcluster: docker: %s: mapped endpoint %q: bad port", dn.n.name, ep)
	}
	if port != dn.n.port {
		if dn.n.port != 0 {
			dn.dc.c.logf("pgcluster: docker: %s: published port changed from %d to %d", dn.n.name, dn.n.port, port)
		}
		dn.n.port = port
	}
	return nil
}

// waitReady waits until the server answers a query (Node.WaitReady), and
// gives up early, with the container's last log lines, when the container
// exits.
func (dn *dockerNode) waitReady(ctx context.Context) error {
	ctr := dn.container()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var exited error
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(dockerStatePollTime)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := ctr.State(ctx)
			if err == nil && !st.Running {
				exited = fmt.Errorf("container %s (exit code %d)", st.Status, st.ExitCode)
				cancel()
				return
			}
		}
	}()
	err := dn.n.WaitReady(ctx)
	cancel()
	<-done
	if err != nil {
		if exited != nil {
			err = errors.Join(fmt.Errorf("pgcluster: docker: %s: %w", dn.n.name, exited), err)
		}
		return fmt.Errorf("%w%s", err, dn.logTail())
	}
	return nil
}

// failed adds to err the container's state, when it is not running, and its
// last log lines.
func (dn *dockerNode) failed(err error) error {
	if ctr := dn.container(); ctr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, serr := ctr.State(ctx)
		cancel()
		if serr == nil && !st.Running {
			err = errors.Join(fmt.Errorf("container %s (exit code %d)", st.Status, st.ExitCode), err)
		}
	}
	return fmt.Errorf("%w%s", err, dn.logTail())
}

// logTail returns the container's last log lines, for an error message.
func (dn *dockerNode) logTail() string {
	ctr := dn.container()
	if ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("\n(container log unavailable: %v)", err)
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(rc, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 2*dockerLogTailLines {
			lines = append(lines[:0], lines[len(lines)-dockerLogTailLines:]...)
		}
	}
	if len(lines) > dockerLogTailLines {
		lines = lines[len(lines)-dockerLogTailLines:]
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "\n--- last %d log lines of container %s ---", len(lines), ctr.GetContainerID()[:12])
	for _, l := range lines {
		b.WriteString("\n")
		b.WriteString(l)
	}
	return b.String()
}

// docker returns the engine client and the node's container.
func (dn *dockerNode) docker() (*testcontainers.DockerClient, testcontainers.Container, error) {
	dn.dc.mu.Lock()
	cli := dn.dc.cli
	dn.dc.mu.Unlock()
	ctr := dn.container()
	if cli == nil || ctr == nil {
		return nil, nil, errors.New("container not created")
	}
	return cli, ctr, nil
}

// crash kills the container (SIGKILL to postgres, PID 1) and waits until the
// engine reports it stopped. A frozen node is thawed first; a node that is
// not running is left as it is.
func (dn *dockerNode) crash(ctx context.Context) error {
	cli, ctr, err := dn.docker()
	if err != nil {
		return err
	}
	if err := dn.thaw(ctx); err != nil {
		return err
	}
	if st, err := ctr.State(ctx); err != nil {
		return err
	} else if !st.Running {
		return nil
	}
	if _, err := cli.ContainerKill(ctx, ctr.GetContainerID(), client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		return err
	}
	return dn.waitStopped(ctx, ctr)
}

// kill9 is crash: the container's SIGKILL goes to postgres, its PID 1.
func (dn *dockerNode) kill9(ctx context.Context) error { return dn.crash(ctx) }

// waitStopped polls until the container is not running.
func (dn *dockerNode) waitStopped(ctx context.Context, ctr testcontainers.Container) error {
	for {
		st, err := ctr.State(ctx)
		if err != nil {
			return err
		}
		if !st.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop stops the container: SIGINT (fast shutdown), SIGKILL after
// dockerStopTimeout. A frozen node is thawed first.
func (dn *dockerNode) stop(ctx context.Context) error {
	_, ctr, err := dn.docker()
	if err != nil {
		return err
	}
	if err := dn.thaw(ctx); err != nil {
		return err
	}
	timeout := dockerStopTimeout
	return ctr.Stop(ctx, &timeout)
}

// start starts the stopped container again; its script finds the data dir
// and execs postgres. It returns once the server accepts connections. A
// frozen node is thawed; a running one only waited for.
func (dn *dockerNode) start(ctx context.Context) error {
	_, ctr, err := dn.docker()
	if err != nil {
		return err
	}
	if err := dn.thaw(ctx); err != nil {
		return err
	}
	began := time.Now()
	if err := ctr.Start(ctx); err != nil {
		return dn.failed(err)
	}
	if err := dn.readPort(ctx); err != nil {
		return dn.failed(err)
	}
	if err := dn.waitReady(ctx); err != nil {
		return err
	}
	dn.dc.c.logf("pgcluster: docker: %s restarted on %s in %v", dn.n.name, dn.n.Addr(), time.Since(began).Round(time.Millisecond))
	return nil
}

// freeze pauses the container (cgroup freezer): the engine still accepts TCP
// connections on the published port, and nothing answers.
func (dn *dockerNode) freeze(ctx context.Context) error { return dn.setPaused(ctx, true) }

// thaw unpauses the container; a no-op when it is not paused.
func (dn *dockerNode) thaw(ctx context.Context) error { return dn.setPaused(ctx, false) }

// setPaused pauses or unpauses the container; a no-op when it already is.
func (dn *dockerNode) setPaused(ctx context.Context, paused bool) error {
	cli, ctr, err := dn.docker()
	if err != nil {
		return err
	}
	dn.mu.Lock()
	defer dn.mu.Unlock()
	if dn.paused == paused {
		return nil
	}
	switch {
	case !paused && dn.bySignal:
		err = dn.signalAll(ctx, ctr, "CONT")
	case !paused:
		_, err = cli.ContainerUnpause(ctx, ctr.GetContainerID(), client.ContainerUnpauseOptions{})
	default:
		// The cgroup freezer sometimes refuses ("unable to freeze") while a
		// process is between states: try again, then stop every process
		// with SIGSTOP instead, which hangs the server just as well.
		for attempt := range 5 {
			if _, err = cli.ContainerPause(ctx, ctr.GetContainerID(), client.ContainerPauseOptions{}); err == nil {
				break
			}
			dn.dc.c.logf("pgcluster: docker: %s: pause attempt %d: %v", dn.n.name, attempt+1, err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
			}
		}
		if err != nil {
			if err = dn.signalAll(ctx, ctr, "STOP"); err == nil {
				dn.bySignal = true
			}
		}
	}
	if err != nil {
		return err
	}
	dn.paused = paused
	if !paused {
		dn.bySignal = false
	}
	return nil
}

// signalAll sends sig to every process of the container: kill -1 reaches
// all but the caller and PID 1 (the postmaster), so PID 1 is signalled too.
func (dn *dockerNode) signalAll(ctx context.Context, ctr testcontainers.Container, sig string) error {
	code, _, err := ctr.Exec(ctx, []string{"sh", "-c", "kill -" + sig + " -1; kill -" + sig + " 1"})
	if err == nil && code != 0 {
		err = fmt.Errorf("kill -%s exited with %d", sig, code)
	}
	if err != nil {
		return fmt.Errorf("signal %s to the container's processes: %w", sig, err)
	}
	return nil
}

// conninfo is how another container reaches this node: its network alias.
func (dn *dockerNode) conninfo() string {
	return fmt.Sprintf("host=%s port=5432 user=postgres", dn.n.name)
}

// close thaws and removes every container, then anything else still carrying
// the cluster's label (a container created but not handed back), then the
// network. It is idempotent and works on a half-started cluster.
func (dc *dockerCluster) close(ctx context.Context) error {
	dc.mu.Lock()
	if dc.closed {
		dc.mu.Unlock()
		return nil
	}
	dc.closed = true
	cli, nw, nodes := dc.cli, dc.network, append([]*dockerNode(nil), dc.nodes...)
	dc.mu.Unlock()
	if cli == nil {
		return nil // never reached the engine: nothing was created
	}
	defer cli.Close()

	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, dn := range nodes {
		ctr := dn.container()
		if ctr == nil {
			continue
		}
		wg.Go(func() {
			var err error
			if terr := dn.thaw(ctx); terr != nil {
				err = fmt.Errorf("unpause: %w", terr)
			}
			if terr := ctr.Terminate(ctx, testcontainers.StopTimeout(0)); terr != nil && !errdefs.IsNotFound(terr) {
				err = errors.Join(err, terr)
			}
			if err != nil {
				errs[i] = fmt.Errorf("pgcluster: docker: remove %s: %w", dn.n.name, err)
			}
		})
	}
	wg.Wait()

	label := make(client.Filters).Add("label", dockerLabel+"="+dc.id)
	left, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: label})
	if err != nil {
		errs = append(errs, fmt.Errorf("pgcluster: docker: list containers: %w", err))
	} else {
		for _, s := range left.Items {
			if _, err := cli.ContainerRemove(ctx, s.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("pgcluster: docker: remove container %.12s: %w", s.ID, err))
			}
		}
	}
	if nw != nil {
		if err := nw.Remove(ctx); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("pgcluster: docker: remove network %s: %w", nw.Name, err))
		}
	}
	err = errors.Join(errs...)
	if err == nil {
		dc.c.logf("pgcluster: docker: cluster %s removed", dc.id)
	}
	return err
}
