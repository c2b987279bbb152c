package main

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dbrouter/dbrouter"
	"github.com/dbrouter/dbrouter/extra/dbrouterprom"
	"github.com/dbrouter/dbrouter/statuspage"
)

// observer is the service's statement hook: it tells each request which
// node served its reads (see servedby.go) and feeds the statement duration
// histogram of /metrics. Pass its observe to dbrouter.WithStatementHook
// when opening the DB, and the observer to newServer.
type observer struct {
	tags tagger
	hist *dbrouterprom.StatementHistogram
}

// newObserver returns an observer with an empty histogram.
func newObserver() (*observer, error) {
	h, err := dbrouterprom.NewStatementHistogram()
	if err != nil {
		return nil, err
	}
	return &observer{hist: h}, nil
}

// observe is the statement hook: quick, and it never blocks.
func (o *observer) observe(s dbrouter.Statement) {
	o.tags.observe(s)
	o.hist.Observe(s)
}

// sessionCookie carries a client's dbrouter session token between its
// requests: after a write, the client's reads go only to nodes that have
// it (a replica that replayed it, else the primary).
const sessionCookie = "bank_session"

// Limits of the API.
const (
	maxBody      = 64 << 10 // bytes of a request body
	maxOwnerLen  = 200      // characters of an owner's name
	defaultLimit = 100      // accounts in a list, unless ?limit= says otherwise
	maxLimit     = 1000
	callTimeout  = 10 * time.Second // a request's database work
)

// server serves the bank's API over one dbrouter.DB.
type server struct {
	db  *dbrouter.DB
	obs *observer
	log *slog.Logger
}

// newServer returns the service's handler: the bank's API, /healthz,
// /metrics and the status page at /dbrouter/. db must have been opened
// with dbrouter.WithStatementHook(obs.observe). Errors the database
// returned are logged to log (never with a DSN: dbrouter names nodes
// host:port/dbname).
func newServer(db *dbrouter.DB, obs *observer, log *slog.Logger) (http.Handler, error) {
	if db == nil || obs == nil || log == nil {
		return nil, errors.New("newServer: nil db, observer or logger")
	}
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		dbrouterprom.NewCollector(db),
		obs.hist,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("newServer: registering a metrics collector: %w", err)
		}
	}
	s := &server{db: db, obs: obs, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("POST /accounts", s.createAccount)
	mux.HandleFunc("GET /accounts", s.listAccounts)
	mux.HandleFunc("GET /accounts/{id}", s.getAccount)
	mux.HandleFunc("POST /transfers", s.createTransfer)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/dbrouter/", http.StripPrefix("/dbrouter", statuspage.Handler(db)))
	return mux, nil
}

// routes is what the index lists.
const routes = `POST /accounts        {"owner":"ann","balance":100}
GET  /accounts        ?after=ID&limit=N
GET  /accounts/{id}
POST /transfers       {"from":1,"to":2,"amount":10}
GET  /healthz
GET  /metrics
GET  /dbrouter/       the router's status page
`

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "dbrouter example bank\n\n"+routes)
}

// createAccount serves POST /accounts.
func (s *server) createAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Owner   string `json:"owner"`
		Balance int64  `json:"balance"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	owner := strings.TrimSpace(req.Owner)
	switch {
	case owner == "":
		s.fail(w, http.StatusBadRequest, "owner is required")
		return
	case utf8.RuneCountInString(owner) > maxOwnerLen:
		s.fail(w, http.StatusBadRequest, fmt.Sprintf("owner is longer than %d characters", maxOwnerLen))
		return
	case strings.ContainsFunc(owner, unicode.IsControl):
		s.fail(w, http.StatusBadRequest, "owner holds control characters")
		return
	case req.Balance < 0:
		s.fail(w, http.StatusBadRequest, "balance must not be negative")
		return
	case req.Balance > maxAmount:
		s.fail(w, http.StatusBadRequest, fmt.Sprintf("balance must be at most %d", maxAmount))
		return
	}
	ctx, sess, cancel := s.writeContext(r)
	defer cancel()
	a, err := createAccount(ctx, s.db, owner, req.Balance)
	s.setSession(ctx, w, sess)
	if err != nil {
		s.dbFail(w, r, err)
		return
	}
	s.reply(w, http.StatusCreated, a)
}

// getAccount serves GET /accounts/{id}.
func (s *server) getAccount(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		s.fail(w, http.StatusNotFound, "no such account") // a number, too large to be an id
		return
	case err != nil:
		s.fail(w, http.StatusBadRequest, "the account id must be a number")
		return
	}
	ctx, cancel := s.readContext(r)
	defer cancel()
	t := s.obs.tags.acquire()
	defer s.obs.tags.release(t)
	a, err := getAccount(ctx, s.db, t, id)
	switch {
	case errors.Is(err, errNoAccount):
		// The node that found none: a replica behind a write made moments
		// ago by another client, say.
		s.reply(w, http.StatusNotFound, map[string]string{"error": "no such account", "served_by": a.ServedBy})
	case err != nil:
		s.dbFail(w, r, err)
	default:
		s.reply(w, http.StatusOK, a)
	}
}

// listAccounts serves GET /accounts: accounts in id order, ?limit= of them
// (default 100, at most 1000) after ?after= (an id; default 0).
func (s *server) listAccounts(w http.ResponseWriter, r *http.Request) {
	after, limit := int64(0), defaultLimit
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.fail(w, http.StatusBadRequest, "after must be an account id")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			s.fail(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", maxLimit))
			return
		}
		limit = n
	}
	ctx, cancel := s.readContext(r)
	defer cancel()
	t := s.obs.tags.acquire()
	defer s.obs.tags.release(t)
	list, node, err := listAccounts(ctx, s.db, t, after, limit)
	if err != nil {
		s.dbFail(w, r, err)
		return
	}
	s.reply(w, http.StatusOK, struct {
		Accounts []Account `json:"accounts"`
		ServedBy string    `json:"served_by"`
	}{list, node})
}

// createTransfer serves POST /transfers.
func (s *server) createTransfer(w http.ResponseWriter, r *http.Request) {
	var req struct {
		From   *int64 `json:"from"`
		To     *int64 `json:"to"`
		Amount int64  `json:"amount"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	switch {
	case req.From == nil || req.To == nil:
		s.fail(w, http.StatusBadRequest, "from and to are required")
		return
	case *req.From == *req.To:
		s.fail(w, http.StatusBadRequest, "from and to must be different accounts")
		return
	case req.Amount <= 0:
		s.fail(w, http.StatusBadRequest, "amount must be positive")
		return
	case req.Amount > maxAmount:
		s.fail(w, http.StatusBadRequest, fmt.Sprintf("amount must be at most %d", maxAmount))
		return
	}
	ctx, sess, cancel := s.writeContext(r)
	defer cancel()
	t, err := transfer(ctx, s.db, *req.From, *req.To, req.Amount)
	s.setSession(ctx, w, sess)
	switch {
	case errors.Is(err, errNoAccount):
		s.fail(w, http.StatusNotFound, err.Error())
	case errors.Is(err, errInsufficientFunds), errors.Is(err, errBalanceOverflow):
		s.fail(w, http.StatusConflict, err.Error())
	case err != nil:
		s.dbFail(w, r, err)
	default:
		s.reply(w, http.StatusCreated, t)
	}
}

