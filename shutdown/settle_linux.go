//go:build linux

package shutdown

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// The states of a Linux TCP socket (include/net/tcp_states.h) that say it has nothing
// more to hear from the peer.
const (
	tcpTimeWait = 6
	tcpClose    = 7
)

// settle waits for the peer's answer to our FIN once both FINs have crossed: its
// acknowledgement, which closes the connection (no error), or its reset (a peer that had
// closed its socket and was not reading our last words). It reports whether the answer
// was a reset. It returns at once when the socket is not TCP, and with an error when the
// socket is closed under it (the budget's backstop) or its read deadline passes.
//
// It blocks in the network poller, not in a loop: the kernel wakes the socket's waiters
// when its state changes, on the acknowledgement as on the reset.
func (c *Conn) settle() (reset bool, err error) {
	rc := c.rawConn()
	if rc == nil {
		return false, nil
	}
	err = rc.Read(func(fd uintptr) bool {
		if e, gerr := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && e != 0 {
			// Reading SO_ERROR clears it: what it said is kept in reset.
			if errno := syscall.Errno(e); errno == syscall.ECONNRESET || errno == syscall.EPIPE {
				reset = true
				c.reset.Store(true)
			}
			return true
		}
		info, gerr := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if gerr != nil {
			return true // not TCP: nothing to wait for
		}
		return info.State == tcpClose || info.State == tcpTimeWait
	})
	return reset, err
}
