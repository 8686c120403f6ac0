//go:build !unix

package shutdown

// peekClosed cannot look at the receive queue on this platform without consuming it.
func (c *Conn) peekClosed() bool { return false }

// Quiet cannot look at the receive queue on this platform without consuming it: known is
// false.
func (c *Conn) Quiet() (quiet, known bool) { return false, false }

// quietLook is never called on this platform.
func (c *Conn) quietLook(fd uintptr) bool { return true }

// CanLook reports false: Quiet cannot look on this platform.
func (c *Conn) CanLook() bool { return false }
