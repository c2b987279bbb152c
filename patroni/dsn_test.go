package patroni

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testDSN is the DSN the tests give a Source; its password must never show.
const (
	testDSN      = "postgres://app:s3cr3t-pw@/app?sslmode=require"
	testPassword = "s3cr3t-pw"
)

func TestParseDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:secret@/app?sslmode=require",
		"postgresql://app@/app",
		"postgres:///app",
		"postgres://",
		"postgres://app:p%40ss%3Aw%2Frd@/my%20db?sslmode=verify-full&application_name=web",
		"user=app password=secret dbname=app sslmode=require",
		"user = app password='se cret \\' x' dbname=app",
		"  dbname=app  ",
		"",
	} {
		_, err := parseDSN(dsn)
		assert.NoError(t, err, dsn)
	}

	for _, tc := range []struct{ dsn, says string }{
		{"postgres://app:secret@db1/app", "names a host or port"},
		{"postgres://app:secret@db1:5432/app", "names a host or port"},
		{"postgres://app:secret@[::1]/app", "names a host or port"},
		{"postgres://app:secret@db1,db2/app", "names a host or port"},
		{"postgres://app:secret@:5433/app", "names a host or port"},
		{"postgres://app:secret@/app?host=db1", "sets host"},
		{"postgres://app:secret@/app?sslmode=require&hostaddr=10.0.0.1", "sets hostaddr"},
		{"postgres://app:secret@/app?port=5433", "sets port"},
		{"postgres://app:secret@/app?a=%zz", "query that is not valid"},
		{"postgres://app:sec%zzret@/app", "not a valid URL"},
		{"user=app password=secret host=db1 dbname=app", "sets host"},
		{"user=app hostaddr=10.0.0.1", "sets hostaddr"},
		{"port=5433 user=app", "sets port"},
		{"user=app password='secret", "unterminated quoted value for password"},
		{`user=app dbname=app password=secret\`, "ends in a backslash, in the value of password"}, // it escaped the space before each member's host
		{"user=app secret", "no = after the word at byte 9"},
		{"=app", "no keyword"},
		{"db1.internal", "neither a postgres:// URL nor keyword=value"},
	} {
		_, err := parseDSN(tc.dsn)
		require.Error(t, err, tc.dsn)
		ce, ok := errors.AsType[*ConfigError](err)
		require.True(t, ok, "%s: %T", tc.dsn, err)
		assert.Equal(t, "dsn", ce.Field)
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), tc.says, tc.dsn)
		assert.NotContains(t, err.Error(), "secret", tc.dsn)
	}
}

func TestParseKeywordValues(t *testing.T) {
	kv, err := parseKeywordValues(`user=app  password = 'a b\'c' dbname=a\ b sslmode='' x='a\\b'`)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"user": "app", "password": "a b'c", "dbname": "a b", "sslmode": "", "x": `a\b`}, kv)
}

// TestForMember checks that each member's DSN keeps everything of the
// Source's DSN (user, password, database, parameters, escapes) and adds the
// member's address, in both forms.
func TestForMember(t *testing.T) {
	t.Run("URL", func(t *testing.T) {
		tmpl, err := parseDSN("postgres://app:p%40ss%3Aw%2Frd%25@/my%20db?sslmode=verify-full&application_name=web")
		require.NoError(t, err)
		dsn := tmpl.forMember("10.0.0.7", 5433)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		assert.Equal(t, "app", u.User.Username())
		pw, _ := u.User.Password()
		assert.Equal(t, "p@ss:w/rd%", pw)
		assert.Equal(t, "10.0.0.7:5433", u.Host)
		assert.Equal(t, "/my db", u.Path)
		assert.Equal(t, "verify-full", u.Query().Get("sslmode"))
		assert.Equal(t, "web", u.Query().Get("application_name"))

		assert.Equal(t, "postgres://app:p%40ss%3Aw%2Frd%25@[fe80::1%25eth0]:5432/my%20db?sslmode=verify-full&application_name=web",
			tmpl.forMember("fe80::1%eth0", 5432))
		u, err = url.Parse(tmpl.forMember("fe80::1%eth0", 5432))
		require.NoError(t, err)
		assert.Equal(t, "fe80::1%eth0", u.Hostname())

		plain, err := parseDSN("postgres:///app")
		require.NoError(t, err)
		assert.Equal(t, "postgres://db1:5432/app", plain.forMember("db1", 5432))
		assert.Equal(t, "postgres://db1/app", plain.forMember("db1", 0))
	})

	t.Run("keyword/value", func(t *testing.T) {
		tmpl, err := parseDSN(`user=app password='p w\'x' dbname=app sslmode=require`)
		require.NoError(t, err)
		dsn := tmpl.forMember("10.0.0.7", 5433)
		assert.Equal(t, `user=app password='p w\'x' dbname=app sslmode=require host='10.0.0.7' port=5433`, dsn)
		kv, err := parseKeywordValues(strings.ReplaceAll(strings.ReplaceAll(dsn, "host=", "h="), "port=", "p="))
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"user": "app", "password": "p w'x", "dbname": "app", "sslmode": "require", "h": "10.0.0.7", "p": "5433"}, kv)

		empty, err := parseDSN("")
		require.NoError(t, err)
		assert.Equal(t, "host='db1'", empty.forMember("db1", 0))
		assert.Equal(t, "host='::1' port=5432", empty.forMember("::1", 5432))
	})

	t.Run("String hides the password", func(t *testing.T) {
		tmpl, err := parseDSN(testDSN)
		require.NoError(t, err)
		for _, s := range []string{fmt.Sprint(tmpl), fmt.Sprintf("%+v", tmpl), fmt.Sprintf("%#v", tmpl), fmt.Sprintf("%v", &tmpl)} {
			assert.NotContains(t, s, testPassword)
		}
	})
}

// FuzzDSNErrorsHidePassword builds DSNs around a password, in both forms,
// with and without a host, and checks that whatever parseDSN answers, its
// error never shows the password.
func FuzzDSNErrorsHidePassword(f *testing.F) {
	for _, s := range []string{"secret", "p@ss:w/rd", "a b c", "it's", `back\slash`, "%zz%", "host=db1", "'", "x=y z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 4 {
			return // too short to tell from the rest of the message
		}
		for _, dsn := range []func(pw string) string{
			func(pw string) string { return "postgres://app:" + pw + "@/app" },
			func(pw string) string { return "postgres://app:" + url.PathEscape(pw) + "@db1/app" },
			func(pw string) string { return "postgres://app:" + url.QueryEscape(pw) + "@/app?x=" + pw },
			func(pw string) string { return "user=app password=" + pw + " dbname=app" },
			func(pw string) string { return "user=app password='" + pw + "' dbname=app" },
			func(pw string) string { return "user=app password='" + pw },
			func(pw string) string { return "password=" + pw + " host=db1" },
		} {
			_, err := parseDSN(dsn(pw))
			if err == nil || !strings.Contains(err.Error(), pw) {
				continue
			}
			// A password that is a word of the message itself ("host")
			// shows in the message of a harmless password too.
			if _, plain := parseDSN(dsn("Q7z9")); plain != nil && strings.Contains(plain.Error(), pw) {
				continue
			}
			t.Fatalf("dsn %q: error shows the password: %v", dsn(pw), err)
		}
	})
}
