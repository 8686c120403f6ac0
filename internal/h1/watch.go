package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/shutdown"
)

// The idle watch: a connection whose response is done goes back to the pool, and a server
// closing it while it is idle must be noticed at once, so that its socket is never left in
// CLOSE_WAIT. Once an idle period has lasted watchDelay, a watcher goroutine reads the
// idle connection until the server speaks or a taker interrupts it. A request that takes
// the connection within watchDelay (a busy client's every request) costs no goroutine
// switch and no deadline: one non-blocking look at the socket's receive queue says whether
// the server spoke, or closed, meanwhile.

// watchDelay is how long an idle period lasts before the watcher reads the connection: how
// long, at most, a server's close of an idle connection may wait to be noticed.
const watchDelay = 5 * time.Millisecond

// The watch's states (Conn.watchState).
const (
	watchOff   int32 = iota // in use by a request, or dead
	watchArmed              // idle; watchTimer starts a watch period at watchDelay
	watchOn                 // idle; the watcher reads the connection (or is about to)
)

// startWatch starts an idle period: the watch starts watchDelay from now, unless a taker
// stops it first. A connection whose receive queue can't be looked at (not a socket: a
// DialContext's own net.Conn type, say; or a platform without the look) is watched at
// once, as every connection was before the delay: its taker interrupts the watcher.
func (c *Conn) startWatch() {
	c.watching = true
	c.watchState.Store(watchArmed)
	if !c.lookable {
		c.watchNow()
		return
	}
	c.watchTimer.Reset(watchDelay)
}

// watchNow runs in the timer's goroutine when an idle period has lasted watchDelay: it
// starts a watch period, unless a taker or the teardown stopped the idle period first.
func (c *Conn) watchNow() {
	if !c.watchState.CompareAndSwap(watchArmed, watchOn) {
		return
	}
	if c.watcher.CompareAndSwap(false, true) {
		// The idle watcher: see watchLoop. It is kept for the connection's life, so that
		// a watch period costs no goroutine; it exits once the connection is dead.
		go c.watchLoop()
	}
	c.kickWatcher()
}

// kickWatcher wakes the watcher without blocking: to start a watch period, or to make it
// exit once the connection is dead. A kick is dropped only when one is already pending,
// which wakes the watcher all the same.
func (c *Conn) kickWatcher() {
	if !c.watcher.Load() {
		return
	}
	select {
	case c.watchKick <- struct{}{}:
	default:
	}
}

// watchLoop runs the watch periods. In each, it blocks reading the idle connection, so that
// a server closing it (close_notify, FIN, RST, a 408, garbage) is seen at once, and sends
// what the read returned on watchRes, where exactly one stopWatch takes it.
func (c *Conn) watchLoop() {
	for range c.watchKick {
		if c.owner.Dead() {
			// The kick may have started a period that a teardown's stopWatch waits on.
			select {
			case c.watchRes <- net.ErrClosed:
			default:
			}
			return
		}
		_, err := c.br.Peek(1)
		if errors.Is(err, errDeadline) {
			c.watchRes <- err // a taker's interruption: it waits for this
			continue
		}
		// The server spoke first on an idle connection: it is closing it. Unless a
		// request took the connection meanwhile (it then sees the result), end it.
		mine := c.owner.TakeIdle()
		c.watchRes <- err
		if mine {
			c.endPeerClosed()
		}
	}
}

// stopWatch ends the idle period. It reports whether the connection is still usable: the
// server neither spoke nor closed it meanwhile. A watch period under way is interrupted
// (the watcher's read, with a deadline in the past); before one started, the socket's
// receive queue is looked at once.
func (c *Conn) stopWatch() bool {
	if !c.watching {
		return true
	}
	c.watching = false
	switch {
	case c.watchState.CompareAndSwap(watchArmed, watchOff):
		// No watch period started, and none will: watchNow's compare-and-swap fails.
		c.watchTimer.Stop()
		return c.lookIdle()
	case !c.watchState.CompareAndSwap(watchOn, watchOff):
		// The teardown's Abort ended the idle period: the connection is dead.
		return false
	}
	c.nc.SetReadDeadline(aLongTimeAgo)
	c.watchErr = <-c.watchRes
	c.nc.SetReadDeadline(time.Time{})
	return errors.Is(c.watchErr, errDeadline) && c.br.Buffered() == 0 && !c.owner.Dead()
}

// lookIdle says whether an idle connection that no watcher read is still usable. Nothing
// waiting in the socket's receive queue says so at once. Otherwise (bytes, a FIN, a reset,
// or a platform that can't look), the connection is read for up to watchDelay: over TLS,
// the bytes may be a message that TLS consumes itself (a session ticket), which leaves the
// connection usable; anything HTTP would read, or an EOF, says the server spoke or closed.
func (c *Conn) lookIdle() bool {
	if c.owner.Dead() {
		return false
	}
	if quiet, known := c.raw.Quiet(); quiet && known {
		c.watchErr = nil
		return true
	}
	c.nc.SetReadDeadline(time.Now().Add(watchDelay))
	_, c.watchErr = c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	return errors.Is(c.watchErr, errDeadline) && c.br.Buffered() == 0 && !c.owner.Dead()
}

// TakeFromIdle readies a connection that the pool handed out from its idle list. A
// connection that the server closed meanwhile is reported closed by the peer, and
// TakeFromIdle returns false.
func (c *Conn) TakeFromIdle() bool {
	if c.stopWatch() {
		return true
	}
	c.endPeerClosed()
	return false
}

// endPeerClosed reports a connection that the server closed while it was idle; its
// teardown answers the server's close_notify with ours before our FIN (RFC 8446, section
// 6.1), even when its FIN has arrived too.
func (c *Conn) endPeerClosed() {
	c.peerClosed.Store(true)
	c.owner.Report(proto.Outcome{Kind: proto.PeerClosed})
}

// Layer is the top of an HTTP/1.1 connection's teardown stack: it stops the idle watch,
// so that the layers below own the connection's reads, and passes on what the watch saw
// of the server's goodbye.
type Layer struct {
	C   *Conn
	TLS *shutdown.TLS // the TLS layer below, or nil
}

// Graceful stops the watch and makes the watcher exit. It says nothing itself.
func (l *Layer) Graceful(ctx context.Context, p *shutdown.Progress) error {
	c := l.C
	c.stopWatch()
	c.kickWatcher() // the connection is dead: the watcher exits
	if l.TLS != nil && c.peerClosed.Load() && c.watchErr == io.EOF && !l.TLS.Raw.PeerFIN() && !l.TLS.Raw.PeerReset() {
		// TLS said EOF while TCP did not: the server's close_notify.
		p.Note(shutdown.CloseNotifyReceived)
	}
	return nil
}

// Abort ends the idle watch: an idle period's watch will not start, and the watcher exits
// (if it is reading, the socket's close below ends its read).
func (l *Layer) Abort() {
	l.C.watchState.CompareAndSwap(watchArmed, watchOff)
	l.C.watchTimer.Stop() // set once by New: safe from any goroutine
	l.C.kickWatcher()
}
