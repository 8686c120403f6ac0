package h3

import (
	"context"
	"errors"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/endwell/endwell/shutdown"
)

// Layer is the teardown layer of an HTTP/3 connection: CONNECTION_CLOSE, the closing
// period, and the UDP socket, which it owns. It is the bottom, and only, layer of an
// HTTP/3 stack (TLS lives inside QUIC). Get it from [Conn.Layer].
type Layer struct {
	c *Conn
}

var _ shutdown.Layer = (*Layer)(nil)

// Graceful ends the connection with a goodbye. The connection takes no new requests. If it
// is closed already, by the peer (its CONNECTION_CLOSE: we are draining), by an idle
// timeout or a stateless reset, nothing is sent and the socket is released at once. Else
// Graceful waits for the requests in flight to end, sends a CONNECTION_CLOSE of the
// application kind with H3_NO_ERROR (0x100), and keeps the socket for a closing period of
// three probe timeouts (RFC 9000, section 10.2; RFC 9002, section 6.2.1, without
// max_ack_delay, as quic-go), in which quic-go answers the peer's late packets with the
// CONNECTION_CLOSE again; then it releases the socket. If quic-go had closed the
// connection on its own (after a GOAWAY; on a protocol error), the closing period runs
// from that close. If ctx ends first, Graceful returns its cause, and the driver aborts.
func (l *Layer) Graceful(ctx context.Context, p *shutdown.Progress) error {
	c := l.c
	c.mu.Lock()
	c.closing = true
	c.initiated = true
	c.mu.Unlock()

	if err := c.waitIdle(ctx, p); err != nil {
		return err
	}
	if c.qc.Context().Err() == nil {
		// Returns once quic-go has written the packet: it waits for the connection's
		// loop, never for the peer.
		c.qc.CloseWithError(quic.ApplicationErrorCode(CodeNoError), "")
	}
	c.mu.Lock()
	c.settleLocked()
	sent, code, closedAt, closeErr := c.closeSent, c.closeCode, c.closedAt, c.closeErr
	c.mu.Unlock()
	if !sent {
		// The peer closed (draining), or the connection timed out: nothing to answer. A
		// peer's CONNECTION_CLOSE is its whole goodbye: the ending is clean with it.
		if peerClosed(closeErr) {
			p.Expect(shutdown.ConnectionCloseReceived)
			p.Note(shutdown.ConnectionCloseReceived)
		}
		c.release()
		return nil
	}
	// Ours went out: the ending is clean once its closing period ran its course.
	p.Expect(shutdown.ConnectionCloseSent, shutdown.ClosingPeriodOver)
	p.NoteQUICClose(code)
	p.Waiting()
	err := sleepUntil(ctx, closedAt.Add(closingPeriod(c.qc.ConnectionStats())))
	c.release()
	p.NoteClosingPeriod(c.ClosingPeriod(), err == nil)
	return err
}

// peerClosed reports whether the connection's close error is the peer's CONNECTION_CLOSE.
func peerClosed(err error) bool {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return ae.Remote
	}
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		return te.Remote
	}
	return false
}

// Abort ends the connection without a goodbye: a CONNECTION_CLOSE with
// H3_REQUEST_CANCELLED (0x10c), one packet (a rapid close: no closing period), unless the
// connection is closed already, then the socket is released at once. It does not wait on
// the peer, only for quic-go's connection loop to write the packet and for the
// transport's reader to stop. It may be called more than once, and while Graceful runs.
func (l *Layer) Abort() {
	c := l.c
	c.mu.Lock()
	c.closing = true
	c.initiated = true
	c.mu.Unlock()
	if c.qc.Context().Err() == nil {
		c.qc.CloseWithError(quic.ApplicationErrorCode(CodeRequestCancelled), "")
	}
	c.mu.Lock()
	c.settleLocked()
	c.mu.Unlock()
	c.release()
}

// waitIdle waits until no request is in flight, or the QUIC connection is closed, or ctx
// is done (then it returns ctx's cause).
func (c *Conn) waitIdle(ctx context.Context, p *shutdown.Progress) error {
	c.mu.Lock()
	if c.inFlight == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	p.Waiting()
	select {
	case <-idle:
	case <-c.qc.Context().Done():
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return nil
}

// closingPeriod is three probe timeouts: RFC 9002's PTO, smoothed_rtt + max(4×rttvar,
// kGranularity), without max_ack_delay, as quic-go's PTO(false), which is how long quic-go
// itself answers late packets after its CONNECTION_CLOSE. Without an RTT sample, PTO is
// twice quic-go's initial RTT (100 ms), as quic-go's.
func closingPeriod(s quic.ConnectionStats) time.Duration {
	const granularity = time.Millisecond
	if s.SmoothedRTT <= 0 {
		return 3 * 2 * 100 * time.Millisecond
	}
	return 3 * (s.SmoothedRTT + max(4*s.MeanDeviation, granularity))
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// settleLocked records, once the QUIC connection is closed, why and whether a
// CONNECTION_CLOSE of ours went out. The first call after the close decides; closedAt is
// then (for our own close, right after quic-go wrote the packet). Called with c.mu held.
func (c *Conn) settleLocked() {
	if c.settled || c.qc.Context().Err() == nil {
		return
	}
	err := context.Cause(c.qc.Context())
	c.settled = true
	c.closing = true
	c.closeErr = err
	c.closedAt = time.Now()
	if code, sent := localCloseCode(err); sent {
		c.closeCode, c.closeSent = code, true
	}
}

// localCloseCode returns the code of the CONNECTION_CLOSE our side sent, if the
// connection's close error says one was: a local application or transport error. The
// peer's close, an idle timeout, a stateless reset and a socket error send nothing.
func localCloseCode(err error) (uint64, bool) {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return uint64(ae.ErrorCode), !ae.Remote
	}
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		return uint64(te.ErrorCode), !te.Remote
	}
	return 0, false
}

// onClosed runs once the QUIC connection is closed, in a goroutine of its own: it records
// the ending and, if the Layer did not decide it, tells the owner through the hooks.
func (c *Conn) onClosed() {
	c.mu.Lock()
	c.settleLocked()
	initiated, sent, err := c.initiated, c.closeSent, c.closeErr
	c.mu.Unlock()
	if initiated {
		return
	}
	if !sent {
		if h := c.hooks.OnPeerClose; h != nil {
			h(err)
		}
		return
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && uint64(ae.ErrorCode) == CodeNoError {
		// quic-go's ClientConn closes with H3_NO_ERROR only after a GOAWAY, once no
		// request is in flight: report the GOAWAY first, if its qlog event was missed.
		c.noteGoAway()
	}
	if h := c.hooks.OnLocalClose; h != nil {
		h(err)
	}
}

// noteGoAway records the server's GOAWAY and calls OnGoAway, once.
func (c *Conn) noteGoAway() {
	c.goAway.Store(true)
	if c.goAwayNotified.CompareAndSwap(false, true) {
		if h := c.hooks.OnGoAway; h != nil {
			h()
		}
	}
}

// release closes the quic.Transport and the UDP socket, once. The QUIC connection is
// closed by then (a quic.Transport's Close would otherwise drop it silently).
func (c *Conn) release() {
	c.releaseOnce.Do(func() {
		c.tr.Close() // stops the transport's reader and sender goroutines
		c.udp.Close()
		c.mu.Lock()
		c.releasedAt = time.Now()
		c.mu.Unlock()
	})
}
