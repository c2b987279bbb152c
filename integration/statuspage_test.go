package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dbrouter/dbrouter/statuspage"
)

// TestIntegrationStatusPage serves the status page over the shared cluster,
// under a prefix: status.json names the real primary and replicas, and
// every WAL position is written as PostgreSQL itself writes a pg_lsn.
func TestIntegrationStatusPage(t *testing.T) {
	c := sharedCluster(t)
	ctx := testContext(t, integrationTimeout)
	db := openIntegrationRouter(t, c)
	mux := http.NewServeMux()
	mux.Handle("/dbrouter/", http.StripPrefix("/dbrouter", statuspage.Handler(db)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		return resp, body
	}
	resp, _ := get("/dbrouter/")
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))

	resp, body := get("/dbrouter/status.json")
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var s struct {
		Primary string
		Nodes   []struct {
			Name, Role, State string
			Readable          bool
			Timeline          uint32
			LSN               string
			LastError         string `json:"last_error"`
		}
	}
	require.NoError(t, json.Unmarshal(body, &s), "%s", body)
	assert.Equal(t, "node0", s.Primary)
	require.Len(t, s.Nodes, 3)
	for i, n := range s.Nodes {
		assert.Equal(t, c.Nodes()[i].Name(), n.Name)
		assert.Equal(t, "up", n.State, n.Name)
		assert.Equal(t, uint32(1), n.Timeline, n.Name)
		assert.Empty(t, n.LastError, n.Name)
		assert.Equal(t, i > 0, n.Readable, n.Name)
		want := "replica"
		if i == 0 {
			want = "primary"
		}
		assert.Equal(t, want, n.Role, n.Name)

		// PostgreSQL reads the position back and prints it the same way,
		// and the primary has been there.
		var printed string
		var behind bool
		require.NoError(t, db.Primary().QueryRowContext(ctx,
			"SELECT $1::pg_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) >= 0", n.LSN).Scan(&printed, &behind))
		assert.Equal(t, printed, n.LSN, n.Name)
		assert.NotEqual(t, "0/0", n.LSN, n.Name)
		assert.True(t, behind, "%s: %s is not past the primary's position", n.Name, n.LSN)
	}
}
