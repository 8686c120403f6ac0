package endwell

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
)

// How a transfer ended decides how its connection ends: a complete transfer reuses the
// connection, or closes it gracefully when it may not be reused; an aborted or failed one
// aborts it, without close_notify, so that the server can never take a truncated transfer
// for a complete one (curl 8.9's rule). This file holds the rules: the reasons, and how a
// complete or a failed transfer is classified. The protocol code applies them where it
// sees the transfer end (h1.go's finish and fail, h2.go's closedByNet and connError,
// h3.go's hooks, idle.go's retire), each calling conn.end with a mode and a reason; moving
// those calls behind one function fed with what the protocols report is issue #17's open
// part.
//
// The decision is made once per connection (conn.end's compare-and-swap), before anything
// can write a close_notify: the TLS layer writes one only inside a graceful teardown, and a
// graceful teardown starts only if it won that decision.

// Reasons, as endwell's spans, metrics and statistics spell them.
const (
	reasonIdleTimeout        = "idle_timeout"
	reasonIdleLimit          = "idle_limit"
	reasonMaxLifetime        = "max_lifetime"
	reasonCloseIdle          = "close_idle"
	reasonShutdown           = "shutdown"
	reasonClose              = "close"
	reasonPeerClosed         = "peer_closed"
	reasonGoAwayReceived     = "goaway_received"
	reasonServerClose        = "server_close"
	reasonBodyClosedEarly    = "body_closed_early"
	reasonContextCanceled    = "context_canceled"
	reasonTimeout            = "timeout"
	reasonIOError            = "io_error"
	reasonProtocolError      = "protocol_error"
	reasonKeepAlivesDisabled = "keepalives_disabled"
)

// completeReason says how a connection whose transfer completed ends: reuse (empty reason)
// or a graceful close with the reason returned.
func completeReason(t *Transport, ex *exchange) string {
	switch {
	case t.DisableKeepAlives:
		return reasonKeepAlivesDisabled
	case ex.noReuse:
		return reasonServerClose
	case t.state.Load() != stateOpen:
		return reasonShutdown
	}
	return ""
}

// failureReason classifies why a transfer did not complete. Every such reason aborts.
func failureReason(err error) string {
	var pe *ProtocolError
	var ae tls.AlertError
	// crypto/tls returns its RecordHeaderError as a value, never a pointer.
	var rhe tls.RecordHeaderError
	switch {
	case errors.Is(err, context.Canceled):
		return reasonContextCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrResponseHeaderTimeout):
		return reasonTimeout
	case errors.Is(err, ErrBodyClosed), errors.Is(err, errBodyNotSent), errors.Is(err, errBodyStillWriting):
		// A body left before its end: the response's, closed by the caller, or the
		// request's, still going out when the response was complete.
		return reasonBodyClosedEarly
	case errors.Is(err, ErrClosed):
		return reasonClose
	case errors.Is(err, ErrShutdown):
		return reasonShutdown
	case errors.As(err, &pe), errors.As(err, &ae), errors.As(err, &rhe):
		return reasonProtocolError
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return reasonTimeout
	}
	var bre *bodyReadError
	if errors.As(err, &bre) {
		return reasonBodyClosedEarly
	}
	return reasonIOError
}
