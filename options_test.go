package dbrouter

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaults(t *testing.T) {
	c := defaultConfig()
	assert.Equal(t, time.Second, c.probeInterval)
	assert.Equal(t, time.Second, c.probeTimeout)
	assert.Equal(t, 2, c.failureThreshold)
	assert.Equal(t, 3*time.Second, c.primaryWait)
	assert.Equal(t, 2*time.Second, c.maxBackoff)
	assert.True(t, c.readOnlyTxOnReplica)
	assert.True(t, c.replicaFallback)
	assert.False(t, c.autoPromote)
	assert.Zero(t, c.maxLagBytes)
	assert.Zero(t, c.maxLagTime)
	assert.Equal(t, SessionCausal(0), c.session)
	assert.Equal(t, PostgreSQL(), c.dialect)
	require.NoError(t, c.validate(1))
	assert.IsType(t, &roundRobin{}, c.balancer)
}
