package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// meta is what the report says about where and how it was made.
type meta struct {
	date                 time.Time
	args                 []string
	goVersion, osArch    string
	cores, gomaxprocs    int
	cpuModel             string
	loadStart, loadEnd   string
	modules              map[string]string // module path -> version
	dbrouterRev          string
	pgVersion            string
	elapsed              time.Duration
	quick                bool
	runs                 int
	scenarios            []int
	peers                []string
	callTimeout, paceDur time.Duration
}

func collectMeta(cfg config) meta {
	p := paramsFor(cfg.quick)
	m := meta{
		date: time.Now(), args: os.Args[1:], goVersion: runtime.Version(), osArch: runtime.GOOS + "/" + runtime.GOARCH,
		cores: runtime.NumCPU(), gomaxprocs: runtime.GOMAXPROCS(0), cpuModel: cpuModel(), loadStart: loadAvg(),
		modules: map[string]string{}, quick: cfg.quick, runs: cfg.runs, scenarios: cfg.scenarios, peers: cfg.peers,
		callTimeout: p.callTimeout, paceDur: p.pace,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			v := d.Version
			if d.Replace != nil {
				if d.Replace.Version != "" {
					v = d.Replace.Version
				} else {
					v = "local " + d.Replace.Path
				}
			}
			m.modules[d.Path] = v
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.dbrouterRev = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.dbrouterRev += " (uncommitted changes)"
		}
	}
	return m
}

func (m *meta) finish() { m.loadEnd = loadAvg() }

// version names a module's version as built: "v2.2.1", or "workspace
// (commit abc1234)" for dbrouter itself.
func (m *meta) version(path string) string {
	v, ok := m.modules[path]
	if !ok || v == "" || v == "(devel)" {
		v = "workspace"
		if path == "github.com/dbrouter/dbrouter" && m.dbrouterRev != "" {
			v += " at " + m.dbrouterRev
		}
	}
	return v
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadAvg is the 1-minute load average ("1.52"), or "" when unknown.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
