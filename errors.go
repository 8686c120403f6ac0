package endwell

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"

	"github.com/endwell/endwell/internal/proto"
)

// This file holds every error endwell exports, and the unexported types behind them.

// Errors that callers can branch on with [errors.Is] and [errors.As].
var (
	// ErrClosed is returned by RoundTrip after [Transport.Close], and by requests that Close
	// aborted. It unwraps to [net.ErrClosed].
	ErrClosed error = &closedError{"endwell: transport closed"}
	// ErrShutdown is returned by RoundTrip after [Transport.Shutdown] was called, and by
	// requests that Shutdown aborted when its context ended. It unwraps to [net.ErrClosed].
	ErrShutdown error = &closedError{"endwell: transport shut down"}
	// ErrResponseHeaderTimeout is returned when [Transport.ResponseHeaderTimeout] runs out.
	// It is a [net.Error] whose Timeout method reports true, and it matches
	// [context.DeadlineExceeded], as net/http's does.
	ErrResponseHeaderTimeout error = proto.ErrResponseHeaderTimeout
	// ErrNotSent matches (with [errors.Is]) errors after which the request certainly did
	// not reach the server: endwell's dial failures ([DialError]), a proxy's refusal, a
	// connection found closed before any of the request was written, a request whose
	// context ended while it waited for a connection (its error is then the context's,
	// which it also matches). Such a request is
	// safe to retry whatever its method. Dial failures that come back as net/http's own
	// error types (see [DialError]) do not carry it: use [NotSent], which knows both.
	ErrNotSent = proto.ErrNotSent
	// ErrBodyClosed is returned by a response body's Read after its Close.
	ErrBodyClosed = proto.ErrBodyClosed
	// ErrServerClosedConn is returned when the server closed a connection before sending
	// any byte of the response (a stale keep-alive connection, typically).
	ErrServerClosedConn = proto.ErrServerClosedConn
)

// NotSent reports whether err says the request certainly did not reach the server, so that
// it is safe to send again whatever its method: err matches [ErrNotSent], or its chain holds
// an error that endwell returned, as net/http's type, for a failed dial, proxy exchange or
// TLS handshake (a *[net.OpError], a *[tls.CertificateVerificationError]).
func NotSent(err error) bool {
	if errors.Is(err, ErrNotSent) {
		return true
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil {
		// crypto/tls sets Conn only for a connection's first record: the handshake's.
		return true
	}
	for ; err != nil; err = errors.Unwrap(err) {
		if isDialFailure(err) {
			return true
		}
	}
	return false
}

// notSentError is the error of a request whose context ended while it waited for a
// connection: the context's cause (its error, unless it ended with a cause of its own),
// same message, matching it with errors.Is, and ErrNotSent too (so that RetryPolicy may
// send it again whatever its method).
type notSentError struct{ err error }

func (e *notSentError) Error() string        { return e.err.Error() }
func (e *notSentError) Unwrap() error        { return e.err }
func (e *notSentError) Is(target error) bool { return target == ErrNotSent }
func (e *notSentError) Timeout() bool        { return errors.Is(e.err, context.DeadlineExceeded) }
func (e *notSentError) Temporary() bool      { return e.Timeout() }

type closedError struct{ msg string }

func (e *closedError) Error() string { return e.msg }
func (e *closedError) Unwrap() error { return net.ErrClosed }

type timeoutError = proto.TimeoutError

// DialError reports a failure to establish a connection: the TCP dial, the proxy's CONNECT
// or the TLS handshake. The request was not sent: errors.Is(err, ErrNotSent) is true.
//
// Where net/http returns an error of a type of its own for such a failure (a
// *[net.OpError] for a refused dial, a TLS alert or a reset, wrapped in another with Op
// "proxyconnect" for a proxy's; a *[tls.CertificateVerificationError]), RoundTrip returns
// that error as net/http does, its chain unchanged: no DialError, and no ErrNotSent in it.
// [NotSent] and [RetryPolicy] recognise those that come from a dial. A DialError that
// stands where net/http returns an error of no exported type (a DialContext's own error,
// say) has that error's message.
type DialError struct {
	// Op is "dial", "proxy", "tls" or "h2" (the server's HTTP/2 preface: SETTINGS).
	Op string
	// Addr is the address dialled: the server's, or the proxy's for Op "proxy".
	Addr string
	Err  error

	quiet bool // inside a net/http-shaped error: Error is Err's
}

// Error says which step failed, for which address, and why.
func (e *DialError) Error() string {
	if e.quiet {
		return e.Err.Error()
	}
	return "endwell: " + e.Op + " " + e.Addr + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *DialError) Unwrap() error { return e.Err }

// Is reports whether target is ErrNotSent.
func (e *DialError) Is(target error) bool { return target == ErrNotSent }

// Timeout reports whether the dial failed because of a timeout.
func (e *DialError) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout() || errors.Is(e.Err, context.DeadlineExceeded)
}

// Temporary is Timeout, so that a DialError is a [net.Error], as net/http's dial and
// handshake errors are (net.Error's Temporary is deprecated; callers should use Timeout).
func (e *DialError) Temporary() bool { return e.Timeout() }

// ProtocolError reports a malformed response: a bad status line or header, broken chunked
// framing, a Content-Length mismatch, headers over MaxResponseHeaderBytes. The connection
// it arrived on is aborted and never reused. For HTTP/2, a connection error: HTTP2Code
// returns its code, and errors.As finds x/net's http2.ConnectionError.
//
// Its field Err is the parser's error; Error says "endwell: malformed response: " and Err's
// text; Unwrap returns Err.
type ProtocolError = proto.ProtocolError

// RequestError reports a request that endwell refused before any I/O: no URL, an unsupported
// scheme, a missing host, an invalid header.
type RequestError struct {
	Reason string
}

// Error says what is wrong with the request.
func (e *RequestError) Error() string { return "endwell: " + e.Reason }

// Is reports whether target is ErrNotSent: the request was not sent.
func (e *RequestError) Is(target error) bool { return target == ErrNotSent }

// ProxyConnectError reports a proxy that refused a CONNECT tunnel. The request was not sent:
// errors.Is(err, ErrNotSent) is true.
type ProxyConnectError struct {
	StatusCode int
	Status     string
}

// Error is the text of the proxy's status ("Forbidden" for "403 Forbidden"), as
// net/http's error for a refused CONNECT says.
func (e *ProxyConnectError) Error() string {
	if _, text, ok := strings.Cut(e.Status, " "); ok {
		return text
	}
	return "unknown status code"
}

// Is reports whether target is ErrNotSent.
func (e *ProxyConnectError) Is(target error) bool { return target == ErrNotSent }

// StreamError reports an HTTP/2 stream that ended with an error while its connection lives
// on: the server reset it (RST_STREAM), or endwell's HTTP/2 engine reset it for the
// server's error on that stream only (a malformed response header, a stream's flow-control
// window overrun). Code is the RST_STREAM's error code. A stream that the server refused
// (REFUSED_STREAM) was not processed: errors.Is(err, [ErrNotSent]) is true, and [NotSent]
// reports true. errors.As also finds x/net's http2.StreamError in it.
//
// Its fields are StreamID, Code (an http2.ErrCode) and Err, the HTTP/2 engine's error,
// which Unwrap returns.
type StreamError = proto.StreamError