// healthz serves GET /healthz: 200 while the router knows a primary (the
// service can take writes), else 503.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	st := s.db.Status()
	if st.Primary == "" {
		s.reply(w, http.StatusServiceUnavailable, map[string]string{"status": "no primary"})
		return
	}
	s.reply(w, http.StatusOK, map[string]string{"status": "ok", "primary": st.Primary})
}

// readContext returns the context of a read: the request's, bounded, with
// the client's session when its cookie carries one (so that it reads its
// own writes); a client without one reads from the replicas.
func (s *server) readContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	if sess := clientSession(r); sess != nil {
		ctx = dbrouter.WithSession(ctx, sess)
	}
	return ctx, cancel
}

// writeContext returns the context of a write, with the client's session
// or a new one, and that session.
func (s *server) writeContext(r *http.Request) (context.Context, *dbrouter.Session, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	sess := clientSession(r)
	if sess == nil {
		sess = dbrouter.NewSession()
	}
	return dbrouter.WithSession(ctx, sess), sess, cancel
}

// clientSession resumes the session of the request's cookie; nil when it
// has none, or one that is not a token (a forged or garbled cookie is not
// an error: the client just reads like a new one).
func clientSession(r *http.Request) *dbrouter.Session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	sess, err := dbrouter.ResumeSession(c.Value)
	if err != nil {
		return nil
	}
	return sess
}

// setSession sets the session cookie after a write, failed ones included:
// a write whose outcome is unknown keeps the client's reads on the primary
// until the router learns where it ended. The token costs a round trip to
// the primary after a write.
func (s *server) setSession(ctx context.Context, w http.ResponseWriter, sess *dbrouter.Session) {
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    sess.TokenContext(ctx),
		Path:     "/",
		MaxAge:   3600,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}

// decode reads the request's JSON body into v: one object, no unknown
// field, at most maxBody bytes. On failure it replies 400 (413 for a body
// too large) and returns false.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("data after the JSON value")
		}
	}
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxBody))
		return false
	}
	s.fail(w, http.StatusBadRequest, "bad JSON: "+err.Error())
	return false
}

// dbFail replies to a request whose database work failed: 503, to be tried
// again, when no node could run it or its node failed (a failover); 500
// for anything else. The error is logged, never sent.
func (s *server) dbFail(w http.ResponseWriter, r *http.Request, err error) {
	if unavailable(err) {
		s.log.Warn("database unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
		s.fail(w, http.StatusServiceUnavailable, "the database is unavailable; try again")
		return
	}
	s.log.Error("database error", "method", r.Method, "path", r.URL.Path, "err", err)
	s.fail(w, http.StatusInternalServerError, "internal error")
}

// unavailable reports whether err says that no node could run a statement
// or that its node failed under it, rather than that the statement was
// wrong: the outcome of a write may be unknown, and trying again later
// (after a failover) may succeed.
func unavailable(err error) bool {
	if errors.Is(err, dbrouter.ErrNoPrimary) || errors.Is(err, dbrouter.ErrNoReplica) ||
		errors.Is(err, dbrouter.ErrPrimaryLost) || errors.Is(err, dbrouter.ErrSessionMoved) ||
		errors.Is(err, dbrouter.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "57P"), // shutdown, cannot connect now
			pe.Code == "25006":                // read-only transaction: a demoted primary
			return true
		}
	}
	var ce *pgconn.ConnectError
	// pgx's ErrConnClosed (a connection that failed under an earlier
	// statement) and its other errors "safe to retry": nothing was sent.
	return errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err)
}

// reply writes v as JSON with the given status.
func (s *server) reply(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encoding a reply", "err", err)
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// fail replies {"error": msg} with the given status.
func (s *server) fail(w http.ResponseWriter, status int, msg string) {
	s.reply(w, status, map[string]string{"error": msg})
}
