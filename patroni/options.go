package patroni

import (
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"time"
)

// Defaults of the options. Each With… function documents the one it
// overrides.
const (
	// DefaultRequestTimeout bounds one GET /cluster: connecting, TLS,
	// waiting for the answer and reading it. A frozen Patroni accepts the
	// connection and never answers, so Discover must give up on it fast and
	// ask the next REST URL.
	DefaultRequestTimeout = time.Second

	// MaxResponseBytes bounds the body of one GET /cluster answer (about 400
	// bytes a member); a larger one is an ErrBadResponse.
	MaxResponseBytes = 1 << 20
)

// Option configures a Source. Options are applied in order by
// NewWithOptions and validated together afterwards; an invalid value makes
// it return a *ConfigError, never panic.
type Option func(*config)

type config struct {
	client   *http.Client // nil: the default one, made in newClient
	tls      *tls.Config
	user     string // WithBasicAuth; "" when not given
	password string
	timeout  time.Duration

	errs []error // *ConfigError, collected while applying options
}

func defaultConfig() config { return config{timeout: DefaultRequestTimeout} }

// fail records that option was refused, and why.
func (c *config) fail(option, reason string) {
	c.errs = append(c.errs, &ConfigError{Field: option, Reason: reason})
}

// WithHTTPClient makes the Source ask the REST APIs through client, used as
// it is: its Transport (and so its TLS settings and proxy), its Timeout, its
// CheckRedirect. The request timeout (WithRequestTimeout) still bounds each
// request. It cannot be combined with WithTLSConfig: set the TLS
// configuration on client's transport instead. Default: a client of the
// Source's own that keeps connections alive between calls of Discover, uses
// no proxy (the REST API sits beside the database, which is reached without
// one), follows no redirect (a redirect is an ErrBadResponse) and takes its
// TLS configuration from WithTLSConfig. Must not be nil.
func WithHTTPClient(client *http.Client) Option {
	return func(c *config) {
		if client == nil {
			c.fail("WithHTTPClient", "must not be nil")
			return
		}
		c.client = client
	}
}

// WithTLSConfig sets the TLS configuration of the default HTTP client, for
// https:// REST URLs: the CA that signed Patroni's certificate (RootCAs,
// restapi.cafile), a client certificate when Patroni's restapi.verify_client
// asks for one (Certificates), ServerName. The Source keeps a copy. Default:
// Go's defaults (the system's roots). Must not be nil; cannot be combined
// with WithHTTPClient.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) {
		if cfg == nil {
			c.fail("WithTLSConfig", "must not be nil")
			return
		}
		c.tls = cfg.Clone()
	}
}

// WithBasicAuth makes every GET /cluster carry HTTP basic authentication.
// Patroni asks for it (restapi.authentication) only on the endpoints that
// change something, not on GET /cluster; a proxy in front of the REST API
// may ask for it on every request. Prefer https:// URLs with it: over
// http:// the password crosses the network in the clear. The password
// appears in no error and no String. Default: no authentication. The user
// must not be empty nor contain a colon.
func WithBasicAuth(user, password string) Option {
	return func(c *config) {
		switch {
		case user == "":
			c.fail("WithBasicAuth", "the user must not be empty")
			return
		case strings.Contains(user, ":"):
			c.fail("WithBasicAuth", "the user must not contain a colon")
			return
		}
		c.user, c.password = user, password
	}
}

// WithRequestTimeout bounds each GET /cluster: connecting, TLS, the answer
// and reading it. Discover asks the REST URLs one after the other, so with
// every REST API frozen it fails after about d times the number of URLs (or
// when its context ends, if sooner). Default DefaultRequestTimeout (1 s).
// Must be > 0.
func WithRequestTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail("WithRequestTimeout", "must be > 0, got "+d.String())
			return
		}
		c.timeout = d
	}
}

// validate checks the options against each other and returns every error
// found while applying and checking them.
func (c *config) validate() {
	if c.client != nil && c.tls != nil {
		c.fail("WithTLSConfig", "cannot be combined with WithHTTPClient: set TLSClientConfig on that client's transport")
	}
}

// newClient returns the default HTTP client: keep-alive, no proxy, no
// redirects, tlsConf (nil: Go's defaults).
func newClient(tlsConf *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tlsConf,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 1, // Discover asks one URL at a time
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
