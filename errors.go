package endwell

import (
	"context"
	"errors"
	"net"
	"strings"
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
	ErrResponseHeaderTimeout error = &timeoutError{msg: "endwell: timeout awaiting response headers", deadline: true}
	// ErrNotSent matches (with [errors.Is]) errors after which the request certainly did
	// not reach the server: endwell's dial failures ([DialError]), a proxy's refusal, a
	// connection found closed before any of the request was written. Such a request is
	// safe to retry whatever its method. Dial failures that come back as net/http's own
	// error types (see [DialError]) do not carry it: use [NotSent], which knows both.
	ErrNotSent = errors.New("endwell: request not sent")
	// ErrBodyClosed is returned by a response body's Read after its Close.
	ErrBodyClosed = errors.New("endwell: read on closed response body")
	// ErrServerClosedConn is returned when the server closed a connection before sending
	// any byte of the response (a stale keep-alive connection, typically).
	ErrServerClosedConn = errors.New("endwell: server closed connection before responding")
)

// NotSent reports whether err says the request certainly did not reach the server, so that
// it is safe to send again whatever its method: err matches [ErrNotSent], or its chain holds
// an error that endwell returned, as net/http's type, for a failed dial, proxy exchange or
// TLS handshake (a *[net.OpError], a *[tls.CertificateVerificationError]).
func NotSent(err error) bool {
	if errors.Is(err, ErrNotSent) {
		return true
	}
	for ; err != nil; err = errors.Unwrap(err) {
		if isDialFailure(err) {
			return true
		}
	}
	return false
}

type closedError struct{ msg string }

func (e *closedError) Error() string { return e.msg }
func (e *closedError) Unwrap() error { return net.ErrClosed }

type timeoutError struct {
	msg      string
	deadline bool // matches context.DeadlineExceeded
}

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Is(target error) bool {
	return e.deadline && target == context.DeadlineExceeded
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

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

// ProtocolError reports a malformed response: a bad status line or header, broken chunked
// framing, a Content-Length mismatch, headers over MaxResponseHeaderBytes. The connection
// it arrived on is aborted and never reused.
type ProtocolError struct {
	Err error
}

// Error describes the malformation.
func (e *ProtocolError) Error() string { return "endwell: malformed response: " + e.Err.Error() }

// Unwrap returns the parser's error.
func (e *ProtocolError) Unwrap() error { return e.Err }

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
