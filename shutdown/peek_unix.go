//go:build unix

package shutdown

import (
	"syscall"
)

// peekClosed looks at the socket's receive queue without blocking and without consuming it:
// a zero-byte MSG_PEEK read means the peer's FIN is next.
func (c *Conn) peekClosed() bool {
	rc := c.rawConn()
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
