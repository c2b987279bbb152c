package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(
			// pgx's asyncClose, after a cancelled query on a frozen node,
			// gives up by its own deadline, whatever its caller does.
			goleak.IgnoreAnyFunction("github.com/jackc/pgx/v5/pgconn.(*PgConn).asyncClose.func1"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestScenarios runs the demo as `go run ./examples/failover -scenario S`
// does, for each scenario, and reads its summary: writes resumed on the
// new primary, the old primary came back and was fenced, and nothing
// reached it since; no read failed and no acknowledged write was lost.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster per scenario: skipped under -short")
	}
	for _, sc := range []string{"crash", "hang", "switchover"} {
		t.Run(sc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			var out strings.Builder // written by run's printer only, under its lock; read once run returned
			err := run(ctx, []string{"-scenario", sc, "-duration", "12s"}, &out)
			require.NoError(t, err, "output:\n%s", out.String())
			text := out.String()
			sum := parseSummary(t, text)
			t.Logf("FAILOVER demo %s: %s", sc, strings.Join(summaryLine(text), " "))
			defer func() {
				if t.Failed() {
					t.Logf("output:\n%s", text)
				}
			}()

			assert.Equal(t, sc, sum["scenario"])
			assert.Equal(t, "true", sum["writes_resumed"], "writes resumed on the new primary")
			assert.Equal(t, "true", sum["old_primary_fenced"], "the old primary came back and was fenced")
			assert.Equal(t, "0", sum["fenced_writes"], "no write routed to the fenced node")
			assert.Equal(t, "0", sum["fenced_reads"], "no read routed to the fenced node")
			assert.Equal(t, "0", sum["fenced_rows_sent_after_fence"], "the fenced node holds no row sent after its fence")
			assert.Equal(t, "0", sum["acked_writes_lost"], "no acknowledged write lost (quorum commit)")
			assert.Equal(t, "0", sum["reads_failed"], "reads go on from the replicas")
			assert.NotEqual(t, sum["old_primary"], sum["new_primary"])
			for _, k := range []string{"promotion_to_fresh_write_ms", "promotion_to_load_write_ms"} {
				ms, err := strconv.Atoi(sum[k])
				if assert.NoError(t, err, k) {
					assert.True(t, ms >= 0 && ms < 10_000, "%s=%d: writes resume within 10 s of the promotion", k, ms)
				}
			}
			n, err := strconv.Atoi(sum["writes_ok"])
			require.NoError(t, err)
			assert.Positive(t, n)

			// The live view: a line a second, the fence on it.
			lines := regexp.MustCompile(`(?m)^\s+\d+s\s+\d+\s+\d+\s+\d+\s+node\d|^\s+\d+s\s+\d+\s+\d+\s+\d+\s+none`).FindAllString(text, -1)
			assert.GreaterOrEqual(t, len(lines), 11, "one line a second")
			assert.Contains(t, text, "FENCED")
			assert.Contains(t, text, "!! router: fenced "+sum["old_primary"])
		})
	}
}

// parseSummary returns the SUMMARY key=value lines of the output.
func parseSummary(t *testing.T, text string) map[string]string {
	t.Helper()
	sum := map[string]string{}
	for _, kv := range summaryLine(text) {
		k, v, ok := strings.Cut(kv, "=")
		require.True(t, ok, "SUMMARY %q", kv)
		sum[k] = v
	}
	require.NotEmpty(t, sum, "no SUMMARY lines in:\n%s", text)
	return sum
}

// summaryLine returns the key=value of each SUMMARY line, in order.
func summaryLine(text string) []string {
	var kvs []string
	for _, m := range regexp.MustCompile(`(?m)^SUMMARY (\S+=\S*)$`).FindAllStringSubmatch(text, -1) {
		kvs = append(kvs, m[1])
	}
	return kvs
}

// TestFlags: bad flags are errors before anything starts.
func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "meteor"}, {"-duration", "1s"}, {"-readers", "0"}, {"-writers", "100"}, {"extra"}, {"-nope"},
	} {
		var out strings.Builder
		_, err := parseFlags(args, &out)
		assert.Error(t, err, "%q", args)
	}
	var out strings.Builder
	_, err := parseFlags([]string{"-h"}, &out)
	assert.True(t, errors.Is(err, flag.ErrHelp))
	assert.Contains(t, out.String(), "-scenario")
	cfg, err := parseFlags(nil, &out)
	require.NoError(t, err)
	assert.Equal(t, config{scenario: "crash", duration: 24 * time.Second, readers: 4, writers: 2}, cfg)
}
