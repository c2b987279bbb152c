package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/internal/testwait"
)

// updateScreenshot makes TestStatusPageInBrowser write the screenshot it
// takes to docs/ (it always takes one, and checks it):
//
//	go test ./examples/service -run TestStatusPageInBrowser -args -update-screenshot
var updateScreenshot = flag.Bool("update-screenshot", false, "write docs/statuspage-failover.png")

// screenshotPath is where the screenshot is committed, from this package.
var screenshotPath = filepath.Join("..", "..", "docs", "statuspage-failover.png")

// Screenshot size.
const shotWidth, shotHeight = 1200, 700

// chromium returns the path of Debian's Chromium, or another on PATH
// (DBROUTER_CHROMIUM names one explicitly). Without one the test fails,
// as CI installs it (.ci/chromium-setup.sh); under -short it is skipped
// (it needs a cluster too). No browser is ever downloaded.
func chromium(t *testing.T) string {
	t.Helper()
	skipShort(t)
	if p := os.Getenv("DBROUTER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("no Chromium: apt-get install chromium (or set DBROUTER_CHROMIUM), or run with -short")
	return ""
}

// row is one row of the status page's nodes table, as the DOM has it.
type row struct {
	Node     string `json:"node"`
	Role     string `json:"role"`
	State    string `json:"state"`
	Readable string `json:"readable"`
	Class    string `json:"class"`
}

func (r row) hasClass(c string) bool { return slices.Contains(strings.Fields(r.Class), c) }

// pageState is what the test reads from the page.
type pageState struct {
	Rows      []row  `json:"rows"`
	Refreshes string `json:"refreshes"`
	Summary   string `json:"summary"`
}

const readPage = `({
	rows: Array.from(document.querySelectorAll("#nodes tbody tr")).map((tr) => ({
		node: tr.dataset.node || "", role: tr.dataset.role || "", state: tr.dataset.state || "",
		readable: tr.dataset.readable || "", class: tr.className,
	})),
	refreshes: document.getElementById("updated").dataset.refreshes || "",
	summary: document.getElementById("primary").textContent,
})`

// TestStatusPageInBrowser loads the status page of a running service in
// headless Chromium, fails the primary over under a light load (crash,
// promote the most advanced replica, re-point the other, restart the old
// primary) and reads the DOM as the page redraws itself: the new primary's
// row is marked primary, the old primary's is fenced, and the page
// refreshed by itself all along. It takes a screenshot at the end.
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromium(t)
	c := ownCluster(t)
	s := startService(t, c)
	ctx := testContext(t, 4*time.Minute)
	n0, n1, n2 := c.Primary(), c.Replicas()[0], c.Replicas()[1]

	// A light load, so that the counters on the page move.
	user := s.client(t, true)
	stranger := s.client(t, false)
	a := user.createAccount(ctx, "ann", 1000)
	b := user.createAccount(ctx, "bob", 1000)
	lctx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	load.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; lctx.Err() == nil; i++ {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			stranger.do(lctx, "GET", fmt.Sprintf("/accounts/%d", a.ID), nil)
			if i%4 == 0 {
				user.do(lctx, "POST", "/transfers", map[string]int64{"from": a.ID, "to": b.ID, "amount": 1})
			}
		}
	})
	defer func() { stopLoad(); load.Wait() }()

	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(shotWidth, shotHeight),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	require.NoError(t, chromedp.Do(bctx,
		chromedp.EmulateViewport(shotWidth, shotHeight),
		chromedp.Navigate(s.url+"/dbrouter/"),
		chromedp.WaitVisible(chromedp.CSS(`#nodes tbody tr[data-node="node2"]`)),
	), "loading the status page")

	read := func() pageState {
		t.Helper()
		st, err := chromedp.Run(bctx, chromedp.Evaluate[pageState](readPage))
		require.NoError(t, err, "reading the page")
		return st
	}
	byNode := func(st pageState, name string) row {
		for _, r := range st.Rows {
			if r.Node == name {
				return r
			}
		}
		return row{}
	}
	before := read()
	require.Len(t, before.Rows, 3, "%+v", before)
	assert.True(t, byNode(before, "node0").hasClass("primary"), "%+v", before.Rows)
	assert.Equal(t, "primary", byNode(before, "node0").Role)
	assert.Contains(t, before.Summary, "Primary: node0")
	t.Logf("before: %+v", before)

	// The failover, as an operator would run it.
	waitCaughtUp(t, ctx, c)
	require.NoError(t, n0.Crash(ctx))
	testwait.Until(t, time.Minute, "the page saying no primary is known", func() bool {
		return strings.Contains(read().Summary, "No primary known")
	})
	best, other := mostAdvanced(t, ctx, n1, n2)
	require.NoError(t, best.Promote(ctx))
	require.NoError(t, other.Repoint(ctx, best))
	require.NoError(t, other.WaitStreaming(ctx))
	require.NoError(t, n0.Start(ctx)) // back as a primary on its old timeline

	var after pageState
	testwait.Until(t, time.Minute, "the page showing "+best.Name()+" primary and node0 fenced, "+other.Name()+" serving reads", func() bool {
		after = read()
		p, f, o := byNode(after, best.Name()), byNode(after, "node0"), byNode(after, other.Name())
		return p.Role == "primary" && p.hasClass("primary") && p.State == "up" &&
			f.State == "fenced" && f.hasClass("fenced") && !f.hasClass("primary") &&
			o.Readable == "true"
	})
	t.Logf("after: %+v", after)
	assert.Contains(t, after.Summary, "Primary: "+best.Name())
	assert.Equal(t, "primary", byNode(after, "node0").Role, "the fenced node says it is a primary")
	assert.True(t, byNode(after, "node0").hasClass("excluded"))

	// It kept refreshing by itself: a few more redraws from here on.
	var n, m int
	fmt.Sscan(before.Refreshes, &n)
	fmt.Sscan(after.Refreshes, &m)
	assert.Greater(t, m, n, "the page refreshed by itself during the failover")
	testwait.Until(t, 30*time.Second, "3 more refreshes", func() bool {
		var k int
		fmt.Sscan(read().Refreshes, &k)
		return k >= m+3
	})
	// Let the events table fill in before the screenshot: the fence is on it.
	testwait.Until(t, 30*time.Second, "the fence among the events", func() bool {
		ok, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector('#events tr[data-kind="fenced"]') !== null`))
		return err == nil && ok
	})

	// A row with a long last error stays a few lines tall: its column
	// keeps a readable width (the table scrolls sideways instead).
	heights, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]float64](
		`Object.fromEntries(Array.from(document.querySelectorAll("#nodes tbody tr")).map((tr) => [tr.dataset.node, tr.getBoundingClientRect().height]))`))
	require.NoError(t, err)
	t.Logf("row heights in px: %v", heights)
	for node, h := range heights {
		assert.Less(t, h, 6*heights[other.Name()], "%s's row is %.0f px tall", node, h)
	}

	shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(shot))
	require.NoError(t, err, "the screenshot is a PNG")
	assert.Equal(t, shotWidth, img.Bounds().Dx())
	assert.Equal(t, shotHeight, img.Bounds().Dy())
	path := filepath.Join(t.TempDir(), "statuspage-failover.png")
	if *updateScreenshot {
		path = screenshotPath
	}
	require.NoError(t, os.WriteFile(path, shot, 0o644))
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	require.NoError(t, chromedp.Cancel(bctx), "closing the browser")
}
