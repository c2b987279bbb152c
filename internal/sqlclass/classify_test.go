package sqlclass

import (
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIsReadOnly(t *testing.T) {
	tests := []struct {
		name         string
		sql          string
		wantReadOnly bool
	}{
		// Plain reads, any case.
		{"select lower", "select 1", true},
		{"select upper", "SELECT 1", true},
		{"select mixed", "SeLeCt 1", true},
		{"select star", "select * from users", true},
		{"dollar param", "select * from users where id = $1", true},
		{"param with cast", "select $1::int", true},
		{"many params", "select $1, $2, $10", true},
		{"question mark param", "select * from t where id = ?", true},
		{"any array param", "select * from t where id = any($1::bigint[])", true},
		{"values", "VALUES (1)", true},
		{"values lower multi", "values (1, 'a'), (2, 'b')", true},
		{"table", "TABLE t", true},
		{"table only", "table only t", true},
		{"show", "SHOW search_path", true},
		{"show all", "show all", true},
		{"show multiword", "SHOW TRANSACTION ISOLATION LEVEL", true},
		{"with select", "WITH a AS (SELECT 1) SELECT * FROM a", true},
		{"with recursive", "with recursive r(n) as (select 1 union all select n+1 from r where n < 10) select * from r", true},
		{"with materialized", "WITH a AS MATERIALIZED (SELECT 1) SELECT * FROM a", true},
		{"with values", "with v(x) as (values (1)) select x from v", true},

		// Leading parentheses.
		{"paren select", "(select 1)", true},
		{"paren union", "(SELECT 1) UNION (SELECT 2)", true},
		{"double paren", "((select 1))", true},
		{"paren values", "(VALUES (1))", true},
		{"paren with", "(with a as (select 1) select * from a)", true},
		{"paren table", "(TABLE t)", true},
		{"paren show", "(show all)", false},
		{"paren insert", "(insert into t values (1))", false},
		{"empty parens", "()", false},

		// EXPLAIN.
		{"explain select", "EXPLAIN SELECT 1", true},
		{"explain analyze select", "explain analyze select * from t", true},
		{"explain analyse select", "EXPLAIN ANALYSE SELECT 1", true},
		{"explain analyze verbose", "EXPLAIN ANALYZE VERBOSE SELECT 1", true},
		{"explain options", "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t", true},
		{"explain nested options", "explain (analyze true, costs off) with a as (select 1) select * from a", true},
		{"explain paren statement", "explain (select 1)", true},
		{"explain options paren statement", "explain (costs off) (select 1)", true},
		{"explain double paren statement", "explain ((select 1))", true},
		{"explain values", "EXPLAIN VALUES (1)", true},
		{"explain analyze delete", "EXPLAIN ANALYZE DELETE FROM t", false},
		{"explain delete", "explain delete from t", false},
		{"explain insert", "explain insert into t values (1)", false},
		{"explain options update", "explain (analyze) update t set a = 1", false},
		{"explain analyze create table as", "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", false},
		{"explain analyze select into", "EXPLAIN ANALYZE SELECT 1 INTO x", false},
		{"explain execute", "explain execute p(1)", false},
		{"explain show", "explain show all", false},
		{"explain explain", "EXPLAIN EXPLAIN SELECT 1", false},
		{"explain empty options", "explain () select 1", false},
		{"explain alone", "explain", false},
		{"explain options only", "explain (analyze)", false},

		// Trailing semicolon, several statements.
		{"trailing semicolon", "select 1;", true},
		{"trailing semicolon and comments", "select 1 ;  \n  -- done\n /* bye */ ", true},
		{"two reads", "select 1; select 2", false},
		{"read then delete", "select 1; delete from t", false},
		{"two semicolons", "select 1;;", false},
		{"two paren statements", "(select 1); (select 2)", false},
		{"semicolon only", ";", false},
		{"leading semicolon", "; select 1", false},
		{"explain then semicolon", "explain;", false},

		// Empty and comment-only.
		{"empty", "", false},
		{"whitespace", " \t\r\n\f\v", false},
		{"line comment only", "-- just a comment", false},
		{"block comment only", "/* c */", false},

		// Comments, strings and quoted identifiers hide keywords.
		{"insert in string", "select 'insert into t values (1)'", true},
		{"insert in line comment", "select 1 -- insert into t", true},
		{"insert in block comment", "select 1 /* delete from t */", true},
		{"insert in dollar quote", "select $$insert$$", true},
		{"insert quoted identifier", `select "insert" from t`, true},
		{"for update quoted identifier", `SELECT * FROM "for update"`, true},
		{"for update in string", "select 'for update'", true},
		{"quoted for then share", `select "for" share from t`, true},
		{"semicolon in line comment", "select 1 -- ; delete from t", true},
		{"semicolon in nested comment", "select 1 /* /* nested */ ; delete */", true},
		{"escaped quote in E string", `SELECT E'\';delete from t'`, true},
		{"doubled quote", "SELECT 'a'';delete'", true},
		{"dollar quote semicolon", "SELECT $$;delete$$", true},
		{"tagged dollar quote", "SELECT $a$ $$ ;delete $a$", true},
		{"tagged dollar quote underscore", "select $_1$x;drop table t$_1$", true},
		{"dollar quote with apostrophe", "select $tag$ it's $$ fine $tag$", true},
		{"lower e string", `select e'it\'s'`, true},
		{"E string doubled quote", `select E'it''s'`, true},
		{"bit and hex strings", "select B'0101', X'1F'", true},
		{"national string", "select N'insert'", true},
		{"unicode string", `select U&'d\0061t\+000061'`, true},
		{"unicode identifier", `select U&"col" from t`, true},
		{"string continuation", "select 'a'\n'b; delete from t'", true},
		{"E string continuation", "select E'a' -- c\n'\\';delete from t'", true},
		{"identifier with dollars", "select x$$ from t", true},
		{"identifier with dollar tag", "select a$b$ from t", true},
		{"line comment with quote", "SELECT * FROM t WHERE a = 'x' -- it's fine", true},
		{"comment at end no newline", "select 1 -- end", true},
		{"CRLF", "select 1\r\n-- windows\r\nfrom t\r\n", true},
		{"empty block comment", "select /**/ 1", true},
		{"comment between tokens", "select/*x*/1/*y*/from/**/t", true},

		// Things that look like keywords but are not.
		{"updated_at column", "select updated_at from t", true},
		{"deleted column", "select deleted from t", true},
		{"inserts table", "select * from inserts", true},
		{"into prefix alias", "select 1 as into_x", true},
		{"for_update alias", "select * from t for_update", true},
		{"substring for", "select substring('abc' for 2)", true},
		{"substring from for", "select substring('abc' from 1 for 2)", true},
		{"for in quoted alias", `select 1 as "for"`, true},

		// Keywords that make a write even in a read.
		{"update column name", "select update from t", false},
		{"substring for key column", "select substring(a for key) from t", false},

		// Side-effect functions.
		{"nextval", "select nextval('s')", false},
		// Functions only a primary (or its writing connection) can run.
		{"current WAL position", "SELECT pg_current_wal_lsn()", false},
		{"current WAL insert position", "select pg_current_wal_insert_lsn()", false},
		{"current WAL flush position", "select pg_current_wal_flush_lsn()", false},
		{"WAL file name", "select pg_walfile_name(pg_current_wal_lsn())", false},
		{"WAL file name offset", "select * from pg_walfile_name_offset('0/0')", false},
		{"BRIN summarize new values", "select brin_summarize_new_values('i')", false},
		{"BRIN summarize range", "select brin_summarize_range('i', 0)", false},
		{"GIN clean pending list", "select gin_clean_pending_list('i')", false},
		{"pause replay", "select pg_wal_replay_pause()", false},
		{"resume replay", "select pg_wal_replay_resume()", false},
		{"currval of the writing connection", "select currval('s')", false},
		{"lastval", "select lastval()", false},
		{"backup start", "select pg_backup_start('b')", false},
		{"file write", "select pg_file_write('f', 'x', false)", false},
		{"dblink connect", "select dblink_connect('c', 'dbname=x')", false},
		{"replication origin", "select pg_replication_origin_create('o')", false},
		{"replay position is fine on a replica", "select pg_last_wal_replay_lsn()", true},
		{"nextval upper", "SELECT NEXTVAL('s')", false},
		{"nextval quoted", `select "nextval"('s')`, false},
		{"nextval quoted upper is another function", `select "NEXTVAL"('s')`, true},
		{"nextval schema qualified", "select pg_catalog.nextval('s')", false},
		{"nextval quoted schema", `SELECT "pg_catalog"."setval"('s', 1)`, false},
		{"nextval space before paren", "select nextval ('s')", false},
		{"nextval comment before paren", "select nextval /* c */ ('s')", false},
		{"nextval newline before paren", "select nextval\n('s')", false},
		{"nextval in where", "select * from t where id = nextval('s')", false},
		{"nextval column", "select nextval from t", true},
		{"nextval qualified column", "select t.nextval from t", true},
		{"nextval prefix is another function", "select nextval2('s')", true},
		{"setval", "select setval('s', 1)", false},
		{"advisory lock", "select pg_advisory_lock(1)", false},
		{"advisory lock shared", "select pg_advisory_lock_shared(1)", false},
		{"try advisory xact lock", "select pg_try_advisory_xact_lock(1)", false},
		{"try advisory lock upper", "SELECT PG_TRY_ADVISORY_LOCK(1)", false},
		{"advisory xact lock shared", "select pg_advisory_xact_lock_shared(1)", false},
		{"advisory unlock all", "select pg_advisory_unlock_all()", false},
		{"notify func", "select pg_notify('c', 'x')", false},
		{"lo_import", "SELECT lo_import('/x')", false},
		{"lo_create", "select lo_create(0)", false},
		{"lo_unlink", "select lo_unlink(1)", false},
		{"lo_from_bytea", "select lo_from_bytea(0, '\\x00'::bytea)", false},
		{"lo_ column", "select lo_offset from t", true},
		{"promote", "select pg_promote()", false},
		{"switch wal", "select pg_switch_wal()", false},
		{"create restore point", "select pg_create_restore_point('x')", false},
		{"create slot", "select pg_create_logical_replication_slot('s', 'pgoutput')", false},
		{"drop slot", "select pg_drop_replication_slot('s')", false},
		{"set_config", "select set_config('a', 'b', false)", false},
		{"txid_current", "select txid_current()", false},
		{"txid_current_snapshot", "select txid_current_snapshot()", true},
		{"current xact id", "select pg_current_xact_id()", false},
		{"cancel backend", "select pg_cancel_backend(1)", false},
		{"terminate backend", "select pg_terminate_backend(1)", false},
		{"reload conf", "select pg_reload_conf()", false},
		{"rotate logfile", "select pg_rotate_logfile()", false},
		{"dblink_exec", "select dblink_exec('c', 'delete from t')", false},
		{"dblink", "select * from dblink('c', 'select 1') as r(a int)", false},
		{"query_to_xml runs its argument", "select query_to_xml('select nextval(''s'')', true, false, '')", false},
		{"ts_stat runs its argument", "select * from ts_stat('select v from docs')", false},
		{"table_to_xml", "select table_to_xml('t', true, false, '')", true},
		{"stat reset", "select pg_stat_reset()", false},
		{"stat reset shared", "select pg_stat_reset_shared('bgwriter')", false},
		{"stat get is read", "select pg_stat_get_live_tuples(1)", true},
		{"is in recovery", "select pg_is_in_recovery()", true},
		{"quoted now", `select "pg_catalog"."now"()`, true},
		{"unicode escaped function name", `select U&"\006Eextval"('s')`, false},
		{"unicode identifier uescape", `select U&"!006Eextval" UESCAPE '!' ('s')`, false},
		{"values nextval", "values (nextval('s'))", false},

		// Row locks.
		{"for update", "select * from t for update", false},
		{"FOR SHARE", "SELECT * FROM t FOR SHARE", false},
		{"for key share", "select * from t for key share", false},
		{"for no key update", "select * from t for no key update of t nowait", false},
		{"for update skip locked", "select * from t for update skip locked", false},
		{"for share with comment", "select * from t for /* c */ share", false},
		{"for update in subquery", "select * from (select * from t for update) s", false},
		{"table for update", "TABLE t FOR UPDATE", false},

		// SELECT INTO and data-modifying CTEs.
		{"select into", "select * into new_t from t", false},
		{"select into temp", "SELECT 1 INTO TEMP x", false},
		{"cte delete", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", false},
		{"cte insert", "with i as (insert into t values (1) returning id) select id from i", false},
		{"cte update", "with u as (update t set a = 1 returning *) select * from u", false},
		{"cte merge", "with m as (merge into t using s on t.id = s.id when matched then do nothing returning *) select * from m", false},
		{"with then insert", "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", false},

		// DML, DDL and everything else.
		{"insert", "insert into t values (1)", false},
		{"insert returning", "INSERT INTO t VALUES (1) RETURNING id", false},
		{"update", "update t set a = 1", false},
		{"update returning", "UPDATE t SET a=1 WHERE id=$1 RETURNING *", false},
		{"delete", "delete from t", false},
		{"delete returning", "DELETE FROM t WHERE id = 1 RETURNING id", false},
		{"merge", "merge into t using s on t.id = s.id when matched then update set a = s.a", false},
		{"copy to", "copy t to stdout", false},
		{"copy query", "COPY (SELECT 1) TO STDOUT", false},
		{"create table", "create table t (a int)", false},
		{"create table as", "create table t as select 1", false},
		{"alter table", "alter table t add column b int", false},
		{"drop table", "DROP TABLE t", false},
		{"truncate", "truncate t", false},
		{"comment on", "comment on table t is 'x'", false},
		{"grant", "grant select on t to u", false},
		{"revoke", "revoke all on t from u", false},
		{"reindex", "reindex table t", false},
		{"cluster", "cluster t", false},
		{"refresh", "refresh materialized view v", false},
		{"call", "call p()", false},
		{"do", "do $$ begin perform 1; end $$", false},
		{"lock", "lock table t", false},
		{"listen", "listen ch", false},
		{"unlisten", "unlisten *", false},
		{"notify", "notify ch, 'x'", false},
		{"vacuum", "vacuum", false},
		{"analyze", "analyze t", false},
		{"set", "SET x = 1", false},
		{"set search_path", "set search_path = app, public", false},
		{"reset", "reset all", false},
		{"begin", "begin", false},
		{"start transaction", "start transaction read only", false},
		{"commit", "commit", false},
		{"rollback", "rollback", false},
		{"savepoint", "savepoint s", false},
		{"prepare", "prepare p as select 1", false},
		{"execute", "execute p", false},
		{"deallocate", "deallocate p", false},
		{"discard", "discard all", false},
		{"checkpoint", "checkpoint", false},
		{"security label", "security label on table t is 'x'", false},
		{"import foreign schema", "import foreign schema s from server x into y", false},
		{"load", "load 'auto_explain'", false},
		{"reassign", "reassign owned by a to b", false},
		{"declare cursor", "declare c cursor for select 1", false},
		{"fetch", "fetch next from c", false},
		{"string first", "'select'", false},
		{"number first", "1", false},

		// Unterminated or invalid.
		{"unterminated string", "select 'abc", false},
		{"unterminated doubled quote", "select 'abc''", false},
		{"unterminated quoted identifier", `select "abc`, false},
		{"unterminated block comment", "select 1 /* never closed", false},
		{"unterminated nested comment", "select 1 /* /* nested */ still open", false},
		{"unterminated dollar quote", "select $$abc", false},
		{"mismatched dollar tags", "select $a$ x $b$", false},
		{"unterminated E string", `select E'ends with backslash\'`, false},
		{"E string ends in backslash", `select E'\`, false},
		{"lone dollar", "select 1 $", false},
		{"dollar word without close", "select $abc", false},
		{"NUL byte", "select 1\x00", false},
		{"backslash in bit string", `select B'\'`, false},

		// standard_conforming_strings: both readings must be reads.
		{"backslash in plain string", `select 'C:\path'`, true},
		{"trailing backslash unterminated if scs off", `select 'C:\'`, false},
		{"scs off hides delete", `SELECT 'a\'; DELETE FROM t; --'`, false},
		{"scs off exposes delete", `SELECT 'x\', 'y; delete from t; --'`, false},
		{"E continuation exposes delete", "SELECT E'a'\n'\\', '; DELETE FROM t; --'", false},

		// Numbers and odd tokens.
		{"numbers", "select 1.5e10, .5, 1e-3, 1., 0x1F, 1_000", true},
		{"number glued to into", "select 1into t", false},
		{"exponent glued to into", "select 1e5into t", false},
		{"json operators", `select '{"a":1}'::jsonb -> 'a', a @> '{1}' from t`, true},
		{"array slice", "select (array[1,2,3])[1:2]", true},
		{"interval", "select now() - interval '1 day'", true},
		{"non-ASCII identifiers", `select größe, "ÄÖ" from maße`, true},
		{"operators", "select 1 + -2 * 3 / 4 % 5 <> 6 !~~ 'x'", true},
		{"operator before comment", "select 2*/*c*/3", true},

		// Realistic ORM and driver queries.
		{"rails", `SELECT  "posts".* FROM "posts" WHERE "posts"."author_id" = $1 ORDER BY "posts"."created_at" DESC LIMIT $2`, true},
		{"rails marginalia", `/*application:Blog,controller:posts,action:index*/ SELECT "posts".* FROM "posts" LIMIT $1`, true},
		{"hibernate", "select u1_0.id,u1_0.name from users u1_0 where u1_0.id=?", true},
		{"gorm", `SELECT * FROM "users" WHERE "users"."deleted_at" IS NULL AND id = $1 ORDER BY "users"."id" LIMIT 1`, true},
		{"django", `SELECT "app_item"."id", "app_item"."name" FROM "app_item" WHERE "app_item"."name"::text LIKE 'a%' ORDER BY "app_item"."id" ASC`, true},
		{"sqlc read", "-- name: GetAuthor :one\nSELECT id, name, bio FROM authors\nWHERE id = $1 LIMIT 1", true},
		{"sqlc write", "-- name: CreateAuthor :one\nINSERT INTO authors (name, bio) VALUES ($1, $2)\nRETURNING *", false},
		{"ent count", `SELECT COUNT(*) FROM "users" WHERE "users"."age" > $1`, true},
		{"orm insert", `INSERT INTO "users" ("email","created_at") VALUES ($1,$2) RETURNING "id"`, false},
		{"orm update", `UPDATE "users" SET "name"=$1,"updated_at"=$2 WHERE "id" = $3`, false},
		{"orm upsert", `INSERT INTO "t" ("k","v") VALUES ($1,$2) ON CONFLICT ("k") DO UPDATE SET "v"=excluded."v"`, false},
		{"orm lock", `SELECT * FROM "jobs" WHERE "state" = $1 ORDER BY "id" LIMIT 10 FOR UPDATE SKIP LOCKED`, false},
		{"pgx type query", "select t.oid, t.typname from pg_type t where t.oid = any($1)", true},
		{"fetch first", "select * from t order by 1 nulls last fetch first 5 rows only", true},
		{"tablesample", "select * from t tablesample system (10)", true},
		{"window", "select a, row_number() over (partition by b order by c) from t", true},
		{"lateral join", "select * from a cross join lateral (select * from b where b.a = a.id limit 1) x", true},
	}
	require.GreaterOrEqual(t, len(tests), 120)
	seen := make(map[string]bool, len(tests))
	for _, tt := range tests {
		require.False(t, seen[tt.name], "duplicate case name %q", tt.name)
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.wantReadOnly, IsReadOnly(tt.sql), "IsReadOnly(%q)", tt.sql)
		})
	}
}

