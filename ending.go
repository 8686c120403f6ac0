package endwell

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
)

// How a transfer ended decides how its connection ends: a complete transfer reuses the
// connection, or closes it gracefully when it may not be reused; an aborted or failed one
// aborts it, without close_notify, so that the server can never take a truncated transfer
// for a complete one (curl 8.9's rule).
//
// The protocol code says what happened, as a proto.Outcome, and Report, below, is the one
// place that turns it into reuse, a graceful close or an abort, with its reason. The
// pool's retirements (idle.go's retire) come here the same way. The decision is made once
// per connection (conn.decide's compare-and-swap), before anything can write a
// close_notify: the TLS layer writes one only inside a graceful teardown, and a graceful
// teardown starts only if it won that decision.

// Report decides what outcome o means for pc, and starts it: it reports true only for a
// complete transfer whose connection may be reused (the caller hands it back to the pool);
// otherwise the connection's ending is decided (by this call, or by an earlier one, which
// wins) and started: an abort closes the socket before report returns, a graceful close
// runs in the background under the budget. Safe from any goroutine.
func (pc *conn) Report(o proto.Outcome) (reuse bool) {
	mode, cause := shutdown.Graceful, o.Cause
	var reason proto.Reason
	switch o.Kind {
	case proto.Complete:
		if reason = pc.completeReason(o.NoReuse); reason == 0 {
			return !pc.Dead()
		}
		cause = nil
	case proto.ServerClose:
		reason, cause = proto.ReasonServerClose, nil
	case proto.PeerClosed:
		reason = proto.ReasonPeerClosed
	case proto.GoAway:
		reason, cause = proto.ReasonGoAwayReceived, nil
	case proto.Failed:
		mode, reason = shutdown.Abort, failureReason(cause)
	case proto.Unfinished:
		// The upload's failure says why; requests see nothing of it: their response is
		// complete.
		mode, reason, cause = shutdown.Abort, failureReason(cause), nil
	case proto.Retired:
		reason, cause = o.Reason, nil
		if reason == proto.ReasonShutdown && pc.t.state.Load() == stateClosed {
			// The pool closed by Transport.Close: an abort, as Close aborts everything,
			// which requests see as ErrClosed.
			mode, reason, cause = shutdown.Abort, proto.ReasonClose, ErrClosed
		}
	default:
		panic("endwell: unknown outcome")
	}
	ticket, ok := pc.decide(mode, reason, cause)
	if !ok {
		return false
	}
	ctx := context.Background() // an abort is over before report returns
	if mode == shutdown.Graceful {
		ctx = pc.t.closeCtx()
	}
	if o.Goodbye != nil {
		if e := pc.entry.Load(); e != nil {
			pc.t.pool.Remove(e) // no request may take it while the goodbye goes out
		}
		o.Goodbye()
	}
	pc.launch(ctx, ticket, o.Deadline)
	return false
}

// abort ends the connection at once, without close_notify, for cause: a Failed outcome.
func (pc *conn) abort(cause error) {
	pc.Report(proto.Outcome{Kind: proto.Failed, Cause: cause})
}

// completeReason says how a connection whose transfer completed ends: reuse (no reason)
// or a graceful close with the reason returned. noReuse says the request or the response
// asked for the connection to close.
func (pc *conn) completeReason(noReuse bool) proto.Reason {
	switch {
	case pc.t.DisableKeepAlives:
		return proto.ReasonKeepAlivesDisabled
	case noReuse:
		return proto.ReasonServerClose
	case pc.h1 != nil && pc.t.MaxIdleConnsPerHost < 0:
		// As net/http: a negative MaxIdleConnsPerHost keeps no HTTP/1.1 connection idle.
		return proto.ReasonIdleLimit
	case pc.t.state.Load() != stateOpen:
		return proto.ReasonShutdown
	}
	return 0
}

// retireReason is the reason of a connection that the pool retired on its own for why.
func retireReason(why pool.Reason) proto.Reason {
	switch why {
	case pool.IdleTimeout:
		return proto.ReasonIdleTimeout
	case pool.IdleLimit:
		return proto.ReasonIdleLimit
	case pool.MaxLifetime:
		return proto.ReasonMaxLifetime
	case pool.CloseIdle:
		return proto.ReasonCloseIdle
	case pool.Closed:
		return proto.ReasonShutdown
	}
	return proto.ReasonClose
}

// failureReason classifies why a transfer did not complete. Every such reason aborts.
func failureReason(err error) proto.Reason {
	var pe *ProtocolError
	var ae tls.AlertError
	// crypto/tls returns its RecordHeaderError as a value, never a pointer.
	var rhe tls.RecordHeaderError
	switch {
	case errors.Is(err, context.Canceled):
		return proto.ReasonContextCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrResponseHeaderTimeout):
		return proto.ReasonTimeout
	case errors.Is(err, ErrBodyClosed), errors.Is(err, proto.ErrBodyNotSent), errors.Is(err, proto.ErrBodyStillWriting):
		// A body left before its end: the response's, closed by the caller, or the
		// request's, still going out when the response was complete.
		return proto.ReasonBodyClosedEarly
	case errors.Is(err, ErrClosed):
		return proto.ReasonClose
	case errors.Is(err, ErrShutdown):
		return proto.ReasonShutdown
	case errors.As(err, &pe), errors.As(err, &ae), errors.As(err, &rhe):
		return proto.ReasonProtocolError
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return proto.ReasonTimeout
	}
	var bre *proto.BodyReadError
	if errors.As(err, &bre) {
		return proto.ReasonBodyClosedEarly
	}
	return proto.ReasonIOError
}

// ending is the decision of how a connection ends: its mode, its reason, and the cause
// requests still using the connection see (nil for a graceful end).
type ending struct {
	mode   shutdown.Mode
	reason proto.Reason
	cause  error
}

// decide makes the ending's decision, if no call made it before: one compare-and-swap on
// the mode, reason and cause together. It reports whether this call made it, and then
// returns the engine's ticket for launch, reserved first: Close and Shutdown, which wait
// for the engine, then also wait for a teardown decided just before they looked.
func (pc *conn) decide(mode shutdown.Mode, reason proto.Reason, cause error) (shutdown.Ticket, bool) {
	t := pc.t
	ticket := t.engine.Reserve()
	if mode == shutdown.Graceful && t.state.Load() == stateClosed {
		mode = shutdown.Abort // Close says no goodbyes, and never waits on a peer
	}
	if !pc.ended.CompareAndSwap(nil, &ending{mode: mode, reason: reason, cause: cause}) {
		ticket.Cancel()
		return shutdown.Ticket{}, false
	}
	return ticket, true
}

// launch starts the teardown that decide decided, under ticket: an abort closes the
// socket before launch returns; a graceful close runs in the background until deadline
// (zero: the budget from now).
func (pc *conn) launch(ctx context.Context, ticket shutdown.Ticket, deadline time.Time) {
	t := pc.t
	e := pc.ended.Load()
	if deadline.IsZero() {
		deadline = time.Now().Add(t.cfg.budget) // the budget runs from the decision
	}
	if e := pc.entry.Load(); e != nil {
		t.pool.Remove(e)
	}
	pc.setState(stateGone)
	t.teardownStarted(pc)
	job := shutdown.Job{
		Layers:   pc.layers(),
		Mode:     e.mode,
		Reason:   e.reason.String(),
		Deadline: deadline,
		Done:     pc.teardownDone,
	}
	if e.mode == shutdown.Abort {
		ticket.Do(ctx, job)
	} else {
		ticket.Go(ctx, job)
	}
}
