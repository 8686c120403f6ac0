// Package proto is what endwell's protocol packages (internal/h1, internal/h2,
// internal/h3) and the root package share: the outcomes a protocol reports, the typed
// reasons a connection ends for, and the errors both sides hand to callers.
//
// A protocol package says what happened to a transfer or a connection (an [Outcome]); the
// root's ending.go alone decides what that means for the connection (reuse, a graceful
// close or an abort, and why), once. Nothing here decides.
package proto

import (
	"strconv"
	"time"
)

// Reason is why a connection ended, as endwell's spans, metrics and statistics spell it
// (the span attribute endwell.close.reason).
type Reason uint8

// The reasons. A zero Reason is no reason: the connection lives on.
const (
	ReasonIdleTimeout Reason = iota + 1
	ReasonIdleLimit
	ReasonMaxLifetime
	ReasonCloseIdle
	ReasonShutdown
	ReasonClose
	ReasonPeerClosed
	ReasonGoAwayReceived
	ReasonServerClose
	ReasonBodyClosedEarly
	ReasonContextCanceled
	ReasonTimeout
	ReasonIOError
	ReasonProtocolError
	ReasonKeepAlivesDisabled
)

var reasonNames = [...]string{
	ReasonIdleTimeout:        "idle_timeout",
	ReasonIdleLimit:          "idle_limit",
	ReasonMaxLifetime:        "max_lifetime",
	ReasonCloseIdle:          "close_idle",
	ReasonShutdown:           "shutdown",
	ReasonClose:              "close",
	ReasonPeerClosed:         "peer_closed",
	ReasonGoAwayReceived:     "goaway_received",
	ReasonServerClose:        "server_close",
	ReasonBodyClosedEarly:    "body_closed_early",
	ReasonContextCanceled:    "context_canceled",
	ReasonTimeout:            "timeout",
	ReasonIOError:            "io_error",
	ReasonProtocolError:      "protocol_error",
	ReasonKeepAlivesDisabled: "keepalives_disabled",
}

// String returns the reason as the span attribute spells it: "idle_timeout",
// "body_closed_early", ...
func (r Reason) String() string {
	if r >= ReasonIdleTimeout && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Kind is what happened, as a protocol saw it.
type Kind uint8

const (
	// Complete: the transfer completed, and the protocol sees nothing against reusing the
	// connection unless NoReuse says the request or the response asked to close it
	// (Connection: close, HTTP/1.0).
	Complete Kind = iota + 1
	// ServerClose: the transfer is over and the connection takes no more (a 101's
	// connection handed back, a body the server answered before, HTTP/2's Connection:
	// close): a graceful close.
	ServerClose
	// PeerClosed: the server ended the connection (while idle, or after its last
	// response): a graceful close that answers its goodbye. Cause, if not nil, is what
	// requests still using the connection see.
	PeerClosed
	// GoAway: the server's GOAWAY (NO_ERROR), and the connection's last stream is done: a
	// graceful close.
	GoAway
	// Failed: the transfer or the connection failed, Cause says why (a context, a timeout,
	// a body closed early, an I/O or protocol error): an abort, which requests still using
	// the connection see as Cause.
	Failed
	// Unfinished: the response completed while the request's upload failed or was still
	// going out (Cause says which): an abort, with nothing for requests to see.
	Unfinished
	// Retired: the pool or the transport retired the connection, for Reason (idle limits,
	// lifetime, CloseIdleConnections, Shutdown). Only the root reports it.
	Retired
)

// Outcome is what a protocol reports of a transfer or a connection.
type Outcome struct {
	Kind Kind
	// NoReuse says, of a Complete transfer, that the request or the response asked for
	// the connection to close.
	NoReuse bool
	// Cause is the error of a Failed or Unfinished outcome, and what requests see of a
	// PeerClosed one (nil: nothing).
	Cause error
	// Reason is the reason of a Retired outcome.
	Reason Reason
	// Deadline bounds a Retired connection's graceful close; zero means the budget from now.
	Deadline time.Time
	// Goodbye, if not nil, runs once the outcome has decided the connection's ending, before
	// its teardown starts: HTTP/2 writes its GOAWAY with the error's code there.
	Goodbye func()
}