func TestSideEffectFuncsSorted(t *testing.T) {
	names := sideEffectFuncs[:]
	assert.True(t, sort.StringsAreSorted(names), "sideEffectFuncs must stay sorted for binary search")
	for _, n := range names {
		assert.Equal(t, strings.ToLower(n), n, "names are lower case")
		assert.True(t, isSideEffectFunc(n, false), n)
		assert.True(t, isSideEffectFunc(strings.ToUpper(n), true), n)
		assert.False(t, isSideEffectFunc(strings.ToUpper(n), false), n)
		assert.False(t, isSideEffectFunc(n+"x", true), n)
	}
	for _, p := range sideEffectPrefixes {
		assert.Equal(t, strings.ToLower(p), p, "prefixes are lower case")
	}
}

// allocQueries are realistic queries, short and long, read and write.
var allocQueries = []string{
	"select 1",
	"SELECT * FROM users WHERE id = $1",
	"insert into t values (1)",
	"select nextval('s')",
	`SELECT 'a\'; DELETE FROM t; --'`,
	"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
	"select * from t for update skip locked",
	"select 1 /* /* nested */ ; delete */",
	"SELECT $a$ $$ ;delete $a$",
	`select U&"col", E'it\'s', B'01', "quoted" from t`,
	benchQuery50,
	benchQuery200,
	benchQuery800,
	benchQuery2000,
}

func TestIsReadOnlyZeroAllocs(t *testing.T) {
	var sink bool
	allocs := testing.AllocsPerRun(100, func() {
		for _, q := range allocQueries {
			sink = IsReadOnly(q) != sink
		}
	})
	assert.Zero(t, allocs, "IsReadOnly must not allocate")
}
