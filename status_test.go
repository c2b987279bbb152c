package dbrouter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStatusCountsAndNames(t *testing.T) {
	ctx := context.Background()
	f := newFakeNodes(t, 1)
	db := f.router(t)
	for range 3 {
		served(t, db, ctx, "SELECT 1")
	}
	_, err := db.ExecContext(ctx, "DELETE FROM t")
	require.NoError(t, err)
	s := db.Status()
	require.Len(t, s.Nodes, 2)
	assert.Equal(t, "primary", s.Primary)
	p, r := s.Nodes[0], s.Nodes[1]
	assert.Equal(t, RolePrimary, p.ConfiguredRole)
	assert.Equal(t, RoleReplica, r.ConfiguredRole)
	assert.Equal(t, StateUp, r.State)
	assert.True(t, r.Readable)
	assert.Equal(t, uint64(1), p.Writes)
	assert.Equal(t, uint64(3), r.Reads)
	// A copy: changing it changes nothing.
	s.Nodes[0].Name = "changed"
	assert.Equal(t, "primary", db.Status().Nodes[0].Name)
}
