package dbrouter

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNameFromDSN(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://app:s3cret@db1.internal:5433/orders?sslmode=disable", "db1.internal:5433/orders"},
		{"postgresql://app@10.0.0.1/orders", "10.0.0.1/orders"},
		{"host=db2 port=6432 user=app password=s3cret dbname=orders", "db2:6432/orders"},
		{"host=db2 password='s3cret' dbname=orders", "db2:5432/orders"},
		{"app:s3cret@tcp(db3:3306)/orders?parseTime=true", "db3:3306/orders"},
		{"file:test.db", "node4"},
		{"host=db1 dbname=app password='x dbname=s3cret'", "db1:5432/app"},
		{`host=db1 password='it\'s s3cret' dbname='my db'`, "db1:5432/my db"},
		{"host=db1 password='unterminated s3cret", "node4"},
		// Passwords holding what a URL forbids there.
		{"postgres://app:123#s3cret@db1/app", "db1/app"},
		{"postgres://app:p@ss#s3cret@db1:5432/app?sslmode=require", "db1:5432/app"},
		{"postgres://app:s3cret@db1,db2:5433/app", "db1,db2:5433/app"},
		{"postgres://app:s3cret@[::1]:5432/app", "[::1]:5432/app"},
		{"postgres://db1/app?options=-c%20search_path%3Dx@y", "db1/app"},
		// Unparseable: a positional name, none of the text. (libpq and pgx
		// read the first as host "app", port 2024, database
		// "s3cret@db1:5432/app".)
		{"postgres://app:2024/s3cret@db1:5432/app", "node4"},
		{"postgres://app:p@ss/s3cret@db1:5432/app", "node4"},
		{"postgres://app:s3cret/oops", "node4"},
		{"postgres://app:s3cret@", "node4"},
		{"postgres://@/s3cret", "node4"},
		{"app:s3cret@tcp(db3:3306)/or@s3cret", "node4"},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			got := nameFromDSN(tt.dsn, 4)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "s3cret")
			assert.NotContains(t, got, "2024")
			assert.NotContains(t, got, "123")
		})
	}
	assert.Equal(t, []string{"a", "b", "a#2"}, uniqueNames([]string{"a", "b", "a"}))
}

// FuzzNameHidesPasswords: whatever a password holds, a URL DSN's name never
// contains it.
func FuzzNameHidesPasswords(f *testing.F) {
	for _, pw := range []string{"s3cret", "2024/s3cret", "123#x", "p@ss", "a:b@c/d?e", "%40/@#?"} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		if len(pw) < 4 || strings.Contains("db1.internal:5432/orders", pw) {
			return // too short to tell from the host or database
		}
		name := nameFromDSN("postgres://app:"+pw+"@db1.internal:5432/orders", 1)
		if strings.Contains(name, pw) {
			t.Fatalf("the name %q holds the password %q", name, pw)
		}
	})
}
