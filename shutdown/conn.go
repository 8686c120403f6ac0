package shutdown

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// Conn wraps the raw connection (the TCP socket, under any TLS) and remembers what the peer
// did at the TCP level: whether a read has returned io.EOF (the peer's FIN) or a reset, and
// whether a write has met a reset.
//
// crypto/tls returns io.EOF both for a received close_notify and for a bare FIN at a record
// boundary. Reading TLS through a Conn tells them apart: TLS reporting io.EOF while the Conn
// has not seen EOF means the peer's close_notify arrived.
//
// A Conn is safe for concurrent use as its underlying connection is.
type Conn struct {
	net.Conn
	fin atomic.Bool // a Read returned io.EOF
	// finPending is set when a look at the receive queue saw the FIN next: it is not
	// consumed yet, and the bytes before it (a TLS close_notify, say) can still be read.
	finPending atomic.Bool
	reset      atomic.Bool // a Read, or a look at the receive queue, met the peer's reset
	// writeReset is set when a Write failed on the peer's reset: ECONNRESET, or EPIPE (the
	// reset arrived while our side was still open for writing).
	writeReset atomic.Bool
	rc         syscall.RawConn // the socket's raw access, or nil if it is not a socket

	// Quiet's look (see peek_unix.go): made once, so that a look allocates nothing.
	quietFn  func(fd uintptr) bool
	quietBuf [1]byte
	quietRes int
}

// Watch wraps c. Give the result to tls.Client, and to the TLS and TCP layers.
func Watch(c net.Conn) *Conn {
	w := &Conn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		w.rc, _ = sc.SyscallConn()
	}
	w.quietFn = w.quietLook
	return w
}

// Read reads from the underlying connection, noting a FIN or a reset.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.noteReadError(err)
	}
	return n, err
}

// Write writes to the underlying connection, noting a reset.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		c.writeReset.Store(true)
	}
	return n, err
}

func (c *Conn) noteReadError(err error) {
	switch {
	case err == io.EOF:
		c.fin.Store(true)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		c.reset.Store(true)
	}
}

// PeerFIN reports whether a read has consumed the peer's FIN: nothing is left to read.
func (c *Conn) PeerFIN() bool { return c.fin.Load() }

// finSeen reports whether the peer's FIN was read or seen waiting in the receive queue.
func (c *Conn) finSeen() bool { return c.fin.Load() || c.finPending.Load() }

// PeerReset reports whether a read has seen the peer's reset.
func (c *Conn) PeerReset() bool { return c.reset.Load() }

// resetSeen reports whether a read or a write has met the peer's reset, looking at the
// receive queue once more (without blocking and without consuming anything, where the
// platform allows) for a reset that no call has met yet.
func (c *Conn) resetSeen() bool {
	if c.reset.Load() || c.writeReset.Load() {
		return true
	}
	c.peekClosed()
	return c.reset.Load()
}

// PeerClosed reports whether the peer has closed TCP: a FIN or reset was read, or one is
// waiting in the receive queue behind no data (checked without blocking and without
// consuming anything, where the platform allows).
func (c *Conn) PeerClosed() bool {
	if c.fin.Load() || c.reset.Load() || c.finPending.Load() {
		return true
	}
	return c.peekClosed()
}

// CloseWrite sends a FIN if the underlying connection can half-close.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

var errNoHalfClose = errors.New("shutdown: connection cannot half-close")

// rawConn returns the underlying socket's raw access, or nil if it is not a socket.
func (c *Conn) rawConn() syscall.RawConn { return c.rc }
