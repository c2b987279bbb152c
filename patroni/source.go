package patroni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/dbrouter/dbrouter"
)

// Source is a dbrouter.Discoverer that reads the members of a Patroni
// cluster from the GET /cluster endpoint of its REST APIs. Make one with New
// or NewWithOptions. It is safe for concurrent use by multiple goroutines,
// runs no goroutine of its own, and needs no Close (CloseIdleConnections
// drops the connections it keeps alive).
type Source struct {
	next atomic.Uint32 // index in urls of the REST URL to ask first: the last that answered

	urls    []string // GET /cluster of each REST URL, in the order given
	client  *http.Client
	timeout time.Duration
	secrets *secrets // behind a pointer: fmt prints a nested pointer as an address
}

// secrets are what a Source holds that must never be printed.
type secrets struct {
	dsn            dsnTemplate
	user, password string // basic authentication; user "" for none
}

// Compile-time check that a Source is a dbrouter.Discoverer.
var _ dbrouter.Discoverer = (*Source)(nil)

// New returns a Source for the Patroni cluster whose REST APIs are at
// restURLs ("http://10.0.0.1:8008", "https://pg1.internal:8008", …; each
// member's restapi.connect_address), with the default options. Each member
// it reports gets dsn with the member's host and port, so dsn names the
// user, password, database and parameters but no host and no port:
//
//	postgres://app:secret@/app?sslmode=require
//	user=app password=secret dbname=app sslmode=require
//
// New asks no REST API; Discover does. It returns a *ConfigError (errors.Is
// ErrInvalidConfig) for a dsn that does not parse or names a host, hostaddr
// or port, for no REST URL, and for a REST URL that is not an absolute
// http:// or https:// URL (or carries a user, a query, a fragment, or is
// given twice). Use NewWithOptions for TLS, basic authentication, another
// timeout or HTTP client.
func New(dsn string, restURLs ...string) (*Source, error) {
	return NewWithOptions(dsn, restURLs)
}

