package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/dbrouter/dbrouter"
)

// The bank's data: accounts and the transfers between them. Every call
// takes the context of its request, which carries the client's session
// when it has one (see server.go).

// schema creates the tables when they are missing. Balances and amounts are
// whole units in a bigint; a balance never goes below zero.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS accounts (
		id      bigserial PRIMARY KEY,
		owner   text   NOT NULL,
		balance bigint NOT NULL CHECK (balance >= 0)
	)`,
	`CREATE TABLE IF NOT EXISTS transfers (
		id      bigserial PRIMARY KEY,
		from_id bigint NOT NULL REFERENCES accounts (id),
		to_id   bigint NOT NULL REFERENCES accounts (id),
		amount  bigint NOT NULL CHECK (amount > 0),
		at      timestamptz NOT NULL DEFAULT now()
	)`,
}

// createSchema creates the tables on the primary (DDL is a write) when they
// are missing, then waits until the replicas have replayed them: a read on
// a replica still without them would fail. It waits at most schemaWait for
// that (a replica that lags for long is the router's to keep out of
// reads, with dbrouter.WithMaxLag), going by the positions the router's
// probes report.
func createSchema(ctx context.Context, db *dbrouter.DB) error {
	pctx := dbrouter.UsePrimary(ctx)
	var exists bool
	if err := db.QueryRowContext(pctx, "SELECT to_regclass('accounts') IS NOT NULL AND to_regclass('transfers') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("looking for the schema: %w", err)
	}
	if exists {
		return nil
	}
	for _, q := range schema {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("creating the schema: %w", err)
		}
	}
	var lsn string
	if err := db.QueryRowContext(pctx, "SELECT (pg_current_wal_lsn() - '0/0')::text").Scan(&lsn); err != nil {
		return fmt.Errorf("creating the schema: %w", err)
	}
	target, err := strconv.ParseUint(lsn, 10, 64)
	if err != nil {
		return fmt.Errorf("creating the schema: WAL position %q: %w", lsn, err)
	}
	ctx, cancel := context.WithTimeout(ctx, schemaWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !replayed(db.Status(), target) {
		select {
		case <-ctx.Done():
			return nil // serve all the same
		case <-tick.C:
		}
	}
	return nil
}

// schemaWait bounds how long createSchema waits for the replicas.
const schemaWait = 15 * time.Second

// replayed reports whether every replica that is up has replayed the WAL
// up to position lsn.
func replayed(s dbrouter.Status, lsn uint64) bool {
	for _, n := range s.Nodes {
		if n.Role == dbrouter.RoleReplica && n.State == dbrouter.StateUp && n.LSN < lsn {
			return false
		}
	}
	return true
}

// Account is one account, as the API shows it.
type Account struct {
	ID       int64  `json:"id"`
	Owner    string `json:"owner"`
	Balance  int64  `json:"balance"`
	ServedBy string `json:"served_by,omitempty"` // the node that served the read; not on POST
}

// Transfer is one transfer, as the API shows it.
type Transfer struct {
	ID     int64 `json:"id"`
	From   int64 `json:"from"`
	To     int64 `json:"to"`
	Amount int64 `json:"amount"`
}

// Errors of the bank's calls that are the client's doing; the handlers turn
// them into 404 and 409. Any other error is the database's.
var (
	errNoAccount         = errors.New("no such account")
	errInsufficientFunds = errors.New("insufficient funds")
	errBalanceOverflow   = errors.New("the balance would exceed the largest one an account holds")
)

// maxAmount bounds opening balances and transfer amounts (a thousand
// trillion units), so that sums of a few of them stay far from overflowing
// a bigint.
const maxAmount = 1_000_000_000_000_000

// createAccount inserts an account on the primary and returns it.
func createAccount(ctx context.Context, db *dbrouter.DB, owner string, balance int64) (Account, error) {
	a := Account{Owner: owner, Balance: balance}
	err := db.QueryRowContext(ctx, "INSERT INTO accounts (owner, balance) VALUES ($1, $2) RETURNING id", owner, balance).Scan(&a.ID)
	return a, err
}

// getAccount reads an account, tagged with t so that the statement hook
// tells which node served it. It returns errNoAccount when there is none
// (on that node).
func getAccount(ctx context.Context, db *dbrouter.DB, t *tag, id int64) (Account, error) {
	a := Account{ID: id}
	err := db.QueryRowContext(ctx, t.prefix+"SELECT owner, balance FROM accounts WHERE id = $1", id).Scan(&a.Owner, &a.Balance)
	a.ServedBy = t.servedBy()
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("account %d: %w", id, errNoAccount)
	}
	return a, err
}

// listAccounts reads up to limit accounts with an id above after, in id
// order, tagged with t; it returns them and the node that served them.
func listAccounts(ctx context.Context, db *dbrouter.DB, t *tag, after int64, limit int) ([]Account, string, error) {
	rows, err := db.QueryContext(ctx, t.prefix+"SELECT id, owner, balance FROM accounts WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
	node := t.servedBy()
	if err != nil {
		return nil, node, err
	}
	defer rows.Close()
	list := []Account{}
	for rows.Next() {
		var a Account
		if err := rows.Scan(&a.ID, &a.Owner, &a.Balance); err != nil {
			return nil, node, err
		}
		list = append(list, a)
	}
	return list, node, rows.Err()
}

// transfer moves amount from one account to another in one transaction on
// the primary. It locks both rows in id order (SELECT … ORDER BY id FOR
// UPDATE locks rows in the order it returns them), so that two transfers
// between the same accounts in opposite directions wait for each other
// instead of deadlocking. from and to must differ and amount must be
// positive; the handler checks both.
func transfer(ctx context.Context, db *dbrouter.DB, from, to, amount int64) (Transfer, error) {
	t := Transfer{From: from, To: to, Amount: amount}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return t, err
	}
	defer tx.Rollback() // after Commit, a no-op

	rows, err := tx.QueryContext(ctx, "SELECT id, balance FROM accounts WHERE id IN ($1, $2) ORDER BY id FOR UPDATE", from, to)
	if err != nil {
		return t, err
	}
	balances := make(map[int64]int64, 2)
	for rows.Next() {
		var id, balance int64
		if err := rows.Scan(&id, &balance); err != nil {
			rows.Close()
			return t, err
		}
		balances[id] = balance
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return t, err
	}
	for _, id := range []int64{from, to} {
		if _, ok := balances[id]; !ok {
			return t, fmt.Errorf("account %d: %w", id, errNoAccount)
		}
	}
	if balances[from] < amount {
		return t, fmt.Errorf("account %d holds %d, less than %d: %w", from, balances[from], amount, errInsufficientFunds)
	}
	if balances[to] > math.MaxInt64-amount {
		return t, fmt.Errorf("account %d: %w", to, errBalanceOverflow)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance - $1 WHERE id = $2", amount, from); err != nil {
		return t, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", amount, to); err != nil {
		return t, err
	}
	if err := tx.QueryRowContext(ctx, "INSERT INTO transfers (from_id, to_id, amount) VALUES ($1, $2, $3) RETURNING id", from, to, amount).Scan(&t.ID); err != nil {
		return t, err
	}
	return t, tx.Commit()
}
