// Package statuspage serves a live view of a dbrouter.DB for operators: one
// self-contained HTML page (no external assets; its CSS and JavaScript are
// inline) that redraws itself about once a second from the JSON snapshot
// served beside it.
//
// # Mounting
//
// Handler serves two paths, relative to where it is mounted: the page at "/"
// and the snapshot at "/status.json". The page fetches "status.json" by a
// relative URL, so it works under any prefix; strip the prefix with
// http.StripPrefix and mount the handler on a pattern that ends in a slash:
//
//	mux.Handle("/dbrouter/", http.StripPrefix("/dbrouter", statuspage.Handler(db)))
//
// The page is then at /dbrouter/ (a request for /dbrouter is redirected
// there) and the snapshot at /dbrouter/status.json. Any other path is 404;
// any method but GET and HEAD is 405.
//
// # The page
//
// One row per node: role, state, whether it serves reads, timeline, WAL
// position, lag in bytes and in time, the statements routed to it (reads,
// writes, errors, misroutes, retries), the latency of its last probe and the
// error of its last failed probe. The primary's row is marked; rows of down,
// fenced and excluded nodes (replicas serving no reads: down, lagging, on a
// stale timeline) look different. Below them, the recent events, newest
// first. Every row is a tr with the classes primary, up, down, fenced,
// unknown and excluded as they apply, and data-node, data-role, data-state
// and data-readable attributes; the element with id "updated" tells when
// the page last redrew, in its text and in its data-at (an RFC 3339 time)
// and data-refreshes (a count) attributes. Data reaches the page only as
// text, never as markup, and the page is served with a Content-Security-
// Policy that allows its own inline script and style and nothing else.
//
// # The snapshot
//
// status.json is dbrouter.DB.Status as JSON, with these keys and no others:
//
//	primary       string  the current primary's name; "" when none is known
//	nodes[]               in configuration order, the configured primary first
//	  name        string  as in dbrouter.NodeStatus: host:port/dbname, or as set with dbrouter.WithNames
//	  role        string  "primary", "replica" or "unknown", as the probes report
//	  state       string  "up", "down", "fenced" or "unknown"
//	  readable    bool    serves reads now
//	  timeline    number  0 when unknown
//	  lsn         string  WAL position as PostgreSQL prints it ("0/16B3748")
//	  lag_bytes   number  WAL bytes behind the primary
//	  lag_seconds number  how long ago the primary was where this node is
//	  reads, writes, errors, misroutes, retries
//	              number  statements routed to the node, as in dbrouter.NodeStatus
//	  latency_ms  number  of the last probe
//	  last_error  string  of the last failed probe; "" when none
//	events[]              the last 100 events, oldest first
//	  at          string  RFC 3339 in UTC, with milliseconds
//	  kind        string  dbrouter.EventKind.Code(): "node_down", "primary_changed", …
//	  node        string  the node it is about
//	  detail      string  see the dbrouter.EventKind constants
//
// It is served as application/json with Cache-Control: no-store.
//
// Neither the page nor the snapshot holds a DSN or a password: nodes appear
// by the names dbrouter gives them, which never hold one. They do show the
// topology of your databases and the errors their drivers returned, so mount
// the handler where only operators reach it.
package statuspage

import (
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/dbrouter/dbrouter"
)

// Handler returns a handler serving db's status page at "/" and its JSON
// snapshot at "/status.json"; see the package doc for mounting it under a
// prefix. Each request takes a fresh db.Status. It is safe for concurrent
// use.
func Handler(db *dbrouter.DB) http.Handler {
	if db == nil {
		return &handler{}
	}
	return &handler{status: db.Status}
}

// handler serves the page and the snapshot of one DB.
type handler struct {
	status func() dbrouter.Status // nil: Handler was given no DB
}

// ServeHTTP serves the page, the snapshot, 404 for any other path and 405
// for any method but GET and HEAD.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var serve func(http.ResponseWriter, *http.Request)
	switch strings.TrimPrefix(r.URL.Path, "/") {
	case "":
		serve = h.servePage
	case "status.json":
		serve = h.serveJSON
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if h.status == nil {
		http.Error(w, "statuspage: Handler was given a nil *dbrouter.DB", http.StatusInternalServerError)
		return
	}
	serve(w, r)
}

// servePage serves the HTML page, first redirecting a request whose URL
// does not end in a slash (the prefix alone, as http.StripPrefix("/dbrouter")
// passes on a request for /dbrouter) to the same URL with one: the page's
// relative URLs resolve against it.
func (h *handler) servePage(w http.ResponseWriter, r *http.Request) {
	if to, ok := slashRedirect(r); ok {
		w.Header().Set("Location", to)
		w.WriteHeader(http.StatusTemporaryRedirect) // as http.ServeMux redirects to a subtree's slash
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Content-Security-Policy", page.csp)
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(page.body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(page.body)
}

// slashRedirect returns where to redirect a request for the page whose
// original URL (r.RequestURI, which http.StripPrefix leaves alone) does not
// end in a slash: a relative URL naming its last segment with a slash, so
// that it stays under whatever prefix the request came through.
func slashRedirect(r *http.Request) (string, bool) {
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return "", false // not a server's request (a handler called directly): serve
	}
	p := u.EscapedPath()
	if p == "" || strings.HasSuffix(p, "/") {
		return "", false
	}
	to := "./" + path.Base(p) + "/"
	if u.RawQuery != "" {
		to += "?" + u.RawQuery
	}
	return to, true
}

// serveJSON serves the snapshot.
func (h *handler) serveJSON(w http.ResponseWriter, r *http.Request) {
	body, err := json.Marshal(newReport(h.status()))
	if err != nil {
		http.Error(w, "statuspage: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}
