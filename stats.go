package endwell

import (
	"context"
	"sync"

	"github.com/endwell/endwell/shutdown"
)

// Stats is a snapshot of a transport's connections, from [Transport.Stats].
type Stats struct {
	// Active, Idle and Closing count connections in use by requests, idle in the pool,
	// and being torn down (a graceful close in progress), over all hosts.
	Active, Idle, Closing int
	// Hosts breaks the counts down by pool key: "https://host:port", or the proxy's.
	Hosts map[string]HostStats
	// Closes counts the connections closed so far, by mode, reason and outcome.
	Closes map[CloseKey]uint64
}

// HostStats counts one host's connections.
type HostStats struct {
	Active, Idle, Closing int
}

// CloseKey is how a connection ended, as spans and metrics spell it.
type CloseKey struct {
	Mode    string // "graceful" or "abort"
	Reason  string // "idle_timeout", "body_closed_early", ...
	Outcome string // "clean", "peer_silent", "timed_out", "aborted", "failed"
}

// closeStats counts teardowns in progress per host and closes by kind.
type closeStats struct {
	mu      sync.Mutex // guards the following
	closing map[poolKey]int
	closes  map[CloseKey]uint64
}

// Stats returns a snapshot of the transport's connections. It is cheap enough to poll: it
// takes the pool's lock and the statistics' lock once each, and does no I/O.
func (t *Transport) Stats() Stats {
	t.init()
	ps := t.pool.Stats()
	s := Stats{
		Active: ps.Active,
		Idle:   ps.Idle,
		Hosts:  make(map[string]HostStats, len(ps.Keys)),
	}
	for k, ks := range ps.Keys {
		s.Hosts[k.String()] = HostStats{Active: ks.Active, Idle: ks.Idle} // distinct keys spell differently
	}
	cs := &t.stats
	cs.mu.Lock()
	for k, n := range cs.closing {
		name := k.String()
		h := s.Hosts[name]
		h.Closing = n
		s.Hosts[name] = h
		s.Closing += n
	}
	s.Closes = make(map[CloseKey]uint64, len(cs.closes))
	for k, n := range cs.closes {
		s.Closes[k] = n
	}
	cs.mu.Unlock()
	return s
}

// teardownStarted counts pc's teardown as in progress.
func (t *Transport) teardownStarted(pc *conn) {
	if pc.h3 != nil {
		t.alts.down(pc.h3)
	}
	cs := &t.stats
	cs.mu.Lock()
	if cs.closing == nil {
		cs.closing = make(map[poolKey]int)
		cs.closes = make(map[CloseKey]uint64)
	}
	cs.closing[pc.key]++
	cs.mu.Unlock()
}

// teardownDone is the Done of every teardown: it runs once pc's socket is closed.
func (pc *conn) teardownDone(ctx context.Context, r *shutdown.Record) {
	t := pc.t
	if h := pc.h3; h != nil && !r.ConnectionCloseSent {
		// An abort's CONNECTION_CLOSE (the layer's abort verb has no Progress to note
		// it in), or quic-go's own.
		if code, sent := h.c.CloseCode(); sent {
			r.ConnectionCloseSent, r.QUICCloseCode = true, code
			r.ClosingPeriod = h.c.ClosingPeriod()
		}
	}
	cs := &t.stats
	cs.mu.Lock()
	if cs.closing[pc.key]--; cs.closing[pc.key] <= 0 {
		delete(cs.closing, pc.key)
	}
	cs.closes[CloseKey{r.Mode.String(), r.Reason, r.Outcome.String()}]++
	cs.mu.Unlock()
	pc.traceClose(ctx, r)
	if h := t.onTeardown; h != nil {
		h(r)
	}
}
