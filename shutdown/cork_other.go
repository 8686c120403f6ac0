//go:build !linux

package shutdown

// cork does nothing here: the close_notify and the FIN leave as two segments.
func (c *Conn) cork() {}
