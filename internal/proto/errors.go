package proto

import (
	"context"
	"errors"

	"golang.org/x/net/http2"
)

// The errors that protocol packages return to callers. The root package exports them
// under the same names (its errors.go documents each); they are defined here so that the
// protocol packages, which may not import the root, return the very values and types.
var (
	ErrNotSent               = errors.New("endwell: request not sent")
	ErrBodyClosed            = errors.New("endwell: read on closed response body")
	ErrServerClosedConn      = errors.New("endwell: server closed connection before responding")
	ErrResponseHeaderTimeout = &TimeoutError{Msg: "endwell: timeout awaiting response headers", Deadline: true}
)

// Errors a protocol reports as causes, which ending.go classifies; callers never see the
// first two.
var (
	// ErrBodyNotSent is the body writer's result when the server answered before a
	// 100 Continue, and the body was withheld.
	ErrBodyNotSent = errors.New("request body not sent: the server answered first")
	// ErrBodyStillWriting is the cause of a response that completed while its request's
	// body was still going out.
	ErrBodyStillWriting = errors.New("request body still being written")
	// ErrHeaderTooLarge is what the response header reader hits at MaxResponseHeaderBytes.
	ErrHeaderTooLarge = errors.New("response headers exceed MaxResponseHeaderBytes")
)

// BodyReadError wraps an error returned by the request body's Read (or Close): the
// caller's own body failed, not the connection.
type BodyReadError struct{ Err error }

func (e *BodyReadError) Error() string { return e.Err.Error() }
func (e *BodyReadError) Unwrap() error { return e.Err }

// TimeoutError is a timeout of endwell's own: a [net.Error] whose Timeout reports true,
// matching [context.DeadlineExceeded] when Deadline is set.
type TimeoutError struct {
	Msg      string
	Deadline bool // matches context.DeadlineExceeded
}

func (e *TimeoutError) Error() string { return e.Msg }
func (e *TimeoutError) Is(target error) bool {
	return e.Deadline && target == context.DeadlineExceeded
}
func (e *TimeoutError) Timeout() bool   { return true }
func (e *TimeoutError) Temporary() bool { return true }

// ProtocolError reports a malformed response: a bad status line or header, broken chunked
// framing, a Content-Length mismatch, headers over MaxResponseHeaderBytes. The connection
// it arrived on is aborted and never reused. For HTTP/2, a connection error: HTTP2Code
// returns its code, and errors.As finds x/net's http2.ConnectionError.
type ProtocolError struct {
	Err error
}

// Error describes the malformation.
func (e *ProtocolError) Error() string { return "endwell: malformed response: " + e.Err.Error() }

// Unwrap returns the parser's error.
func (e *ProtocolError) Unwrap() error { return e.Err }

// HTTP2Code returns the error code of an HTTP/2 connection error, and true: the code of the
// GOAWAY endwell sent when the server broke the protocol (errors.As also finds x/net's
// http2.ConnectionError in e), or of the server's GOAWAY when it carried an error. It returns
// false for other malformations, HTTP/1.1's.
func (e *ProtocolError) HTTP2Code() (http2.ErrCode, bool) {
	var ce *H2ConnError
	if errors.As(e.Err, &ce) {
		return ce.Code, true
	}
	return http2.ErrCodeNo, false
}

// H2ConnError is an HTTP/2 connection error: the server broke the protocol and endwell
// ended the connection with GOAWAY(Code), or the server ended it with GOAWAY(Code). It is
// the Err of a [ProtocolError].
type H2ConnError struct {
	Code   http2.ErrCode
	Remote bool // the server's GOAWAY said it
}

func (e *H2ConnError) Error() string {
	if e.Remote {
		return "server sent GOAWAY with error " + e.Code.String()
	}
	return "HTTP/2 connection error " + e.Code.String()
}

// As lets errors.As find x/net's http2.ConnectionError for a connection error of ours.
func (e *H2ConnError) As(target any) bool {
	if p, ok := target.(*http2.ConnectionError); ok && !e.Remote {
		*p = http2.ConnectionError(e.Code)
		return true
	}
	return false
}

// StreamError reports an HTTP/2 stream that ended with an error while its connection lives
// on: the server reset it (RST_STREAM), or endwell's HTTP/2 engine reset it for the
// server's error on that stream only (a malformed response header, a stream's flow-control
// window overrun). Code is the RST_STREAM's error code. A stream that the server refused
// (REFUSED_STREAM) was not processed: errors.Is(err, ErrNotSent) is true. errors.As also
// finds x/net's http2.StreamError in it.
type StreamError struct {
	StreamID uint32
	Code     http2.ErrCode
	Err      error // the HTTP/2 engine's error
}

// Error says which stream ended, with which code, and why.
func (e *StreamError) Error() string { return "endwell: HTTP/2 " + e.Err.Error() }

// Unwrap returns the HTTP/2 engine's error.
func (e *StreamError) Unwrap() error { return e.Err }

// Is reports whether target is ErrNotSent, for a stream the server refused.
func (e *StreamError) Is(target error) bool {
	return target == ErrNotSent && e.Code == http2.ErrCodeRefusedStream
}

// ErrGoAwayAtOnce is a new connection's failure when the server sent GOAWAY with its
// first frames (HTTP/2) or before the request could go out (HTTP/3): it takes no stream,
// the request was not sent (RoundTrip tries once more on another connection).
var ErrGoAwayAtOnce = errors.New("server sent GOAWAY at once")

// CtxDone is the cause a connection is aborted with when a request's context ended with a
// cause of its own (context.WithCancelCause, WithTimeoutCause): it says, and matches, the
// context's error, which classifies the ending (context_canceled, timeout), and carries
// the cause, which the request returns, as net/http's HTTP/1 does (see RequestErr).
type CtxDone struct {
	Err   error // ctx.Err()
	Cause error // context.Cause(ctx), not Err
}

func (e *CtxDone) Error() string { return e.Err.Error() }
func (e *CtxDone) Unwrap() error { return e.Err }

// CtxEnded returns what a connection is aborted with when ctx ended: ctx.Err(), or a
// *CtxDone when ctx has a cause of its own.
func CtxEnded(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return &CtxDone{Err: err, Cause: cause}
	}
	return err
}

// RequestErr returns what a request returns for err, the cause a connection was ended
// with: the context's cause for a *CtxDone, else err.
func RequestErr(err error) error {
	if cd, ok := err.(*CtxDone); ok {
		return cd.Cause
	}
	return err
}
