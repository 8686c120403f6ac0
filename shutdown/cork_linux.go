//go:build linux

package shutdown

import "syscall"

// cork makes the socket hold what is written next until the FIN that follows it, so that
// a close_notify and the FIN leave in one segment: Linux tacks a FIN onto a segment still
// queued and sends it at once, cork or not (tcp_send_fin). One segment instead of two: one
// packet on the wire, one pass through the peer's network stack and one wake-up of the
// peer for both (on loopback the client's CPU per close did not change measurably: the
// setsockopt costs about what the second segment did). A corked socket sends a held segment
// after 200 ms at the latest, so a FIN that never follows delays the close_notify, never
// loses it; close sends it at once. Sockets that are not TCP are left as they are.
func (c *Conn) cork() {
	if rc := c.rawConn(); rc != nil {
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1)
		})
	}
}
