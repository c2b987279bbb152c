package fakedriver

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
)

// ErrUnknownName is returned (wrapped, with the name) by Driver.Open and
// Driver.OpenConnector when the DSN is not the name of one of the driver's
// connectors.
var ErrUnknownName = errors.New("fakedriver: no connector with that name")

// Driver is a driver.Driver and driver.DriverContext over a fixed set of
// connectors, where a DSN is a connector's name. Register (or sql.Register
// with a name of your own) makes the nodes reachable through
// sql.Open(driverName, nodeName). It is safe for concurrent use.
type Driver struct {
	nodes map[string]*Connector // read-only after construction
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.DriverContext = (*Driver)(nil)
)

// NewDriver returns a Driver over nodes. It fails if a node is nil or two
// nodes share a name.
func NewDriver(nodes ...*Connector) (*Driver, error) {
	d := &Driver{nodes: make(map[string]*Connector, len(nodes))}
	for i, c := range nodes {
		if c == nil {
			return nil, fmt.Errorf("fakedriver: NewDriver: node %d is nil", i)
		}
		if _, dup := d.nodes[c.name]; dup {
			return nil, fmt.Errorf("fakedriver: NewDriver: two nodes named %q", c.name)
		}
		d.nodes[c.name] = c
	}
	return d, nil
}

// registered numbers the driver names Register makes.
var registered atomic.Uint64

// Register registers a Driver over nodes with database/sql under a new name,
// "fakedriver-1", "fakedriver-2", …, and returns that name, for code that
// takes a driver name and DSNs: sql.Open(name, node.Name()). database/sql
// keeps registered drivers for the life of the process, so each call leaves
// one behind; call it once per test, not in a loop. It fails as NewDriver does.
func Register(nodes ...*Connector) (driverName string, err error) {
	d, err := NewDriver(nodes...)
	if err != nil {
		return "", err
	}
	driverName = "fakedriver-" + strconv.FormatUint(registered.Add(1), 10)
	sql.Register(driverName, d)
	return driverName, nil
}

// Open opens a connection to the connector named name, as Connect with
// context.Background would.
func (d *Driver) Open(name string) (driver.Conn, error) {
	c, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	return c.Connect(context.Background())
}

// OpenConnector returns the connector named name. It is what sql.Open uses.
func (d *Driver) OpenConnector(name string) (driver.Connector, error) {
	return d.lookup(name)
}

func (d *Driver) lookup(name string) (*Connector, error) {
	c, ok := d.nodes[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownName, name)
	}
	return c, nil
}
