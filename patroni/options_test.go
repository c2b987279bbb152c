package patroni

import (
	"crypto/tls"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// configErrors returns the *ConfigError values joined in err.
func configErrors(t testing.TB, err error) []*ConfigError {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, ErrInvalidConfig)
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*ConfigError
	for _, e := range errs {
		ce, ok := errors.AsType[*ConfigError](e)
		require.True(t, ok, "%T: %v", e, e)
		out = append(out, ce)
	}
	return out
}

func TestNewDefaults(t *testing.T) {
	s, err := New(testDSN, "http://10.0.0.1:8008", "https://pg2.internal:8008/")
	require.NoError(t, err)
	assert.Equal(t, DefaultRequestTimeout, s.timeout)
	assert.Equal(t, []string{"http://10.0.0.1:8008/cluster", "https://pg2.internal:8008/cluster"}, s.urls)
	assert.Equal(t, "patroni.Source(http://10.0.0.1:8008, https://pg2.internal:8008)", s.String())
	assert.Empty(t, s.secrets.user)
	tr, ok := s.client.Transport.(*http.Transport)
	require.True(t, ok)
	assert.Nil(t, tr.Proxy, "the default client uses a proxy")
	assert.NotNil(t, s.client.CheckRedirect)

	in := []string{"http://10.0.0.1:8008"}
	s, err = NewWithOptions(testDSN, in, WithRequestTimeout(300*time.Millisecond), WithBasicAuth("u", ""))
	require.NoError(t, err)
	in[0] = "http://changed:1"
	assert.Equal(t, []string{"http://10.0.0.1:8008/cluster"}, s.urls, "the Source kept the caller's slice")
	assert.Equal(t, 300*time.Millisecond, s.timeout)
	assert.Equal(t, "u", s.secrets.user)

	client := &http.Client{}
	s, err = NewWithOptions(testDSN, in, WithHTTPClient(client))
	require.NoError(t, err)
	assert.Same(t, client, s.client)
}

func TestNewRefuses(t *testing.T) {
	const url = "http://10.0.0.1:8008"
	for _, tc := range []struct {
		name   string
		dsn    string
		urls   []string
		opts   []Option
		fields []string // the Field of each *ConfigError, in order
	}{
		{"no URL", testDSN, nil, nil, []string{"restURLs"}},
		{"an empty URL list", testDSN, []string{}, nil, []string{"restURLs"}},
		{"an empty URL", testDSN, []string{""}, nil, []string{"restURLs[0]"}},
		{"not a URL", testDSN, []string{url, "http://a b:8008"}, nil, []string{"restURLs[1]"}},
		{"no scheme", testDSN, []string{"10.0.0.1:8008"}, nil, []string{"restURLs[0]"}},
		{"another scheme", testDSN, []string{"ftp://10.0.0.1:8008"}, nil, []string{"restURLs[0]"}},
		{"no host", testDSN, []string{"http:///x", "http://:8008"}, nil, []string{"restURLs[0]", "restURLs[1]"}},
		{"a user in the URL", testDSN, []string{"http://admin:" + testPassword + "@10.0.0.1:8008"}, nil, []string{"restURLs[0]"}},
		{"a query", testDSN, []string{url + "?a=1", url + "/?"}, nil, []string{"restURLs[0]", "restURLs[1]"}},
		{"a fragment", testDSN, []string{url + "#x"}, nil, []string{"restURLs[0]"}},
		{"a URL twice", testDSN, []string{url, "http://10.0.0.2:8008", url + "/"}, nil, []string{"restURLs[2]"}},
		{"a DSN naming a host", "postgres://app:" + testPassword + "@db1/app", []string{url}, nil, []string{"dsn"}},
		{"a keyword DSN naming a host", "user=app password=" + testPassword + " host=db1", []string{url}, nil, []string{"dsn"}},
		{"a nil option", testDSN, []string{url}, []Option{nil}, []string{"Option"}},
		{"a nil client", testDSN, []string{url}, []Option{WithHTTPClient(nil)}, []string{"WithHTTPClient"}},
		{"a nil TLS config", testDSN, []string{url}, []Option{WithTLSConfig(nil)}, []string{"WithTLSConfig"}},
		{"a client and a TLS config", testDSN, []string{url}, []Option{WithHTTPClient(&http.Client{}), WithTLSConfig(&tls.Config{})}, []string{"WithTLSConfig"}},
		{"no user", testDSN, []string{url}, []Option{WithBasicAuth("", testPassword)}, []string{"WithBasicAuth"}},
		{"a user with a colon", testDSN, []string{url}, []Option{WithBasicAuth("a:b", testPassword)}, []string{"WithBasicAuth"}},
		{"a zero timeout", testDSN, []string{url}, []Option{WithRequestTimeout(0)}, []string{"WithRequestTimeout"}},
		{"a negative timeout", testDSN, []string{url}, []Option{WithRequestTimeout(-time.Second)}, []string{"WithRequestTimeout"}},
		{"everything at once", "postgres://app:" + testPassword + "@db1/app", nil,
			[]Option{WithRequestTimeout(0), WithBasicAuth("", testPassword)},
			[]string{"WithRequestTimeout", "WithBasicAuth", "dsn", "restURLs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewWithOptions(tc.dsn, tc.urls, tc.opts...)
			assert.Nil(t, s)
			var fields []string
			for _, ce := range configErrors(t, err) {
				fields = append(fields, ce.Field)
				assert.NotEmpty(t, ce.Reason)
			}
			assert.Equal(t, tc.fields, fields)
			assert.NotContains(t, err.Error(), testPassword)
			if tc.opts == nil {
				_, err := New(tc.dsn, tc.urls...)
				assert.ErrorIs(t, err, ErrInvalidConfig)
			}
		})
	}

	t.Run("reasons", func(t *testing.T) {
		for _, tc := range []struct {
			urls []string
			opt  Option
			want string
		}{
			{[]string{"http://admin:pw@h:1"}, nil, "patroni: restURLs[0]: carries a user: use WithBasicAuth"},
			{[]string{"ftp://h:1"}, nil, `patroni: restURLs[0]: "ftp://h:1" is not an http:// or https:// URL`},
			{[]string{"http://h:1", "http://h:1"}, nil, `patroni: restURLs[1]: "http://h:1" is restURLs[0] again`},
			{[]string{url}, WithRequestTimeout(0), "patroni: WithRequestTimeout: must be > 0, got 0s"},
			{[]string{url}, WithHTTPClient(nil), "patroni: WithHTTPClient: must not be nil"},
		} {
			var opts []Option
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			_, err := NewWithOptions(testDSN, tc.urls, opts...)
			require.Error(t, err)
			assert.Equal(t, tc.want, err.Error())
		}
	})
}
