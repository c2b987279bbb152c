package patroni

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// restAPI is a fake Patroni REST API: it answers GET /cluster with body
// (status 200) and counts the requests.
type restAPI struct {
	*httptest.Server
	requests atomic.Int32
}

// newRESTAPI starts a fake REST API answering GET /cluster with body.
func newRESTAPI(t testing.TB, body []byte) *restAPI {
	t.Helper()
	return newRESTAPIFunc(t, clusterHandler(body))
}

// newRESTAPIFunc starts a fake REST API served by h; each setup changes
// its server before it starts.
func newRESTAPIFunc(t testing.TB, h http.HandlerFunc, setup ...func(*httptest.Server)) *restAPI {
	t.Helper()
	api := &restAPI{}
	api.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.requests.Add(1)
		h(w, r)
	}))
	for _, f := range setup {
		f(api.Server)
	}
	api.Start()
	t.Cleanup(api.Close)
	return api
}

// clusterHandler answers GET /cluster with body.
func clusterHandler(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cluster" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

// frozenAPI returns the URL of a REST API that is frozen as a SIGSTOPped
// Patroni is: the kernel accepts connections into the listen backlog, and
// nothing ever reads or answers them.
func frozenAPI(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return "http://" + l.Addr().String()
}

// refusingAPI returns the URL of a REST API that is down: nothing listens.
func refusingAPI(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return "http://" + addr
}

// newSource makes a Source and drops its idle connections when the test ends.
func newSource(t testing.TB, urls []string, opts ...Option) *Source {
	t.Helper()
	s, err := NewWithOptions(testDSN, urls, opts...)
	require.NoError(t, err)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDiscover(t *testing.T) {
	ctx := testCtx(t)
	for _, version := range []string{"4.0.7", "3.0.2"} {
		t.Run(version, func(t *testing.T) {
			body := sample(t, version, "tags")
			api := newRESTAPI(t, body)
			s := newSource(t, []string{api.URL})
			ms, err := s.Discover(ctx)
			require.NoError(t, err)
			want := map[string]string{"4.0.7": "m0* m1- m2", "3.0.2": "m0- m1 m2*"}[version]
			assert.Equal(t, want, brief(ms))
			port := ports(t, body)
			for _, m := range ms {
				assert.Equal(t, fmt.Sprintf("postgres://app:s3cr3t-pw@127.0.0.1:%d/app?sslmode=require", port[m.Name]), m.DSN)
			}
		})
	}

	t.Run("a REST URL with a path and a trailing slash", func(t *testing.T) {
		body := sample(t, "4.0.7", "healthy")
		api := newRESTAPIFunc(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/patroni-a/cluster" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write(body)
		})
		s := newSource(t, []string{api.URL + "/patroni-a/"})
		ms, err := s.Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
	})

	t.Run("the request", func(t *testing.T) {
		var got http.Header
		var method string
		api := newRESTAPIFunc(t, func(w http.ResponseWriter, r *http.Request) {
			got, method = r.Header.Clone(), r.Method
			_, _ = w.Write(sample(t, "4.0.7", "healthy"))
		})
		_, err := newSource(t, []string{api.URL}).Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, http.MethodGet, method)
		assert.Equal(t, "application/json", got.Get("Accept"))
		assert.Equal(t, "dbrouter-patroni", got.Get("User-Agent"))
		assert.Empty(t, got.Get("Authorization"))
	})

	t.Run("connections are kept alive between calls", func(t *testing.T) {
		var conns atomic.Int32
		api := newRESTAPIFunc(t, clusterHandler(sample(t, "4.0.7", "healthy")), func(srv *httptest.Server) {
			srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					conns.Add(1)
				}
			}
		})
		s := newSource(t, []string{api.URL})
		for range 5 {
			_, err := s.Discover(ctx)
			require.NoError(t, err)
		}
		assert.EqualValues(t, 5, api.requests.Load())
		assert.EqualValues(t, 1, conns.Load())
	})
}