// NewWithOptions is New with options: WithHTTPClient, WithTLSConfig,
// WithBasicAuth, WithRequestTimeout. All its errors, options' included, are
// returned together (errors.Join), each a *ConfigError.
func NewWithOptions(dsn string, restURLs []string, opts ...Option) (*Source, error) {
	c := defaultConfig()
	for i, o := range opts {
		if o == nil {
			c.fail("Option", fmt.Sprintf("option %d is nil", i))
			continue
		}
		o(&c)
	}
	c.validate()
	errs := c.errs
	t, err := parseDSN(dsn)
	if err != nil {
		errs = append(errs, err)
	}
	urls, uerrs := clusterURLs(restURLs)
	errs = append(errs, uerrs...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	client := c.client
	if client == nil {
		client = newClient(c.tls)
	}
	return &Source{
		urls:    urls,
		client:  client,
		timeout: c.timeout,
		secrets: &secrets{dsn: t, user: c.user, password: c.password},
	}, nil
}

// clusterURLs checks the REST URLs and returns the GET /cluster URL of each.
func clusterURLs(restURLs []string) ([]string, []error) {
	if len(restURLs) == 0 {
		return nil, []error{&ConfigError{Field: "restURLs", Reason: "none given: want the REST API URL of at least one member"}}
	}
	var errs []error
	urls := make([]string, 0, len(restURLs))
	seen := make(map[string]int, len(restURLs))
	for i, raw := range restURLs {
		field := "restURLs[" + strconv.Itoa(i) + "]"
		bad := func(reason string) { errs = append(errs, &ConfigError{Field: field, Reason: reason}) }
		u, err := url.Parse(raw)
		if err != nil {
			// Not url.Parse's error: it quotes the URL, and a URL given
			// with a password would show it.
			bad("is not a valid URL")
			continue
		}
		switch {
		case u.User != nil:
			bad("carries a user: use WithBasicAuth")
		case u.Scheme != "http" && u.Scheme != "https":
			bad(fmt.Sprintf("%q is not an http:// or https:// URL", u.Redacted()))
		case u.Host == "" || u.Hostname() == "":
			bad(fmt.Sprintf("%q names no host", u.Redacted()))
		case u.RawQuery != "" || u.ForceQuery:
			bad(fmt.Sprintf("%q has a query", u.Redacted()))
		case u.Fragment != "":
			bad(fmt.Sprintf("%q has a fragment", u.Redacted()))
		default:
			cluster := strings.TrimSuffix(u.String(), "/") + "/cluster"
			if j, dup := seen[cluster]; dup {
				bad(fmt.Sprintf("%q is restURLs[%d] again", u.Redacted(), j))
				continue
			}
			seen[cluster] = i
			urls = append(urls, cluster)
		}
	}
	return urls, errs
}

// Discover returns the members of the cluster that serve queries, as GET
// /cluster of the first REST API to give a usable answer reports them (any
// member answers for the whole cluster). It asks the REST URLs one after the
// other, each within the request timeout (WithRequestTimeout, default 1 s),
// starting with the last one that answered; ctx bounds it all.
//
// Only members in state "running" or "streaming" are reported: not those
// stopped, stopping, starting, crashed, being created, or in archive
// recovery (a replica that does not stream falls behind). Each member's
// Name is its Patroni name and its DSN is the Source's DSN with the host and
// port it published (postgresql.connect_address). Primary is set on the
// member whose role is "leader" only: a standby cluster's "standby_leader"
// replicates from another cluster and takes no writes, so a standby
// cluster has no Primary. NoLoadBalance is set by the noloadbalance tag,
// read as Patroni reads it, with Python's bool(): true, "true", 1 and any
// other non-empty string (even "false", which Patroni's GET /replica check
// counts as set too).
//
// When no REST URL gives a usable answer, Discover returns an error that
// errors.Is ErrUnreachable, joined with one *URLError per URL asked (the
// context's error too when it ended first). Errors name URLs and members,
// never the DSN.
func (s *Source) Discover(ctx context.Context) ([]dbrouter.Member, error) {
	if s == nil || s.client == nil || s.secrets == nil {
		return nil, &ConfigError{Field: "Source", Reason: "not made by New or NewWithOptions"}
	}
	n := len(s.urls)
	first := int(s.next.Load()) % n
	var errs []error
	for i := range n {
		k := (first + i) % n
		ms, err := s.ask(ctx, s.urls[k])
		if err == nil {
			s.next.Store(uint32(k))
			return ms, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			// The next call starts where this one was cut short, so that a
			// frozen URL first, asked with too short a context, does not
			// keep the others from ever being reached.
			s.next.Store(uint32((k + 1) % n))
			if left := n - i - 1; left > 0 {
				errs = append(errs, fmt.Errorf("patroni: %d more REST URLs not asked: %w", left, context.Cause(ctx)))
			}
			break
		}
	}
	return nil, errors.Join(append([]error{ErrUnreachable}, errs...)...)
}

// ask GETs one cluster URL and returns the members it reports, or a
// *URLError.
func (s *Source) ask(ctx context.Context, clusterURL string) ([]dbrouter.Member, error) {
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	fail := func(err error) error {
		if ctx.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %v: %w", s.timeout, err)
		}
		return &URLError{URL: clusterURL, Err: err}
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, clusterURL, nil)
	if err != nil {
		return nil, fail(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dbrouter-patroni")
	if s.secrets.user != "" {
		req.SetBasicAuth(s.secrets.user, s.secrets.password)
	}
	res, err := s.client.Do(req)
	if err != nil {
		// The client's *url.Error repeats the URL; keep what it wraps.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fail(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, fail(fmt.Errorf("reading the answer: %w", err))
	}
	if res.StatusCode != http.StatusOK {
		return nil, fail(badAnswer(ErrBadResponse, "%s%s", res.Status, excerpt(body)))
	}
	if len(body) > MaxResponseBytes {
		return nil, fail(badAnswer(ErrBadResponse, "answer larger than %d bytes", MaxResponseBytes))
	}
	ms, err := parseCluster(body, s.secrets.dsn)
	if err != nil {
		return nil, fail(err)
	}
	return ms, nil
}

// excerpt returns ": " and the start of an error answer's body, on one
// line, or "" for an empty one.
func excerpt(body []byte) string {
	const max = 120
	s := strings.Join(strings.Fields(string(body)), " ")
	if s == "" {
		return ""
	}
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return ": " + strconv.Quote(s)
}

// CloseIdleConnections closes the connections to the REST APIs that the
// Source's HTTP client keeps alive between calls of Discover; the next call
// opens new ones. With WithHTTPClient it closes that client's idle
// connections.
func (s *Source) CloseIdleConnections() {
	if s != nil && s.client != nil {
		s.client.CloseIdleConnections()
	}
}

// String returns "patroni.Source(" and the REST URLs ")", never the DSN or
// a password, so that a Source printed with %v shows neither.
func (s *Source) String() string {
	if s == nil {
		return "patroni.Source(nil)"
	}
	rest := make([]string, len(s.urls))
	for i, u := range s.urls {
		rest[i] = strings.TrimSuffix(u, "/cluster")
	}
	return "patroni.Source(" + strings.Join(rest, ", ") + ")"
}

// GoString is String, for %#v.
func (s *Source) GoString() string { return s.String() }
