//go:build !unix

package shutdown

// peekClosed cannot look at the receive queue on this platform without consuming it.
func (c *Conn) peekClosed() bool { return false }
