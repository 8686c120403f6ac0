package endwell

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
)

// The idle lifecycle: a connection whose response is done goes to the pool, where a watcher
// goroutine waits on it so that a server closing it is noticed at once (never a socket left
// in CLOSE_WAIT); the pool retires it on idle timeout, idle limits and lifetime; each
// retirement is a graceful close in the background with its reason.

// aLongTimeAgo is a read deadline in the past: it makes a blocked read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// putIdle hands pc back to the pool after a complete exchange, with its watcher started.
func (t *Transport) putIdle(pc *conn) {
	pc.setState(stateIdle)
	pc.startWatch()
	t.pool.Put(pc.entry.Load())
	t.doneActive(pc)
}

// startWatch starts a watch period: the connection's watcher goroutine (started on the
// first idle period, and kept for the connection's life so that going idle costs no
// allocation) blocks reading the idle connection until the server speaks or a taker
// interrupts it.
func (pc *conn) startWatch() {
	if pc.watchKick == nil {
		pc.watchKick = make(chan struct{}, 1)
		pc.watchRes = make(chan error, 1)
		// The idle watcher: see watchLoop. It exits once the connection is dead.
		go pc.watchLoop()
	}
	pc.watching = true
	pc.kickWatcher()
}

// kickWatcher wakes the watcher without blocking: to start a watch period, or to make it
// exit once the connection is dead. A kick is dropped only when one is already pending,
// which wakes the watcher all the same.
func (pc *conn) kickWatcher() {
	if pc.watchKick == nil {
		return
	}
	select {
	case pc.watchKick <- struct{}{}:
	default:
	}
}

// watchLoop runs the watch periods. In each, it blocks reading the idle connection, so that
// a server closing it (close_notify, FIN, RST, a 408, garbage) is seen at once, and sends
// what the read returned on watchRes, where exactly one stopWatch takes it.
func (pc *conn) watchLoop() {
	for range pc.watchKick {
		if pc.dead() {
			// The kick may have started a period that a teardown's stopWatch waits on.
			select {
			case pc.watchRes <- net.ErrClosed:
			default:
			}
			return
		}
		_, err := pc.br.Peek(1)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			pc.watchRes <- err // a taker's interruption: it waits for this
			continue
		}
		// The server spoke first on an idle connection: it is closing it. Unless a
		// request took the connection meanwhile (it then sees the result), end it.
		mine := pc.t.pool.TakeIdle(pc.entry.Load())
		pc.watchRes <- err
		if mine {
			pc.endPeerClosed()
		}
	}
}

// stopWatch ends the watch period, interrupting the watcher's read if need be. It reports
// whether the connection is still usable: the watcher saw nothing but its interruption.
func (pc *conn) stopWatch() bool {
	if !pc.watching {
		return true
	}
	pc.watching = false
	pc.nc.SetReadDeadline(aLongTimeAgo)
	pc.watchErr = <-pc.watchRes
	pc.nc.SetReadDeadline(time.Time{})
	return errors.Is(pc.watchErr, os.ErrDeadlineExceeded) && pc.br.Buffered() == 0 && !pc.dead()
}

// takeFromIdle readies a connection that Get took from the idle list. A connection that the
// server closed meanwhile is ended (peer_closed) and reported false.
func (pc *conn) takeFromIdle() bool {
	if pc.stopWatch() {
		return true
	}
	pc.endPeerClosed()
	return false
}

// endPeerClosed closes a connection that the server closed while it was idle: gracefully,
// answering its close_notify with ours before our FIN (RFC 8446, section 6.1), even when
// its FIN has arrived too; only a server that reset the connection gets nothing.
func (pc *conn) endPeerClosed() {
	pc.peerClosed.Store(true)
	pc.report(proto.Outcome{Kind: proto.PeerClosed})
}

// retire is the pool's Retire: the pool dropped pc on its own. A connection retired by
// Transport.Close is aborted; by Shutdown, closed gracefully within Shutdown's deadline.
func (t *Transport) retire(pc *conn, why pool.Reason) {
	if why == pool.Closed && t.state.Load() == stateClosed {
		pc.abort(ErrClosed)
		return
	}
	o := proto.Outcome{Kind: proto.Retired, Reason: retireReason(why)}
	if d := t.idleDeadline.Load(); why == pool.Closed && d != 0 {
		o.Deadline = time.Unix(0, d)
	}
	pc.report(o)
}

// lifetime is the pool's Lifetime: MaxConnLifetime with ±10% jitter, so that connections
// made together do not all expire together (golang/go#79664).
func (t *Transport) lifetime() time.Duration {
	d := t.MaxConnLifetime
	if d <= 0 {
		return 0
	}
	return jitter(d, rand.Int64N(2001)-1000)
}

// jitter returns d scaled by 1 + basisPoints/10000: basisPoints in [-1000, 1000] is ±10%.
func jitter(d time.Duration, basisPoints int64) time.Duration {
	return d + time.Duration(int64(d)/10000*basisPoints)
}

// idleLayer is the top of every HTTP/1.1 connection's teardown stack: it stops the idle
// watcher, so that the layers below own the connection's reads, and passes on what the
// watcher saw of the server's goodbye.
type idleLayer struct {
	pc  *conn
	tls *shutdown.TLS // the TLS layer below, or nil
}

func (l *idleLayer) Graceful(ctx context.Context, p *shutdown.Progress) error {
	pc := l.pc
	pc.stopWatch()
	pc.kickWatcher() // the connection is dead: the watcher exits
	if l.tls != nil && pc.peerClosed.Load() && pc.watchErr == io.EOF && !l.tls.Raw.PeerFIN() && !l.tls.Raw.PeerReset() {
		// TLS said EOF while TCP did not: the server's close_notify.
		l.tls.PeerClosed = true
	}
	return nil
}

// Abort makes the watcher exit: if it is reading, the socket's close below ends its read.
func (l *idleLayer) Abort() { l.pc.kickWatcher() }
