// Package sqlclass decides whether a SQL string is provably read-only, so the
// router may send it to a PostgreSQL hot-standby replica.
//
// [IsReadOnly] lexes a query in one linear pass (two in a rare case, see
// below), allocates nothing, never panics and keeps no state. [Classify], what
// the router calls on every Query and QueryRow, gives the same answer from a
// lock-free cache of the statements it has seen, so a repeated statement is
// not lexed again. Both are safe for concurrent use.
//
// # How a query is read
//
// IsReadOnly is a real lexer for PostgreSQL's SQL syntax, not an upper-case
// and substring search. It skips whitespace, `--` line comments and nested
// `/* */` block comments, and it knows every kind of literal: '...' with
// doubled quotes, E'...' escape strings, B'...', X'...', N'...', U&'...' and
// U&"..." Unicode forms, string continuation across newlines, dollar-quoted
// strings ($$...$$, $tag$...$tag$; $1 is a parameter), and "quoted
// identifiers". Keywords are compared case-insensitively. Nothing inside a
// literal, comment or quoted identifier is ever taken for a keyword.
//
// # What counts as read-only
//
// A query is read-only when all of these hold:
//
//   - It is exactly one statement: a single trailing semicolon, then only
//     whitespace and comments, is allowed; any token after it is not.
//   - Its first keyword, after any opening parentheses, is SELECT, VALUES,
//     TABLE or WITH; or it is SHOW; or it is EXPLAIN (with ANALYZE, VERBOSE or
//     a parenthesized option list) of a statement starting with one of the
//     first four. Every other leading keyword (INSERT, COPY, DDL, SET, BEGIN,
//     CALL, DO, LOCK, VACUUM, ...) is a write.
//   - No INSERT, UPDATE, DELETE, MERGE or INTO keyword appears anywhere in it.
//     This catches data-modifying CTEs, SELECT ... INTO, EXPLAIN ANALYZE of a
//     write and FOR UPDATE, at the price of sending the odd query with a
//     column named "update" to the primary.
//   - No row-locking clause: FOR followed by UPDATE, NO, KEY or SHARE.
//   - No call of a function with side effects, such as nextval, setval,
//     pg_advisory_lock, lo_import or set_config, or of one that runs SQL
//     given as text, such as dblink or query_to_xml (see sideeffect.go for
//     the full table). A call is an identifier followed by "(", so
//     pg_catalog.nextval('s') is a call and a column named nextval is not.
//     A quoted name is matched case-sensitively, as PostgreSQL resolves it.
//     A U&"..." name before "(" or UESCAPE counts as such a call, since its
//     escapes may spell any name.
//
// An empty or comment-only query, an unterminated literal or comment, a
// lone "$" or a NUL byte is not provably read-only either.
//
// # standard_conforming_strings
//
// Whether a backslash escapes a quote inside a plain '...' literal depends on
// the server setting standard_conforming_strings, which the router cannot
// see. When a plain literal contains a backslash, IsReadOnly lexes the query
// a second time with backslash escapes on and reports true only when both
// readings are read-only. A backslash inside B'...' or X'...' (never valid
// there) makes the query not read-only.
//
// # Limits
//
// The query text is assumed to be UTF-8, as pgx always sets
// client_encoding=UTF8. A user-defined function, a view, a rule or a trigger
// may still write or fail on a standby; no lexer can see that. Callers that
// run such queries should route them to the primary explicitly.
package sqlclass
