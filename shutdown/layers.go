package shutdown

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// DefaultMaxDrain is the drain cap of a [TCP] layer whose MaxDrain is zero.
const DefaultMaxDrain = 256 << 10

// TLS is the layer that says goodbye with close_notify. Its abort sends nothing: the layer
// below closes the socket, and a close_notify is never written for an aborted connection.
type TLS struct {
	Conn *tls.Conn
	// Raw is the watched connection under Conn.
	Raw *Conn
	// PeerClosed says the peer's close_notify has already been read (an idle connection the
	// server closed): it is recorded as received. A layer above may say the same by noting
	// CloseNotifyReceived in the Progress before this layer runs.
	PeerClosed bool
}

// Graceful sends close_notify: RFC 8446, section 6.1, "each party MUST send a close_notify
// alert before closing its write side of the connection". It does so even when the peer
// has said its goodbye and sent its FIN: a FIN only half-closes TCP, and a peer that
// half-closed (s2n's s2n_shutdown_send, Python's unwrap then shutdown(SHUT_WR)) is still
// reading and waits for our alert. It skips the alert only when the peer has reset the
// connection: nobody is left to read it. A peer that closed its socket altogether answers
// the alert with a reset: it is recorded, and it is no failure of ours (the ending is not
// clean: our goodbye was not read).
func (l *TLS) Graceful(ctx context.Context, p *Progress) error {
	p.ExpectCloseNotify()
	if l.PeerClosed {
		p.Note(CloseNotifyReceived)
	}
	if l.Raw.resetSeen() {
		p.Note(RSTReceived)
		return nil
	}
	// CloseWrite writes the alert under crypto/tls's own 5 s deadline; the budget's
	// backstop closes the socket underneath if ctx ends first. Corked, the alert waits in
	// the socket for the FIN that the layer below sends next, and leaves with it.
	l.Raw.cork()
	if err := l.Conn.CloseWrite(); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if isReset(err) {
			p.Note(RSTReceived)
			if p.Noted(CloseNotifyReceived) || l.Raw.finSeen() {
				// The peer had said goodbye, or closed TCP, and closed its socket
				// before our alert arrived: not our failure.
				return nil
			}
		}
		return err
	}
	p.Note(CloseNotifySent)
	return nil
}

// Abort does nothing: no close_notify is sent; the socket is closed by the layer below.
func (l *TLS) Abort() {}

// TCP is the bottom layer: it sends FIN, drains what the peer still sends until its EOF
// (bounded by the budget and MaxDrain), then closes the socket. Its abort closes the socket
// at once.
type TCP struct {
	Conn *Conn
	// Drain is what the layer reads while draining: the top of the stack that still parses
	// the peer's bytes (the *tls.Conn over Conn, so that the peer's close_notify is seen).
	// Nil means Conn.
	Drain io.Reader
	// MaxDrain caps the bytes drained after our goodbye. Zero means DefaultMaxDrain.
	MaxDrain int64

	closeOnce sync.Once
}

var drainBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// Graceful sends FIN, drains until the peer's EOF, waits for the peer's answer to our FIN
// when the peer had sent its own first, and closes the socket.
func (l *TCP) Graceful(ctx context.Context, p *Progress) (err error) {
	defer func() {
		if cerr := l.close(); err == nil && cerr != nil && ctx.Err() == nil {
			err = cerr
		}
	}()
	p.Expect(FINSent, FINReceived)
	if l.Conn.PeerReset() {
		// The peer reset the connection before our teardown began: there is nobody
		// left to say goodbye to; closing is all there is to do.
		p.Note(RSTReceived)
		return nil
	}
	if err := l.Conn.CloseWrite(); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if isReset(err) {
			p.Note(RSTReceived)
			if p.Noted(CloseNotifyReceived) || l.Conn.finSeen() {
				// The peer had said goodbye, or closed TCP, and our last words drew
				// its reset: nobody is left to hear a FIN; not our failure.
				return nil
			}
		}
		return err
	}
	p.Note(FINSent)
	if l.Conn.PeerFIN() {
		p.Note(FINReceived)
		p.Waiting()
		return l.settle(ctx, p)
	}
	p.Waiting()
	// No read deadline at ctx's deadline: the read could time out before ctx's timer
	// fires and be taken for a failure. The driver's backstop closes the socket once ctx
	// is done, which ends the read below.
	maxDrain := l.MaxDrain
	if maxDrain <= 0 {
		maxDrain = DefaultMaxDrain
	}
	r := l.Drain
	if r == nil {
		r = l.Conn
	}
	bp := drainBufs.Get().(*[]byte)
	defer drainBufs.Put(bp)
	buf := *bp
	for first := true; ; first = false {
		n, rerr := r.Read(buf)
		if first {
			// The peer's answer woke us, likely with the answers of other goodbyes and
			// with responses of requests: let those run before we finish (read on,
			// close, report), as a goodbye is not in a hurry.
			runtime.Gosched()
		}
		if n > 0 {
			p.AddDrained(n)
			if p.rec.DrainBytes > maxDrain {
				return ErrDrainLimit
			}
		}
		if rerr == nil {
			continue
		}
		if l.Conn.PeerFIN() {
			p.Note(FINReceived)
			return l.settle(ctx, p)
		}
		if isReset(rerr) {
			p.Note(RSTReceived)
			if p.Noted(CloseNotifyReceived) || l.Conn.finSeen() {
				// The peer said goodbye and reset rather than waiting for ours (a
				// server that closes with our close_notify unread): not our failure,
				// and not a clean ending either (the reset is recorded).
				return nil
			}
		}
		if r != io.Reader(l.Conn) && rerr == io.EOF {
			// The layer above saw its peer's goodbye while TCP is still open: keep
			// draining the raw socket until the FIN.
			p.Note(CloseNotifyReceived)
			r = l.Conn
			continue
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if ne, ok := rerr.(net.Error); ok && ne.Timeout() {
			return ErrBudget
		}
		return rerr
	}
}

// settle waits, once both FINs have been seen, for the peer's TCP to answer our last
// segment: with its acknowledgement, or with a reset when the peer had closed its socket
// and our goodbye arrived after (the reset is recorded; it is no failure of ours). When
// the peer's FIN came after ours, the answer has long arrived: this is one look.
func (l *TCP) settle(ctx context.Context, p *Progress) error {
	reset, err := l.Conn.settle()
	if reset {
		p.Note(RSTReceived)
	}
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

func (l *TCP) close() error {
	var err error
	l.closeOnce.Do(func() {
		l.Conn.SetDeadline(time.Now()) // wake any reader or writer still inside
		err = l.Conn.Close()
	})
	return err
}

// isReset reports whether err says the peer reset the connection: ECONNRESET, EPIPE (the
// reset came while our side was open for writing), or ENOTCONN (the reset closed the
// socket before our shutdown).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.EPIPE)
}

// Abort closes the socket at once. The peer sees FIN, or RST if it had unread data.
func (l *TCP) Abort() { l.close() }
