package sqlclass

import "testing"

// fuzzWrites are statements that must never be classified read-only when
// appended as a second statement to any read-only query.
var fuzzWrites = []string{
	"DELETE FROM t",
	"insert into t values (1)",
	"UPDATE t SET a=1",
	"DROP TABLE t",
	"select nextval('s')",
	"select * from t for update",
	"select 1 into t2",
	"SELECT 1",
}

func FuzzIsReadOnly(f *testing.F) {
	for _, s := range []string{
		"",
		"select 1",
		"SELECT * FROM users WHERE id = $1",
		"select $1::int",
		"VALUES (1)",
		"TABLE t",
		"SHOW search_path",
		"EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1",
		"EXPLAIN ANALYZE DELETE FROM t",
		"(SELECT 1) UNION (SELECT 2)",
		"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
		"select 1 -- ; delete from t",
		"select 1 /* /* nested */ ; delete */",
		`SELECT E'\';delete from t'`,
		"SELECT 'a'';delete'",
		"SELECT $$;delete$$",
		"SELECT $a$ $$ ;delete $a$",
		`select "nextval"('s')`,
		"select nextval from t",
		"select * from t for no key update of t nowait",
		"select 1; select 2",
		"select 'unterminated",
		`SELECT 'a\'; DELETE FROM t; --'`,
		"select 'a'\n'b'",
		"select E'a' -- c\n'\\';x'",
		`select U&"\006Eextval"('s')`,
		"select B'01', X'1F', N'n', U&'u'",
		"select x$$ from t",
		"select 1.5e10, .5, 1into",
		"select 1;\n-- done",
		benchQuery200,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := IsReadOnly(s)
		if again := IsReadOnly(s); again != got {
			t.Fatalf("IsReadOnly(%q) = %v, then %v", s, got, again)
		}
		if !got {
			return
		}
		// A read-only query is complete: nothing it ends with may swallow a
		// second statement. The newline ends a trailing line comment.
		for _, w := range fuzzWrites {
			if q := s + "\n;" + w; IsReadOnly(q) {
				t.Errorf("IsReadOnly(%q) = true after IsReadOnly(%q) = true", q, s)
			}
		}
		// Whitespace and comments around a read-only query change nothing.
		for _, q := range []string{" " + s, "/* c */\n" + s, s + " \t\n", s + "\n-- c"} {
			if !IsReadOnly(q) {
				t.Errorf("IsReadOnly(%q) = false after IsReadOnly(%q) = true", q, s)
			}
		}
	})
}
