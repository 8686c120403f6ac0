package endwell

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/h1"
	"github.com/endwell/endwell/internal/h2"
	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
)

// conn is one connection of the pool, whatever its protocol: its socket and TLS sessions,
// its ending (decided once, see ending.go), its telemetry. Its protocol hangs off h1, h2
// or h3: exactly one is set once the dial has finished.
type conn struct {
	t      *Transport
	key    poolKey
	entry  atomic.Pointer[pool.Conn[poolKey, *conn]]
	raw    *shutdown.Conn // the TCP socket, watched
	tlsc   *tls.Conn      // the TLS session HTTP runs over, or nil
	tunnel *tls.Conn      // the TLS session to an https proxy under tlsc, or nil
	// tunnelWatch is tunnel as the inner TLS session reads it, watched: its EOF tells
	// the server's close_notify from the end of the tunnel. Nil without a tunnel.
	tunnelWatch *shutdown.Conn
	nc          net.Conn // what HTTP reads and writes: tlsc or raw
	h1          *h1.Conn // the HTTP/1.1 connection over nc, or nil
	h2          *h2.Conn // the HTTP/2 connection over nc, or nil
	h3          *h3Conn  // the HTTP/3 connection, or nil; raw and nc are then nil

	// uses counts the requests using the connection: 1 for HTTP/1.1, streams for HTTP/2
	// and HTTP/3. It goes from 0 to 1 and from 1 to 0 only under t.mu, with the
	// connection's entry in t.active; a multiplexed connection's other changes take no
	// lock (see addActive).
	uses   atomic.Int32
	unused chan struct{} // closed when uses drops to 0, if a teardown waits; guarded by t.mu

	serverAddr string // host:port of the server (the proxy's for http:// through a proxy)
	created    time.Time

	// ended is how the connection ends, decided once by decide's compare-and-swap (see
	// ending.go): the mode, the reason and the cause together. The connection is dead
	// from then on, and requests still using it see the cause.
	ended atomic.Pointer[ending]

	tel   *connTelemetry
	state atomic.Int32 // a connState, for the open_connections metric
}

func newConn(t *Transport, key poolKey, raw *shutdown.Conn, nc net.Conn) *conn {
	pc := &conn{t: t, key: key, raw: raw, nc: nc, created: time.Now()}
	if tc, ok := nc.(*tls.Conn); ok {
		pc.tlsc = tc
	}
	return pc
}

// Dead reports whether the connection's ending was decided.
func (pc *conn) Dead() bool { return pc.ended.Load() != nil }

// Cause returns why the connection was ended, or nil while it lives (and for a
// graceful end).
func (pc *conn) Cause() error {
	if e := pc.ended.Load(); e != nil {
		return e.cause
	}
	return nil
}

// layers builds the connection's teardown stack, top first.
func (pc *conn) layers() []shutdown.Layer {
	if pc.h3 != nil {
		return []shutdown.Layer{pc.h3.c.Layer()} // QUIC: TLS and the socket are its own
	}
	ls := make([]shutdown.Layer, 0, 4)
	var tlsTop *shutdown.TLS
	if pc.tlsc != nil {
		raw := pc.raw
		if pc.tunnelWatch != nil {
			raw = pc.tunnelWatch
		}
		tlsTop = &shutdown.TLS{Conn: pc.tlsc, Raw: raw}
	}
	if pc.h2 != nil {
		ls = append(ls, &h2.Layer{H: pc.h2, TLS: tlsTop})
	} else {
		ls = append(ls, &h1.Layer{C: pc.h1, TLS: tlsTop})
	}
	if tlsTop != nil {
		ls = append(ls, tlsTop)
	}
	if pc.tunnel != nil {
		ls = append(ls, &shutdown.TLS{Conn: pc.tunnel, Raw: pc.raw})
	}
	return append(ls, &shutdown.TCP{Conn: pc.raw, Drain: pc.nc})
}

// ReleaseUse (h2.Owner's) gives one request's use of a multiplexed connection (HTTP/2, HTTP/3) back to
// the pool, as its last use or not. A broken connection is removed from the pool. Under
// DisableKeepAlives, the connection ends gracefully after its last use. Otherwise, when
// the pool drops the connection at this use (it takes no new requests: the server's
// GOAWAY, a Connection: close), dropped ends it.
func (pc *conn) ReleaseUse(broken bool, dropped func()) {
	t := pc.t
	e := pc.entry.Load()
	switch {
	case broken:
		t.pool.Remove(e)
	case t.DisableKeepAlives:
		t.pool.Unshare(e)
		if t.pool.Put(e) {
			pc.Report(proto.Outcome{Kind: proto.Complete}) // keepalives_disabled
		}
	case t.pool.Put(e):
		dropped()
	}
	t.doneActive(pc)
	pc.syncState()
}

// syncState sets a multiplexed connection's state (for the open_connections metric) to
// what its count of uses says: idle at none, active otherwise. Streams start and end
// concurrently, and the count may change between its reading and setState: syncState
// reads it again after, and goes round once more if it changed, so that whichever use
// looks last leaves the state right (a use's start sets active after counting itself).
func (pc *conn) syncState() {
	for {
		inUse := pc.uses.Load() > 0
		if inUse {
			pc.setState(stateActive)
		} else {
			pc.setState(stateIdle)
		}
		if again := pc.uses.Load() > 0; again == inUse {
			return
		}
	}
}

// capacity is how many requests may use pc at once: an HTTP/2 connection's streams, one
// for HTTP/1.1 (HTTP/3's is its own: see dialH3).
func (pc *conn) capacity() int {
	if pc.h2 != nil {
		return pc.h2.Capacity()
	}
	return 1
}

// Unshare is h2.Owner's: the pool hands pc out no more; true when no request uses it.
func (pc *conn) Unshare() bool {
	e := pc.entry.Load()
	return e != nil && pc.t.pool.Unshare(e)
}

// Remove is h2.Owner's: pc leaves the pool for good.
func (pc *conn) Remove() {
	if e := pc.entry.Load(); e != nil {
		pc.t.pool.Remove(e)
	}
}

// GiveBack is h2.Owner's: a use the pool handed out goes back unmade; true when it was the
// last of a connection the pool no longer hands out.
func (pc *conn) GiveBack() bool { return pc.t.pool.Put(pc.entry.Load()) }

// SetCapacity is h2.Owner's: the server's MAX_CONCURRENT_STREAMS changed.
func (pc *conn) SetCapacity(n int) {
	if e := pc.entry.Load(); e != nil {
		pc.t.pool.SetCapacity(e, n)
	}
}
