package sqlclass

// sideEffectFuncs lists, in lower case and sorted, the built-in functions
// whose call makes a query not read-only: they write (sequences, large
// objects, WAL, replication slots, files, BRIN summaries, GIN pending lists),
// take advisory locks, notify, change session or server state, act on other
// backends, assign a transaction id (txid_current, pg_current_xact_id), read
// session state that only the primary's connection has (currval, lastval),
// only work on a primary (the current WAL positions and file names, backups)
// or would pause replay on whichever replica they reached
// (pg_wal_replay_pause): all of which either fail on a hot standby or must
// happen on the connection that gets the writes. It also
// holds functions that run SQL passed to them as text, which the lexer
// cannot see into (dblink, query_to_xml, ts_stat). A test keeps it sorted;
// lookups binary-search it without allocating.
var sideEffectFuncs = [...]string{
	"brin_desummarize_range",
	"brin_summarize_new_values",
	"brin_summarize_range",
	"currval",
	"dblink",
	"dblink_connect",
	"dblink_connect_u",
	"dblink_exec",
	"dblink_send_query",
	"gin_clean_pending_list",
	"lastval",
	"nextval",
	"pg_advisory_lock",
	"pg_advisory_lock_shared",
	"pg_advisory_unlock",
	"pg_advisory_unlock_all",
	"pg_advisory_unlock_shared",
	"pg_advisory_xact_lock",
	"pg_advisory_xact_lock_shared",
	"pg_backup_start",
	"pg_backup_stop",
	"pg_cancel_backend",
	"pg_copy_logical_replication_slot",
	"pg_copy_physical_replication_slot",
	"pg_create_logical_replication_slot",
	"pg_create_physical_replication_slot",
	"pg_create_restore_point",
	"pg_current_wal_flush_lsn",
	"pg_current_wal_insert_lsn",
	"pg_current_wal_lsn",
	"pg_current_xact_id",
	"pg_current_xact_id_if_assigned",
	"pg_current_xlog_flush_location",
	"pg_current_xlog_insert_location",
	"pg_current_xlog_location",
	"pg_drop_replication_slot",
	"pg_file_rename",
	"pg_file_sync",
	"pg_file_unlink",
	"pg_file_write",
	"pg_import_system_collations",
	"pg_logical_emit_message",
	"pg_logical_slot_get_binary_changes",
	"pg_logical_slot_get_changes",
	"pg_notify",
	"pg_promote",
	"pg_reload_conf",
	"pg_replication_slot_advance",
	"pg_rotate_logfile",
	"pg_sequence_last_value",
	"pg_start_backup",
	"pg_stat_statements_reset",
	"pg_stop_backup",
	"pg_switch_wal",
	"pg_switch_xlog",
	"pg_terminate_backend",
	"pg_try_advisory_lock",
	"pg_try_advisory_lock_shared",
	"pg_try_advisory_xact_lock",
	"pg_try_advisory_xact_lock_shared",
	"pg_wal_replay_pause",
	"pg_wal_replay_resume",
	"pg_walfile_name",
	"pg_walfile_name_offset",
	"pg_xlog_replay_pause",
	"pg_xlog_replay_resume",
	"pg_xlogfile_name",
	"pg_xlogfile_name_offset",
	"query_to_xml",
	"query_to_xml_and_xmlschema",
	"query_to_xmlschema",
	"set_config",
	"setval",
	"ts_stat",
	"txid_current",
	"txid_current_if_assigned",
}

// sideEffectPrefixes are name prefixes of whole families of such functions:
// every large-object function (lo_create, lo_import, lo_unlink, lo_put,
// lo_from_bytea, ...), every replication origin function, and every
// statistics reset (pg_stat_reset, pg_stat_reset_shared, ...).
var sideEffectPrefixes = [...]string{
	"lo_",
	"pg_replication_origin_",
	"pg_stat_reset",
}

// isSideEffectFunc reports whether a call of the function name has side
// effects. An unquoted name is folded to lower case (ASCII only, as
// PostgreSQL does); a quoted one is compared exactly.
func isSideEffectFunc(name string, fold bool) bool {
	for _, p := range sideEffectPrefixes {
		if len(name) >= len(p) && compareName(name[:len(p)], p, fold) == 0 {
			return true
		}
	}
	lo, hi := 0, len(sideEffectFuncs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch c := compareName(name, sideEffectFuncs[m], fold); {
		case c == 0:
			return true
		case c < 0:
			hi = m
		default:
			lo = m + 1
		}
	}
	return false
}

// compareName compares name, lowered if fold, with the lower-case want, like
// strings.Compare.
func compareName(name, want string, fold bool) int {
	n := min(len(name), len(want))
	for i := 0; i < n; i++ {
		c := name[i]
		if fold && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			if c < want[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(name) < len(want):
		return -1
	case len(name) > len(want):
		return 1
	}
	return 0
}
