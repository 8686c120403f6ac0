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

// The idle watch: a connection whose response is done goes back to the pool with a watch
// period started, in which a watcher goroutine reads it, so that a server closing it is
// noticed at once (never a socket left in CLOSE_WAIT); a request that takes the connection
// stops the watch first.

// startWatch starts a watch period: the connection's watcher goroutine (started on the
// first idle period, and kept for the connection's life so that going idle costs no
// allocation) blocks reading the idle connection until the server speaks or a taker
// interrupts it.
func (c *Conn) startWatch() {
	if c.watchKick == nil {
		c.watchKick = make(chan struct{}, 1)
		c.watchRes = make(chan error, 1)
		// The idle watcher: see watchLoop. It exits once the connection is dead.
		go c.watchLoop()
	}
	c.watching = true
	c.kickWatcher()
}

// kickWatcher wakes the watcher without blocking: to start a watch period, or to make it
// exit once the connection is dead. A kick is dropped only when one is already pending,
// which wakes the watcher all the same.
func (c *Conn) kickWatcher() {
	if c.watchKick == nil {
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

// stopWatch ends the watch period, interrupting the watcher's read if need be. It reports
// whether the connection is still usable: the watcher saw nothing but its interruption.
func (c *Conn) stopWatch() bool {
	if !c.watching {
		return true
	}
	c.watching = false
	c.nc.SetReadDeadline(aLongTimeAgo)
	c.watchErr = <-c.watchRes
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

// Abort makes the watcher exit: if it is reading, the socket's close below ends its read.
func (l *Layer) Abort() { l.C.kickWatcher() }
