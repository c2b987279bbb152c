package pgcluster

// The DCS of a PatroniCluster: one etcd member on 127.0.0.1, its data in the
// cluster's temp dir, run as the postgres user like everything else there.
// Patroni talks to it with the v3 API (its etcd3 section) through etcd's
// JSON gateway; so does the harness, to delete a removed member's key.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// etcdStartAttempts is how many times the etcd member is started on new
// ports when it could not bind the ones it was given.
const etcdStartAttempts = 5

// etcdServer is the one-member etcd of a PatroniCluster.
type etcdServer struct {
	d         *daemon
	clientURL string // "http://127.0.0.1:PORT"
	dir       string // data dir
	logPath   string
}

// findEtcd returns the etcd executable: bin when set, else DBROUTER_ETCD,
// else etcd on PATH.
func findEtcd(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("DBROUTER_ETCD")
	}
	if bin == "" {
		bin = "etcd"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoPatroni, err)
	}
	return p, nil
}

// startEtcd starts the etcd member on free ports, trying new ones when it
// could not bind, and returns once it reports itself healthy.
func (pc *PatroniCluster) startEtcd(ctx context.Context, bin string) error {
	began := time.Now()
	e := &etcdServer{dir: filepath.Join(pc.base, "etcd"), logPath: filepath.Join(pc.base, "etcd.log")}
	var err error
	for attempt := 1; attempt <= etcdStartAttempts; attempt++ {
		var clientPort, peerPort int
		if clientPort, err = freePort(); err != nil {
			return fmt.Errorf("pgcluster: etcd: %w", err)
		}
		if peerPort, err = freePort(); err != nil {
			return fmt.Errorf("pgcluster: etcd: %w", err)
		}
		e.clientURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
		var logOff int64
		if fi, serr := os.Stat(e.logPath); serr == nil {
			logOff = fi.Size()
		}
		e.d, err = spawnDaemon(pc.base, pc.env, pc.cred, e.logPath, bin,
			"--name", "etcd",
			"--data-dir", e.dir,
			"--listen-client-urls", e.clientURL,
			"--advertise-client-urls", e.clientURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "etcd="+peerURL,
			"--initial-cluster-state", "new",
			"--initial-cluster-token", "pgcluster",
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
			"--enable-v2=false",
			"--logger", "zap",
			"--log-outputs", "stderr",
		)
		if err != nil {
			return err
		}
		pc.mu.Lock()
		pc.etcd = e
		pc.mu.Unlock()
		if err = pc.waitEtcdHealthy(ctx, e); err == nil {
			pc.logf("etcd: up on %s in %v", e.clientURL, since(began))
			return nil
		}
		if !e.d.exited() || !bindFailed(readFrom(e.logPath, logOff)) {
			return err
		}
		pc.logf("etcd: could not bind port %d or %d, trying others", clientPort, peerPort)
		if rerr := os.RemoveAll(e.dir); rerr != nil {
			return fmt.Errorf("pgcluster: etcd: %w", rerr)
		}
	}
	return err
}

// waitEtcdHealthy polls GET /health until etcd answers {"health":"true"}, it
// exits, or ctx ends.
func (pc *PatroniCluster) waitEtcdHealthy(ctx context.Context, e *etcdServer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		var h struct {
			Health string `json:"health"`
		}
		err := pc.getJSON(ctx, e.clientURL+"/health", &h)
		if err == nil && h.Health == "true" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("health %q", h.Health)
		}
		last = err
		select {
		case <-e.d.done:
			return fmt.Errorf("pgcluster: etcd exited (%v)%s", e.d.err, tailOf(e.logPath))
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: etcd not healthy: %w (last error: %v)%s", ctx.Err(), last, tailOf(e.logPath))
		case <-time.After(patroniPollInterval):
		}
	}
}

// etcdKV calls the v3 JSON gateway's /v3/kv/OP for one key and decodes the answer.
func (pc *PatroniCluster) etcdKV(ctx context.Context, op, key string, resp any) error {
	pc.mu.Lock()
	e := pc.etcd
	pc.mu.Unlock()
	if e == nil {
		return errors.New("pgcluster: etcd not started")
	}
	body, err := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	if err != nil {
		return fmt.Errorf("pgcluster: etcd %s: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, patroniRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.clientURL+"/v3/kv/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("pgcluster: etcd %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := pc.http.Do(req)
	if err != nil {
		return fmt.Errorf("pgcluster: etcd %s %s: %w", op, key, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("pgcluster: etcd %s %s: %w", op, key, err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("pgcluster: etcd %s %s: %s: %s", op, key, res.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, resp); err != nil {
		return fmt.Errorf("pgcluster: etcd %s %s: %w", op, key, err)
	}
	return nil
}

// etcdDelete deletes key and returns how many keys were deleted (0 or 1).
func (pc *PatroniCluster) etcdDelete(ctx context.Context, key string) (int, error) {
	var r struct {
		Deleted string `json:"deleted"` // int64 as a JSON string; absent when 0
	}
	if err := pc.etcdKV(ctx, "deleterange", key, &r); err != nil {
		return 0, err
	}
	if r.Deleted == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(r.Deleted)
	if err != nil {
		return 0, fmt.Errorf("pgcluster: etcd deleterange %s: deleted = %q: %w", key, r.Deleted, err)
	}
	return n, nil
}

// etcdExists reports whether key exists.
func (pc *PatroniCluster) etcdExists(ctx context.Context, key string) (bool, error) {
	var r struct {
		Count string `json:"count"` // int64 as a JSON string; absent when 0
	}
	if err := pc.etcdKV(ctx, "range", key, &r); err != nil {
		return false, err
	}
	return r.Count != "" && r.Count != "0", nil
}
