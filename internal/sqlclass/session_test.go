package sqlclass

import "testing"

func TestLeavesSessionState(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"SET search_path TO app", true},
		{"set statement_timeout = 0", true},
		{"SET SESSION AUTHORIZATION bob", true},
		{"SET ROLE admin", true},
		{"SET TIME ZONE 'UTC'", true},
		{"SET LOCAL search_path TO app", false},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false},
		{"SET CONSTRAINTS ALL DEFERRED", false},
		{"RESET search_path", true},
		{"DISCARD ALL", true},
		{"LISTEN jobs", true},
		{"UNLISTEN *", true},
		{"PREPARE p AS SELECT 1", true},
		{"DEALLOCATE p", true},
		{"LOAD 'auto_explain'", true},
		{"BEGIN", true},
		{"begin isolation level serializable", true},
		{"START TRANSACTION READ ONLY", true},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", true},
		{"DECLARE c CURSOR FOR SELECT 1", false},
		{"CREATE TEMP TABLE t (id int)", true},
		{"create temporary table t (id int)", true},
		{"CREATE TABLE t (id int)", false},
		{"SELECT * INTO TEMP t FROM u", true},
		{"SELECT * INTO t FROM u", false},
		{"SELECT pg_advisory_lock(1)", true},
		{"SELECT pg_try_advisory_lock_shared(1)", true},
		{"SELECT pg_advisory_xact_lock(1)", false},
		{"SELECT set_config('search_path', 'app', false)", true},
		{"SELECT dblink_connect('c', 'dbname=x')", true},
		{"INSERT INTO t VALUES (1)", false},
		{"UPDATE t SET a = 1", false},
		{"SELECT 'SET search_path TO x'", false},
		{"/* SET x = 1 */ SELECT 1", false},
		{"SELECT 1; SET search_path TO app", true},
		{"SELECT 'unterminated", true},
		{"", false},
	} {
		if got := LeavesSessionState(tc.sql); got != tc.want {
			t.Errorf("LeavesSessionState(%q) = %v, want %v", tc.sql, got, tc.want)
		}
	}
}

func TestLeavesSessionStateDoesNotAllocate(t *testing.T) {
	q := "SELECT set_config('search_path', 'app', false); SET LOCAL x = 1"
	if n := testing.AllocsPerRun(100, func() { LeavesSessionState(q) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
