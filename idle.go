package endwell

import (
	"context"
	"math/rand/v2"
	"time"

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
	pc.idleSince = time.Now()
	pc.setState(stateIdle)
	pc.startWatch()
	t.pool.Put(pc.entry.Load())
	t.doneActive(pc)
}

// startWatch starts the idle watcher.
func (pc *conn) startWatch() {
	done := make(chan struct{})
	pc.watchDone = done
	// The idle watcher: it blocks reading the idle connection, so that a server closing
	// it (close_notify, FIN, RST, a 408, garbage) is seen at once. It exits when data or
	// an error arrives, or when a taker interrupts it with a read deadline.
	go func() {
		defer close(done)
		_, err := pc.br.Peek(1)
		pc.watchErr = err
		if pc.interrupting.Load() || pc.dead.Load() {
			return
		}
		// The server spoke first on an idle connection: it is closing it. Unless a
		// request took the connection meanwhile (it then sees watchErr), end it.
		if e := pc.entry.Load(); e != nil && pc.t.pool.TakeIdle(e) {
			pc.endPeerClosed()
		}
	}()
}

// stopWatch interrupts the idle watcher and waits for it to exit. It reports whether the
// connection is still usable: the watcher saw nothing but its interruption.
func (pc *conn) stopWatch() bool {
	done := pc.watchDone
	if done == nil {
		return true
	}
	pc.interrupting.Store(true)
	pc.nc.SetReadDeadline(aLongTimeAgo)
	<-done
	pc.watchDone = nil
	pc.nc.SetReadDeadline(time.Time{})
	pc.interrupting.Store(false)
	return isTimeout(pc.watchErr) && pc.br.Buffered() == 0 && !pc.dead.Load()
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
// answering its close_notify, but without writing anything if it closed TCP too.
func (pc *conn) endPeerClosed() {
	pc.peerClosed.Store(true)
	pc.end(pc.t.closeCtx(), shutdown.Graceful, reasonPeerClosed, nil)
}

// retire is the pool's Retire: the pool dropped pc on its own.
func (t *Transport) retire(pc *conn, why pool.Reason) {
	reason := reasonClose
	switch why {
	case pool.IdleTimeout:
		reason = reasonIdleTimeout
	case pool.IdleLimit:
		reason = reasonIdleLimit
	case pool.MaxLifetime:
		reason = reasonMaxLifetime
	case pool.CloseIdle:
		reason = reasonCloseIdle
	case pool.Closed:
		if t.state.Load() == stateClosed {
			pc.end(context.Background(), shutdown.Abort, reasonClose, ErrClosed)
			return
		}
		reason = reasonShutdown
	}
	pc.end(t.closeCtx(), shutdown.Graceful, reason, nil)
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

// jitter returns d scaled by 1 + perMille/10000: perMille in [-1000, 1000] is ±10%.
func jitter(d time.Duration, perMille int64) time.Duration {
	return d + time.Duration(int64(d)/10000*perMille)
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
	if pc.watchDone != nil {
		pc.stopWatch()
	}
	if l.tls != nil && pc.peerClosed.Load() && pc.watchErr != nil && !pc.raw.PeerFIN() && !pc.raw.PeerReset() && !isTimeout(pc.watchErr) {
		// TLS said EOF while TCP did not: the server's close_notify.
		l.tls.PeerClosed = true
	}
	return nil
}

// Abort does nothing: the socket's close, below, ends the watcher.
func (l *idleLayer) Abort() {}
