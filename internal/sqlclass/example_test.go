package sqlclass_test

import (
	"fmt"

	"github.com/dbrouter/dbrouter/internal/sqlclass"
)

func ExampleIsReadOnly() {
	for _, q := range []string{
		"SELECT * FROM users WHERE id = $1",
		"select 'insert' -- ; delete from t",
		"SELECT * FROM jobs FOR UPDATE SKIP LOCKED",
		"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
		"select nextval('order_id_seq')",
		"select 1; select 2",
	} {
		fmt.Println(sqlclass.IsReadOnly(q), q)
	}
	// Output:
	// true SELECT * FROM users WHERE id = $1
	// true select 'insert' -- ; delete from t
	// false SELECT * FROM jobs FOR UPDATE SKIP LOCKED
	// false WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d
	// false select nextval('order_id_seq')
	// false select 1; select 2
}
