package dbrouter

import (
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
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			got := nameFromDSN(tt.dsn, 4)
			assert.Equal(t, tt.want, got)
			assert.NotContains(t, got, "s3cret")
		})
	}
	assert.Equal(t, []string{"a", "b", "a#2"}, uniqueNames([]string{"a", "b", "a"}))
}
