package statuspage

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter"
)

// chromium returns the path of a headless-capable Chromium, or fails the
// test (CI installs one: .ci/chromium-setup.sh); under -short the test is
// skipped. DBROUTER_CHROMIUM names one explicitly.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DBROUTER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("browser test: skipped under -short")
	}
	t.Fatal("no Chromium on PATH: apt-get install chromium (or set DBROUTER_CHROMIUM), or run with -short")
	return ""
}

// TestPageInBrowser runs the page in headless Chromium, under a prefix,
// against a snapshot that changes on every fetch, and reads the DOM it
// drew: the script ran under the page's Content-Security-Policy, refreshed
// by itself, marked the rows and put every text in as text.
func TestPageInBrowser(t *testing.T) {
	browser := chromium(t)
	const evil = `<img src=x onerror="document.title='pwned'">`
	var fetches atomic.Int64
	h := &handler{status: func() dbrouter.Status {
		n := fetches.Add(1)
		return dbrouter.Status{
			Primary: "db2",
			Nodes: []dbrouter.NodeStatus{
				{Name: "db1", Role: dbrouter.RolePrimary, State: dbrouter.StateFenced, Timeline: 1},
				{Name: "db2", Role: dbrouter.RolePrimary, State: dbrouter.StateUp, Timeline: 2, LSN: 0x2_016B3748, Writes: uint64(n)},
				{Name: "db3", Role: dbrouter.RoleReplica, State: dbrouter.StateUp, Readable: true, Timeline: 2, Reads: uint64(10 * n)},
				{Name: "db4", Role: dbrouter.RoleReplica, State: dbrouter.StateUp, Timeline: 2, LagBytes: 64 << 20, LagTime: 3 * time.Second, LagExcluded: true},
				{Name: "db5", Role: dbrouter.RoleReplica, State: dbrouter.StateDown, LastError: errors.New(evil)},
			},
			Events: []dbrouter.Event{
				{Time: time.Unix(1_700_000_000, 0), Kind: dbrouter.EventNodeDown, Node: "db5"},
				{Time: time.Unix(1_700_000_001, 0), Kind: dbrouter.EventFenced, Node: "db1", Detail: evil},
			},
		}
	}}
	mux := http.NewServeMux()
	mux.Handle("/ops/dbrouter/", http.StripPrefix("/ops/dbrouter", h))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Virtual time runs the page's one-second timers without waiting for
	// them, and stops once the budget is spent (fetches in flight count as
	// busy), so this takes no wall-clock seconds of the page's own.
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=4500", "--dump-dom",
		srv.URL+"/ops/dbrouter/")
	out, err := cmd.Output()
	require.NoError(t, err, "chromium: %s", exitStderr(err))
	dom := string(out)
	if p := os.Getenv("DBROUTER_SCREENSHOT"); p != "" {
		// For a person to look at: the same page, as a PNG.
		shot := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--no-first-run", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=2500", "--window-size=1500,700",
			"--screenshot="+p, srv.URL+"/ops/dbrouter/")
		if out, err := shot.CombinedOutput(); err != nil {
			t.Logf("screenshot: %v: %s", err, out)
		}
	}

	refreshes := regexp.MustCompile(`id="updated"[^>]*data-refreshes="(\d+)"|data-refreshes="(\d+)"[^>]*id="updated"`).FindStringSubmatch(dom)
	require.NotNil(t, refreshes, "no #updated with data-refreshes in:\n%s", dom)
	n, err := strconv.Atoi(refreshes[1] + refreshes[2])
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, 3, "the page refreshed by itself")
	assert.Contains(t, dom, `data-at="`, "#updated says when")
	assert.GreaterOrEqual(t, fetches.Load(), int64(n), "every refresh fetched status.json")

	row := func(name string) string {
		m := regexp.MustCompile(`<tr [^>]*data-node="` + name + `"[^>]*>`).FindString(dom)
		require.NotEmpty(t, m, "no row for %s in:\n%s", name, dom)
		return m
	}
	classes := func(tr string) []string {
		m := regexp.MustCompile(`class="([^"]*)"`).FindStringSubmatch(tr)
		if m == nil {
			return nil
		}
		return strings.Fields(m[1])
	}
	assert.ElementsMatch(t, []string{"fenced", "excluded"}, classes(row("db1")))
	assert.ElementsMatch(t, []string{"up", "primary"}, classes(row("db2")))
	assert.ElementsMatch(t, []string{"up"}, classes(row("db3")))
	assert.ElementsMatch(t, []string{"up", "excluded"}, classes(row("db4")))
	assert.ElementsMatch(t, []string{"down", "excluded"}, classes(row("db5")))
	assert.Contains(t, row("db2"), `data-role="primary"`)
	assert.Contains(t, row("db5"), `data-state="down"`)
	assert.Contains(t, dom, "2/16B3748")
	assert.Contains(t, dom, "64.0 MiB")

	// The newest values are on the page, the newest event first.
	assert.Regexp(t, `data-node="db3"[\s\S]*?<td class="num reads">\d*[1-9]0</td>`, dom)
	fenced := strings.Index(dom, `data-kind="fenced"`)
	down := strings.Index(dom, `data-kind="node_down"`)
	assert.True(t, fenced >= 0 && down > fenced, "events newest first")

	// Data went in as text: escaped in the DOM, never an element.
	assert.NotContains(t, dom, "<img")
	assert.Contains(t, dom, "&lt;img src=x")
	assert.Contains(t, dom, "<title>dbrouter status</title>", "no handler of the data ran")
}

// exitStderr returns what a failed command wrote to its standard error.
func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
