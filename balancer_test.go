package dbrouter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBalancers(t *testing.T) {
	ctx := context.Background()
	t.Run("random reaches every replica", func(t *testing.T) {
		f := newFakeNodes(t, 3)
		db := f.router(t, WithBalancer(Random()))
		counts := map[string]int{}
		for range 300 {
			counts[served(t, db, ctx, "SELECT 1")]++
		}
		assert.Len(t, counts, 3)
		assert.Zero(t, counts["primary"])
	})
	t.Run("least in flight avoids the busy replica", func(t *testing.T) {
		f := newFakeNodes(t, 2)
		db := f.router(t, WithBalancer(LeastInFlight()))
		// Hold rows open on replica1 (through its handle, so it is in use).
		rows, err := f.dbs[1].QueryContext(ctx, "SELECT 1")
		require.NoError(t, err)
		defer rows.Close()
		for range 10 {
			assert.Equal(t, "replica2", served(t, db, ctx, "SELECT 1"))
		}
	})
}