// TestDiscoverRotation: the first valid answer wins, a URL that fails is
// skipped within the request timeout, and the next call starts with the URL
// that answered last.
func TestDiscoverRotation(t *testing.T) {
	ctx := testCtx(t)
	body := sample(t, "4.0.7", "healthy")

	t.Run("first URL refuses connections", func(t *testing.T) {
		api := newRESTAPI(t, body)
		s := newSource(t, []string{refusingAPI(t), api.URL})
		ms, err := s.Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
	})

	t.Run("first URL frozen: the second answers within the timeout", func(t *testing.T) {
		const timeout = 200 * time.Millisecond
		api := newRESTAPI(t, body)
		s := newSource(t, []string{frozenAPI(t), api.URL}, WithRequestTimeout(timeout))
		began := time.Now()
		ms, err := s.Discover(ctx)
		took := time.Since(began)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
		assert.GreaterOrEqual(t, took, timeout, "gave up on the frozen API before its timeout")
		assert.Less(t, took, timeout+time.Second, "a frozen API held Discover past its timeout")
		t.Logf("frozen first URL given up and second answered after %v (timeout %v)", took, timeout)

		// The next call starts with the URL that answered: no wait at all.
		began = time.Now()
		_, err = s.Discover(ctx)
		require.NoError(t, err)
		assert.Less(t, time.Since(began), timeout, "the next call asked the frozen API first")
		assert.EqualValues(t, 2, api.requests.Load())
	})

	t.Run("an answer that is no use moves on to the next URL", func(t *testing.T) {
		for name, h := range map[string]http.HandlerFunc{
			"503": func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "DCS unavailable", http.StatusServiceUnavailable)
			},
			"not JSON":   func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>") },
			"no members": func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"members": []}`) },
			"all stopped": func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, `{"members": [{"name": "m0", "role": "replica", "state": "stopped", "host": "h", "port": 1}]}`)
			},
		} {
			t.Run(name, func(t *testing.T) {
				bad := newRESTAPIFunc(t, h)
				good := newRESTAPI(t, body)
				s := newSource(t, []string{bad.URL, good.URL})
				ms, err := s.Discover(ctx)
				require.NoError(t, err)
				assert.Equal(t, "m0* m1 m2", brief(ms))
				_, err = s.Discover(ctx)
				require.NoError(t, err)
				assert.EqualValues(t, 1, bad.requests.Load(), "the second call asked the bad URL again first")
				assert.EqualValues(t, 2, good.requests.Load())
			})
		}
	})

	t.Run("a call cut short by its context starts the next with the URL it did not reach", func(t *testing.T) {
		api := newRESTAPI(t, body)
		s := newSource(t, []string{frozenAPI(t), api.URL}, WithRequestTimeout(time.Second))
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := s.Discover(short)
		require.ErrorIs(t, err, ErrUnreachable)
		began := time.Now()
		ms, err := s.Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
		assert.Less(t, time.Since(began), 500*time.Millisecond, "the next call asked the frozen API first again")
	})

	t.Run("goes round to the start", func(t *testing.T) {
		var mu sync.Mutex
		var hits []string
		var aDown, bDown atomic.Bool
		api := func(name string, down *atomic.Bool) *restAPI {
			return newRESTAPIFunc(t, func(w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				hits = append(hits, name)
				mu.Unlock()
				if down.Load() {
					http.Error(w, "down", http.StatusServiceUnavailable)
					return
				}
				_, _ = w.Write(body)
			})
		}
		a, b := api("a", &aDown), api("b", &bDown)
		s := newSource(t, []string{a.URL, b.URL})
		aDown.Store(true)
		_, err := s.Discover(ctx) // a fails, b answers
		require.NoError(t, err)
		aDown.Store(false)
		bDown.Store(true)
		_, err = s.Discover(ctx) // b first, fails; then a
		require.NoError(t, err)
		_, err = s.Discover(ctx) // a first
		require.NoError(t, err)
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"a", "b", "b", "a", "a"}, hits)
	})
}

// TestDiscoverFails: every URL failing is ErrUnreachable joined with one
// *URLError per URL, each saying what that URL did, within the request
// timeout per URL.
func TestDiscoverFails(t *testing.T) {
	ctx := testCtx(t)

	t.Run("every REST API frozen or down", func(t *testing.T) {
		const timeout = 150 * time.Millisecond
		frozen1, frozen2, down := frozenAPI(t), frozenAPI(t), refusingAPI(t)
		s := newSource(t, []string{frozen1, down, frozen2}, WithRequestTimeout(timeout))
		began := time.Now()
		ms, err := s.Discover(ctx)
		took := time.Since(began)
		require.Error(t, err)
		assert.Nil(t, ms)
		assert.ErrorIs(t, err, ErrUnreachable)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.GreaterOrEqual(t, took, 2*timeout)
		assert.Less(t, took, 2*timeout+time.Second, "Discover took longer than the timeout per URL")
		t.Logf("2 frozen + 1 refusing REST APIs given up after %v (timeout %v)", took, timeout)

		var urls []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if ue, ok := errors.AsType[*URLError](e); ok {
				urls = append(urls, ue.URL)
			}
		}
		assert.Equal(t, []string{frozen1 + "/cluster", down + "/cluster", frozen2 + "/cluster"}, urls)
		msg := err.Error()
		assert.Contains(t, msg, "patroni: GET "+frozen1+"/cluster: no answer within 150ms")
		assert.Contains(t, msg, "patroni: GET "+down+"/cluster: dial tcp")
		assert.NotContains(t, msg, testPassword)
		assert.Equal(t, 1, strings.Count(msg, frozen1), "the URL is named once: %s", msg)
	})

	t.Run("the default timeout is 1 s", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits 1 s for a frozen API")
		}
		s := newSource(t, []string{frozenAPI(t)})
		began := time.Now()
		_, err := s.Discover(ctx)
		took := time.Since(began)
		assert.ErrorIs(t, err, ErrUnreachable)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.GreaterOrEqual(t, took, DefaultRequestTimeout)
		assert.Less(t, took, DefaultRequestTimeout+time.Second)
		t.Logf("a frozen REST API given up after %v with the default timeout", took)
	})

	t.Run("the context ends first", func(t *testing.T) {
		frozen := frozenAPI(t)
		s := newSource(t, []string{frozen, frozenAPI(t), frozenAPI(t)}, WithRequestTimeout(10*time.Second))
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		began := time.Now()
		_, err := s.Discover(cctx)
		assert.Less(t, time.Since(began), 2*time.Second)
		assert.ErrorIs(t, err, ErrUnreachable)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "2 more REST URLs not asked")
		assert.NotContains(t, err.Error(), "no answer within", "the request timeout did not pass; the context ended")

		done, cancel2 := context.WithCancel(ctx)
		cancel2()
		_, err = s.Discover(done)
		assert.ErrorIs(t, err, ErrUnreachable)
		assert.ErrorIs(t, err, context.Canceled)
	})

	for _, tc := range []struct {
		name   string
		h      http.HandlerFunc
		is     error
		says   string
		excess string // what must not show
	}{
		{"a 503 with its answer", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "Service Unavailable\n\n  etcd is down", http.StatusServiceUnavailable)
		}, ErrBadResponse, `503 Service Unavailable: "Service Unavailable etcd is down"`, ""},
		{"a 404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, ErrBadResponse, "404 Not Found", ""},
		{"a long error answer is cut", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, strings.Repeat("é", 100)+"TAIL")
		}, ErrBadResponse, "500 Internal Server Error: \"" + strings.Repeat("é", 60) + "…\"", "TAIL"},
		{"a redirect is not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://192.0.2.1/cluster", http.StatusFound)
		}, ErrBadResponse, "302 Found", ""},
		{"an answer too large", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"members": [`+strings.Repeat(" ", MaxResponseBytes)+`]}`)
		}, ErrBadResponse, "larger than 1048576 bytes", ""},
		{"bad JSON", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"members": [`) }, ErrBadResponse, "not Patroni's JSON", ""},
		{"no running member", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"members": [{"name": "m0", "role": "leader", "state": "stopped", "host": "h", "port": 1}]}`)
		}, ErrNoMembers, "no member running or streaming with a host: [m0 (stopped)]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newRESTAPIFunc(t, tc.h)
			_, err := newSource(t, []string{api.URL}).Discover(ctx)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrUnreachable)
			assert.ErrorIs(t, err, tc.is)
			ue, ok := errors.AsType[*URLError](err)
			require.True(t, ok)
			assert.Equal(t, api.URL+"/cluster", ue.URL)
			assert.Contains(t, err.Error(), tc.says)
			if tc.excess != "" {
				assert.NotContains(t, err.Error(), tc.excess)
			}
			assert.NotContains(t, err.Error(), testPassword)
		})
	}
}

