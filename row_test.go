package dbrouter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sqlRow must be laid out as this Go's sql.Row, or QueryRow takes the slow
// path: this test says when a Go release changed it.
func TestRowLayoutMatchesDatabaseSQL(t *testing.T) {
	assert.True(t, rowLayoutOK, "database/sql.Row changed: update sqlRow")
}

// The slow path (wrapRow) reads rows and errors as a Row from *sql.DB does.
func TestWrapRow(t *testing.T) {
	f := newFakeNodes(t, 0)
	rows, err := f.dbs[0].QueryContext(context.Background(), "SELECT 1")
	require.NoError(t, err)
	var name string
	require.NoError(t, wrapRow(rows, nil).Scan(&name))
	assert.Equal(t, "primary", name)
	assert.ErrorIs(t, wrapRow(nil, ErrClosed).Scan(&name), ErrClosed)
	rows, err = f.dbs[0].QueryContext(context.Background(), "SELECT 1")
	require.NoError(t, err)
	require.NoError(t, rows.Close())
	assert.Error(t, wrapRow(rows, nil).Scan(&name), "closed rows")
}
