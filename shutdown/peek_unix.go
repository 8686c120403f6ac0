//go:build unix

package shutdown

import (
	"syscall"
)

// peekClosed looks at the socket's receive queue without blocking and without consuming it:
// a zero-byte MSG_PEEK read means the peer's FIN is next.
func (c *Conn) peekClosed() bool {
	rc := c.rc
	if rc == nil {
		return false
	}
	var closed bool
	var buf [1]byte
	// The function returns true at once: this is one non-blocking look, not a wait.
	err := rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case rerr == nil && n == 0:
			closed = true
			c.finPending.Store(true)
		case rerr == syscall.ECONNRESET, rerr == syscall.EPIPE:
			// The peer's reset: the look consumed the socket's pending error, so
			// it is noted here.
			closed = true
			c.noteReadError(rerr)
		}
		return true
	})
	return err == nil && closed
}

// CanLook reports whether Quiet can look at the connection's receive queue: it is a
// socket, on a platform that allows a look that consumes nothing.
func (c *Conn) CanLook() bool { return c.rc != nil }

// Quiet looks once at the socket's receive queue, without blocking and without consuming
// anything: quiet reports that nothing waits there (no byte, no FIN, no reset). known is
// false when the look could not be made (not a socket); a FIN or a reset it finds is noted
// as PeerClosed's look notes it. Quiet allocates nothing; it is not safe for concurrent use
// with itself (the connection's owner calls it).
func (c *Conn) Quiet() (quiet, known bool) {
	if c.rc == nil {
		return false, false
	}
	c.quietRes = quietUnknown
	if err := c.rc.Read(c.quietFn); err != nil {
		return false, false
	}
	return c.quietRes == quietYes, c.quietRes != quietUnknown
}

// What Quiet's look found.
const (
	quietUnknown = iota
	quietYes
	quietNo
)

// quietLook is Quiet's look, made once per connection into a func value (quietFn), so that
// a look allocates nothing. It returns true at once: one non-blocking look, not a wait.
func (c *Conn) quietLook(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), c.quietBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN:
		c.quietRes = quietYes
	case err == nil && n == 0:
		c.quietRes = quietNo
		c.finPending.Store(true)
	case err == nil:
		c.quietRes = quietNo // bytes wait
	case err == syscall.ECONNRESET, err == syscall.EPIPE:
		c.quietRes = quietNo
		c.noteReadError(err)
	}
	return true
}