// bodyCloser records whether the bodies it hands out were closed.
type bodyCloser struct {
	rt     http.RoundTripper
	opened atomic.Int32
	closed atomic.Int32
}

func (b *bodyCloser) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := b.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b.opened.Add(1)
	res.Body = &countingBody{ReadCloser: res.Body, closed: &b.closed}
	return res, nil
}

type countingBody struct {
	io.ReadCloser
	closed *atomic.Int32
}

func (c *countingBody) Close() error { c.closed.Add(1); return c.ReadCloser.Close() }

func TestDiscoverClosesBodies(t *testing.T) {
	ctx := testCtx(t)
	good := newRESTAPI(t, sample(t, "4.0.7", "healthy"))
	bad := newRESTAPIFunc(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusBadGateway) })
	huge := newRESTAPIFunc(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 2*MaxResponseBytes))
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	rt := &bodyCloser{rt: tr}
	s := newSource(t, []string{bad.URL, huge.URL, good.URL}, WithHTTPClient(&http.Client{Transport: rt}))
	_, err := s.Discover(ctx)
	require.NoError(t, err)
	_, err = s.Discover(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 4, rt.opened.Load())
	assert.EqualValues(t, 4, rt.closed.Load())
}

func TestDiscoverBasicAuth(t *testing.T) {
	ctx := testCtx(t)
	body := sample(t, "4.0.7", "healthy")
	const user, password = "patroni-reader", "b4s1c-pw"
	api := newRESTAPIFunc(t, func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="patroni"`)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	})

	ms, err := newSource(t, []string{api.URL}, WithBasicAuth(user, password)).Discover(ctx)
	require.NoError(t, err)
	assert.Equal(t, "m0* m1 m2", brief(ms))

	_, err = newSource(t, []string{api.URL}).Discover(ctx)
	assert.ErrorIs(t, err, ErrBadResponse)
	assert.Contains(t, err.Error(), "401 Unauthorized")

	s := newSource(t, []string{api.URL}, WithBasicAuth(user, "wrong-"+password))
	_, err = s.Discover(ctx)
	assert.ErrorIs(t, err, ErrBadResponse)
	for _, text := range []string{err.Error(), s.String(), fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s),
		fmt.Sprintf("%+v", reflect.ValueOf(s).Elem()), fmt.Sprintf("%#v", reflect.ValueOf(s).Elem())} {
		assert.NotContains(t, text, password)
		assert.NotContains(t, text, testPassword)
	}
}

func TestDiscoverTLS(t *testing.T) {
	ctx := testCtx(t)
	body := sample(t, "4.0.7", "healthy")
	api := httptest.NewTLSServer(clusterHandler(body))
	t.Cleanup(api.Close)
	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())

	t.Run("with the CA", func(t *testing.T) {
		cfg := &tls.Config{RootCAs: roots}
		s := newSource(t, []string{api.URL}, WithTLSConfig(cfg))
		cfg.RootCAs = nil // the Source has its own copy
		ms, err := s.Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
	})

	t.Run("without it", func(t *testing.T) {
		_, err := newSource(t, []string{api.URL}).Discover(ctx)
		assert.ErrorIs(t, err, ErrUnreachable)
		_, ok := errors.AsType[*tls.CertificateVerificationError](err)
		assert.True(t, ok, "%v", err)
	})

	t.Run("a client certificate", func(t *testing.T) {
		mtls := httptest.NewUnstartedServer(clusterHandler(body))
		mtls.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
		mtls.StartTLS()
		t.Cleanup(mtls.Close)
		mroots := x509.NewCertPool()
		mroots.AddCert(mtls.Certificate())

		_, err := newSource(t, []string{mtls.URL}, WithTLSConfig(&tls.Config{RootCAs: mroots})).Discover(ctx)
		assert.ErrorIs(t, err, ErrUnreachable, "a server asking for a certificate let us in without one")

		// httptest's own certificate serves as the client's.
		cert := mtls.TLS.Certificates[0]
		ms, err := newSource(t, []string{mtls.URL}, WithTLSConfig(&tls.Config{RootCAs: mroots, Certificates: []tls.Certificate{cert}})).Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
	})

	t.Run("through a client of one's own", func(t *testing.T) {
		client := api.Client()
		ms, err := newSource(t, []string{api.URL}, WithHTTPClient(client)).Discover(ctx)
		require.NoError(t, err)
		assert.Equal(t, "m0* m1 m2", brief(ms))
		client.CloseIdleConnections()
	})
}

// TestDiscoverConcurrent calls Discover from many goroutines while one REST
// API fails now and then, so that the URL to ask first keeps changing (run
// with -race).
func TestDiscoverConcurrent(t *testing.T) {
	ctx := testCtx(t)
	body := sample(t, "4.0.7", "healthy")
	var n atomic.Int32
	a := newRESTAPIFunc(t, func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%3 == 0 {
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(body)
	})
	b := newRESTAPI(t, body)
	s := newSource(t, []string{a.URL, b.URL})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				ms, err := s.Discover(ctx)
				if assert.NoError(t, err) {
					assert.Equal(t, "m0* m1 m2", brief(ms))
				}
			}
		})
	}
	wg.Wait()
}

func TestZeroSource(t *testing.T) {
	var s Source
	_, err := s.Discover(context.Background())
	assert.ErrorIs(t, err, ErrInvalidConfig)
	var nilSource *Source
	_, err = nilSource.Discover(context.Background())
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.Equal(t, "patroni.Source(nil)", nilSource.String())
	nilSource.CloseIdleConnections()
	s.CloseIdleConnections()
}
