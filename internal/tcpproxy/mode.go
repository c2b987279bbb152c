package tcpproxy

import "strconv"

// Mode is how Cut breaks the network.
type Mode int

const (
	// Reset closes every open connection with a TCP reset and resets every
	// new connection as soon as it is accepted, like a node that went away.
	Reset Mode = iota
	// Blackhole keeps connections open but lets nothing through in either
	// direction, and accepts new connections without forwarding them, like
	// a silent network partition: clients hang until their own timeouts.
	Blackhole
)

// String returns "reset", "blackhole" or "Mode(N)".
func (m Mode) String() string {
	switch m {
	case Reset:
		return "reset"
	case Blackhole:
		return "blackhole"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// netState is the network's condition: an immutable snapshot, replaced whole
// under Proxy.mu and read lock-free by the copy loops.
type netState struct {
	cut    bool
	mode   Mode          // how it is cut; meaningful only when cut
	healed chan struct{} // closed when this blackhole ends; nil unless blackholed
}

// forwarding is the state of a proxy that is not cut.
var forwarding = &netState{}

func (s *netState) resetting() bool  { return s.cut && s.mode == Reset }
func (s *netState) blackholed() bool { return s.cut && s.mode == Blackhole }

// Cut breaks the network between clients and the upstream until Restore; see
// Mode for what each mode does and the package documentation for details. A
// mode other than Reset or Blackhole is taken as Reset. Cutting an already
// cut proxy switches it to the new mode: Cut(Reset) during a blackhole resets
// the held connections; Cut(Blackhole) during a reset holds new connections.
func (p *Proxy) Cut(mode Mode) {
	if mode != Blackhole {
		mode = Reset
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.state.Load()
	switch mode {
	case Blackhole:
		if old.blackholed() {
			return
		}
		p.state.Store(&netState{cut: true, mode: Blackhole, healed: make(chan struct{})})
	case Reset:
		// Drop the connections before waking any copy loop parked by a
		// blackhole, so none of them delivers the bytes it holds.
		for l := range p.links {
			p.dropLocked(l, true)
		}
		p.state.Store(&netState{cut: true, mode: Reset})
		if old.blackholed() {
			close(old.healed)
		}
	}
}

// Restore ends a cut: new connections are forwarded again. After Blackhole,
// the connections that were held resume and get the bytes held back, and
// connections accepted during the blackhole are forwarded now. After Reset
// there is nothing left to resume. Restore on a proxy that is not cut does
// nothing.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.state.Load()
	p.state.Store(forwarding)
	if old.blackholed() {
		close(old.healed)
	}
}
