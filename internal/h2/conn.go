//lint:file-ignore SA1019 x/net's deprecated error types (GoAwayError) are what its engine returns, built by Go 1.26: endwell maps them

package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// Package h2 is endwell's HTTP/2: x/net's client connection (on Go 1.27 a wrapper of
// net/http's own engine) run over a net.Conn of endwell's (the wire) that sees every
// frame and writes endwell's own GOAWAY, the streams and their bodies, and the top layer
// of an HTTP/2 connection's teardown stack.
//
// It decides nothing about the connection's fate: it reports what happened to its
// [Owner] (the root package's connection) as a proto.Outcome. It imports neither the root
// package nor pool/.
//
// HTTP/2 runs on an HTTP/2 client engine behind h2Client (x/net's own built by Go 1.26,
// engine_xnet.go; net/http's built by Go 1.27, engine_nethttp.go), over a net.Conn of ours
// (wire) that sees every frame. The pool holds HTTP/2 connections like
// HTTP/1.1 ones, with the server's MAX_CONCURRENT_STREAMS as their capacity: each stream
// takes one use, and the body's end gives it back. Every ending goes through the teardown
// engine with the stack [h2, TLS, TCP]: the h2 layer says goodbye with GOAWAY(NO_ERROR,
// last-stream-id 0), and x/net never closes the socket itself.

// h2Client is what endwell needs of an HTTP/2 client connection: x/net's ClientConn (Go
// 1.26), net/http's (Go 1.27, golang/go#78064).
type h2Client interface {
	// RoundTrip runs one request on a new stream.
	RoundTrip(req *http.Request) (*http.Response, error)
	// MaxStreams returns the server's MAX_CONCURRENT_STREAMS, or 0 before its SETTINGS.
	MaxStreams() int
	// Close fails the open streams at once and tells the net.Conn under it to close.
	Close() error
}

// defaultMaxStreams is the capacity of a connection whose server has not said its
// MAX_CONCURRENT_STREAMS: x/net's provisional limit, RFC 9113's recommended minimum.
const defaultMaxStreams = 100

// Owner is what the HTTP/2 code asks of the connection's owner: the decision of its
// ending, and its place in the pool. Its methods are safe from any goroutine.
type Owner interface {
	// Report tells the owner what happened; the owner decides how the connection ends
	// (the first decision wins).
	Report(proto.Outcome) bool
	// Dead reports whether the connection's ending was decided.
	Dead() bool
	// Cause returns the error requests see of the connection's ending: nil while it lives,
	// and for a graceful ending.
	Cause() error
	// Unshare stops the pool handing the connection out; it reports true when no request
	// uses it any more (the caller then ends it).
	Unshare() bool
	// Remove takes the connection out of the pool for good.
	Remove()
	// GiveBack gives back a use that a request got and will not make; it reports true
	// when that was the last use of a connection the pool no longer hands out.
	GiveBack() bool
	// SetCapacity tells the pool how many streams the connection takes now.
	SetCapacity(n int)
	// ReleaseUse gives a stream's use back (see the root's conn.releaseUse).
	ReleaseUse(broken bool, dropped func())
	// WaitUnused waits until no request uses the connection, or ctx ends.
	WaitUnused(ctx context.Context, p *shutdown.Progress) error
}

// Config is HTTP/2's share of the transport's configuration, defaults filled in.
type Config struct {
	DisableCompression    bool
	DisableKeepAlives     bool
	MaxHeaderBytes        int64
	ExpectContinueTimeout time.Duration
	ResponseHeaderTimeout time.Duration
	ReadIdleTimeout       time.Duration // the Transport's; zero: HTTP2.SendPingTimeout
	PingTimeout           time.Duration // the Transport's; zero: HTTP2.PingTimeout
	SettingsTimeout       time.Duration // how long the server's SETTINGS may take
	HTTP2                 *http.HTTP2Config
}

// engineConfig is the HTTP/2 engine's configuration that both engines take, decided once:
// the transport's ping settings (ReadIdleTimeout, PingTimeout) before HTTP2's, negative
// values as zero, and HTTP2's CountError called after endwell's own countError.
func (cfg *Config) engineConfig(countError func(string)) http.HTTP2Config {
	c := http.HTTP2Config{
		SendPingTimeout: max(cfg.ReadIdleTimeout, 0),
		PingTimeout:     max(cfg.PingTimeout, 0),
		CountError:      countError,
	}
	u := cfg.HTTP2
	if u == nil {
		return c
	}
	c.MaxDecoderHeaderTableSize = max(u.MaxDecoderHeaderTableSize, 0)
	c.MaxEncoderHeaderTableSize = max(u.MaxEncoderHeaderTableSize, 0)
	c.MaxReadFrameSize = max(u.MaxReadFrameSize, 0)
	c.MaxReceiveBufferPerConnection = max(u.MaxReceiveBufferPerConnection, 0)
	c.MaxReceiveBufferPerStream = max(u.MaxReceiveBufferPerStream, 0)
	c.WriteByteTimeout = max(u.WriteByteTimeout, 0)
	if cfg.ReadIdleTimeout == 0 {
		c.SendPingTimeout = max(u.SendPingTimeout, 0)
	}
	if cfg.PingTimeout == 0 {
		c.PingTimeout = max(u.PingTimeout, 0)
	}
	if count := u.CountError; count != nil {
		c.CountError = func(errType string) {
			countError(errType)
			count(errType)
		}
	}
	return c
}

// Conn is the HTTP/2 side of a connection.
type Conn struct {
	owner Owner
	cfg   *Config
	cc    h2Client
	wire  *wire

	// ready is set once the dial has finished: from then on, x/net's closes go to the engine.
	ready atomic.Bool
	// lostPing is set when x/net's health check gave up on the connection.
	lostPing atomic.Bool
	// noReuse is set when a request asked to close the connection (Connection: close).
	noReuse atomic.Bool
	// connErr is the error code of the connection error x/net's read loop met, if it said.
	connErr atomic.Uint32
	// failing is set by the first connError: the connection ends for a connection error.
	failing atomic.Bool
}

// Capacity is how many requests may use the connection at once: the server's
// MAX_CONCURRENT_STREAMS (until it says, RFC 9113's recommended minimum); one under
// DisableKeepAlives.
func (h *Conn) Capacity() int {
	if h.cfg.DisableKeepAlives {
		return 1
	}
	if n := h.cc.MaxStreams(); n > 0 {
		return n
	}
	return defaultMaxStreams
}

// Start makes nc an HTTP/2 connection: it starts x/net's client
// connection and waits for the server's SETTINGS, so that the pool learns the connection's
// capacity. On error the caller closes the socket. The connection reports to owner once
// Ready was called.
func Start(ctx context.Context, owner Owner, cfg *Config, nc net.Conn) (*Conn, error) {
	w := newWire(nc)
	h := &Conn{owner: owner, cfg: cfg, wire: w}
	w.onPeerGoAway = h.peerGoAway
	w.onClose = h.closedByNet
	cc, err := newClient(w, cfg, h.countError)
	if err != nil {
		w.writesOff.Store(true)
		return nil, err
	}
	h.cc = cc

	wait := cfg.SettingsTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.settingsAcked:
	case <-w.closeCalled:
		err = w.readError()
		if err == nil {
			err = errNoSettings
		}
	case <-timer.C:
		err = fmt.Errorf("%w within %v", errNoSettings, wait)
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if w.peerGoAway.Load() && ctx.Err() == nil {
		err = proto.ErrGoAwayAtOnce
	}
	if err != nil {
		w.writesOff.Store(true)
		h.cc.Close() // fails nothing but x/net's own goroutines, once the socket closes
		return nil, err
	}
	return h, nil
}

// Ready hands the connection's endings to the owner, once the dial has made it whole:
// until then, what x/net does is the dial's to see.
func (h *Conn) Ready() {
	h.ready.Store(true)
	if h.wire.closed.Load() {
		// x/net closed the connection between the SETTINGS and now.
		h.closedByNet()
	}
}

// countError is x/net's CountError hook: it tells why x/net closes a connection.
func (h *Conn) countError(errType string) {
	switch {
	case errType == "conn_close_lost_ping":
		h.lostPing.Store(true)
	case errType == "read_frame_too_large":
		h.connErr.Store(uint32(http2.ErrCodeFrameSize))
	case strings.HasPrefix(errType, "read_frame_conn_error_"):
		name := strings.TrimPrefix(errType, "read_frame_conn_error_")
		for code := http2.ErrCodeNo; code <= http2.ErrCodeHTTP11Required; code++ {
			if code.String() == name {
				h.connErr.Store(uint32(code))
			}
		}
	}
}

// peerGoAway runs in x/net's read loop when the server's GOAWAY arrives, before x/net
// processes it: the pool hands the connection out no more, and it ends once its last
// stream does (at once if it is idle).
func (h *Conn) peerGoAway() {
	if !h.ready.Load() {
		return // the dial sees it
	}
	if h.owner.Unshare() {
		h.endGoAway()
	}
}

// endGoAway ends a connection that the server sent GOAWAY on, once its last stream is done.
func (h *Conn) endGoAway() {
	if code := h.wire.peerCode.Load(); code != uint32(http2.ErrCodeNo) {
		h.owner.Report(proto.Outcome{Kind: proto.Failed,
			Cause: &proto.ProtocolError{Err: &proto.H2ConnError{Code: http2.ErrCode(code), Remote: true}}})
		return
	}
	h.owner.Report(proto.Outcome{Kind: proto.GoAway})
}

// closedByNet runs when x/net closes the connection's net.Conn: x/net is done with it. If
// endwell has not decided how the connection ends, x/net's story says: a lost ping, a
// connection error, a read or write error abort it; a server's goodbye or x/net's own
// decision not to reuse the connection end it gracefully.
func (h *Conn) closedByNet() {
	if !h.ready.Load() || h.owner.Dead() || h.failing.Load() {
		return
	}
	w := h.wire
	rerr := w.readError()
	switch {
	case h.lostPing.Load():
		h.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: errH2PingTimeout})
	case w.goAwaySent.Load() && w.goAwayCode.Load() != uint32(http2.ErrCodeNo):
		code := http2.ErrCode(w.goAwayCode.Load())
		h.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: &proto.ProtocolError{Err: &proto.H2ConnError{Code: code}}})
	case w.writeError() != nil:
		err := w.writeError()
		h.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: err})
	case w.peerGoAway.Load():
		h.endGoAway()
	case rerr == io.EOF:
		h.owner.Report(proto.Outcome{Kind: proto.PeerClosed})
	case rerr != nil:
		h.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: rerr})
	case h.noReuse.Load():
		h.owner.Report(proto.Outcome{Kind: proto.ServerClose})
	case w.peerResetProtocol.Load():
		// x/net closed the connection, idle, that it reuses no more since the server
		// reset a stream with PROTOCOL_ERROR: a stream's error, not the connection's
		// (that one would have sent its GOAWAY, above): it ends gracefully.
		h.owner.Report(proto.Outcome{Kind: proto.ServerClose})
	default:
		// x/net's read loop ended without an I/O error: the server broke the protocol.
		h.connError(h.readLoopCode())
	}
}

// readLoopCode is the error code of the connection error that ended x/net's read loop
// without an I/O error: the one x/net's CountError named (the frame parser's errors), else
// FLOW_CONTROL_ERROR if the server broke flow control, else PROTOCOL_ERROR, the only other
// code x/net's frame processing ends a connection with.
func (h *Conn) readLoopCode() http2.ErrCode {
	switch {
	case h.connErr.Load() != uint32(http2.ErrCodeNo):
		return http2.ErrCode(h.connErr.Load())
	case h.wire.flow.broken():
		return http2.ErrCodeFlowControl
	}
	return http2.ErrCodeProtocol
}

// connError ends the connection for an HTTP/2 connection error of code (RFC 9113, section
// 5.4.1), and returns what its requests see, a *ProtocolError. It runs where the error is
// first seen: x/net's closing of the connection, or one of its streams' errors, which x/net
// delivers before it closes the connection; the first call decides.
//
// The decision (abort, protocol_error, the cause) is made before anything else: the
// connection is dead from then on (a Get that still finds it drops it), and each of its
// streams that fails returns the cause. Then it leaves the pool, and the goodbye: x/net
// queues a GOAWAY with the code but never flushes it before closing, so endwell writes it
// (within 250 ms, as x/net bounds its own), then launches the abort.
func (h *Conn) connError(code http2.ErrCode) error {
	cause := error(&proto.ProtocolError{Err: &proto.H2ConnError{Code: code}})
	h.failing.Store(true)
	h.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: cause, Goodbye: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		h.wire.sendGoAway(ctx, code)
		cancel()
	}})
	if c := h.owner.Cause(); c != nil {
		return c
	}
	return cause // the connection was ending already, gracefully: the stream's error is this
}

// connectionErrorCode returns the code of the HTTP/2 connection error that err is (or
// wraps), if it is one: x/net's http2.ConnectionError built by Go 1.26, net/http's own
// (of an unexported package, told by its name and kind) when x/net wraps net/http's
// engine, built by Go 1.27. TestCanaryXnetConnectionError fences both.
func connectionErrorCode(err error) (http2.ErrCode, bool) {
	for ; err != nil; err = errors.Unwrap(err) {
		if ce, ok := err.(http2.ConnectionError); ok {
			return http2.ErrCode(ce), true
		}
		rt := reflect.TypeOf(err)
		if rt.Name() == "ConnectionError" && rt.PkgPath() == "net/http/internal/http2" && rt.Kind() == reflect.Uint32 {
			return http2.ErrCode(reflect.ValueOf(err).Uint()), true
		}
	}
	return http2.ErrCodeNo, false
}

// proto.ErrGoAwayAtOnce is a new connection's failure when the server sent GOAWAY with its
// first frames: it takes no stream, the request was not sent (RoundTrip tries once more on
// another connection).

var errH2PingTimeout error = &proto.TimeoutError{Msg: "endwell: HTTP/2 connection lost: no answer to PING"}

// refreshCapacity tells the pool the server's new MAX_CONCURRENT_STREAMS after a SETTINGS
// that followed the first one.
func (h *Conn) refreshCapacity() {
	if !h.wire.settingsDirty.CompareAndSwap(true, false) {
		return
	}
	h.owner.SetCapacity(h.Capacity())
}

// Usable reports whether a connection that the pool just handed out may take a request.
// If not, it gives the use back (ending the connection as need be).
func (h *Conn) Usable() bool {
	switch {
	case h.broken():
		h.owner.Remove()
		return false
	case h.wire.peerGoAway.Load():
		h.owner.Unshare()
		if h.owner.GiveBack() {
			h.endGoAway()
		}
		return false
	case h.wire.peerResetProtocol.Load():
		// x/net takes no new stream here: the connection serves its streams, then ends.
		h.owner.Unshare()
		if h.owner.GiveBack() {
			h.owner.Report(proto.Outcome{Kind: proto.ServerClose})
		}
		return false
	}
	return true
}

// broken reports whether the connection must take no more requests: it is ending, or
// x/net's read loop is over (x/net closes the connection next, and closedByNet decides
// how it ends).
func (h *Conn) broken() bool {
	w := h.wire
	return h.owner.Dead() || h.failing.Load() || h.owner.Cause() != nil ||
		w.closed.Load() || w.readError() != nil
}

// Refusal says why a new connection that Usable turned down takes no request.
func (h *Conn) Refusal() error {
	if h.wire.peerGoAway.Load() {
		return proto.ErrGoAwayAtOnce
	}
	if cause := h.owner.Cause(); cause != nil {
		return cause
	}
	return net.ErrClosed
}

// RoundTrip runs req on a new stream of the connection. The stream's use of the pool is
// given back when its body ends (EOF, error or Close), or at once on error.
func (h *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	h.refreshCapacity()
	if req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		// x/net closes the connection after this stream; take it out of circulation now.
		h.noReuse.Store(true)
		h.owner.Unshare()
	}
	// The stream and its body come in one allocation.
	body := &h2Body{stream: h2Stream{h: h, req: req}}
	s := &body.stream
	if d := h.cfg.ResponseHeaderTimeout; d > 0 {
		// As net/http's, the timeout runs from the end of the request's writing, its
		// body included (a slow upload, or the wait for a 100 Continue, is no part of it):
		// x/net says when through the trace's WroteRequest, which runs before the
		// caller's own hook, if any.
		ctx, cancel := context.WithCancelCause(req.Context())
		s.cancel = cancel
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err == nil {
					s.header.Arm(d, func() { cancel(proto.ErrResponseHeaderTimeout) })
				}
			},
		})
		req = req.WithContext(ctx) // a shallow copy: the caller's request is not changed
	}
	resp, err := h.cc.RoundTrip(req)
	if h.cfg.ResponseHeaderTimeout > 0 {
		s.header.Disarm()
	}
	if err != nil {
		err = s.requestErr(req, err)
		s.release()
		return nil, err
	}
	if h.wire.tls == nil {
		resp.TLS = nil
	}
	if isXnetNoBody(resp.Body) {
		// The stream is over: its use goes back now. The body stays x/net's own empty
		// one (http.NoBody built by Go 1.27), as net/http's HTTP/2 returns.
		s.release()
		return resp, nil
	}
	body.rc, body.s = resp.Body, s
	resp.Body = body
	return resp, nil
}

// isXnetNoBody reports whether b is x/net's empty body, which it returns for HEAD requests
// and responses that ended with their headers; the stream is then over.
//
// The type's name is read once: the types seen are remembered (x/net's empty body, and the
// last other body type), so that a response costs a type comparison.
func isXnetNoBody(b io.ReadCloser) bool {
	if b == nil || b == http.NoBody {
		return true
	}
	rt := reflect.TypeOf(b)
	if t, _ := xnetNoBodyType.Load().(reflect.Type); t == rt {
		return true
	}
	if t, _ := xnetBodyType.Load().(reflect.Type); t == rt {
		return false
	}
	if rt.Name() == "noBodyReader" && rt.PkgPath() == "golang.org/x/net/http2" {
		xnetNoBodyType.Store(rt)
		return true
	}
	xnetBodyType.Store(rt)
	return false
}

// xnetNoBodyType and xnetBodyType remember isXnetNoBody's answers by type.
var xnetNoBodyType, xnetBodyType atomic.Value

// h2Stream is one request's use of an HTTP/2 connection.
type h2Stream struct {
	h        *Conn
	req      *http.Request           // the caller's
	cancel   context.CancelCauseFunc // ends the request's header-timeout context; nil if none
	released atomic.Bool

	header proto.HeaderWait // ResponseHeaderTimeout's timer, armed once the request is written
}

// release gives the stream's use of the connection back to the pool, once. The connection
// ends gracefully when it takes no new streams (the server's GOAWAY, DisableKeepAlives,
// Connection: close) and this was its last.
func (s *h2Stream) release() {
	if !s.released.CompareAndSwap(false, true) {
		return
	}
	if s.cancel != nil {
		s.cancel(nil)
	}
	h := s.h
	h.refreshCapacity()
	// A broken connection goes back to the pool never: closedByNet or connError decides
	// how it ends, if nothing has yet.
	h.owner.ReleaseUse(h.broken(), func() {
		if h.wire.peerGoAway.Load() {
			h.endGoAway()
			return
		}
		h.owner.Report(proto.Outcome{Kind: proto.ServerClose})
	})
}

// requestErr maps x/net's error for a request to what the caller sees (see streamErr),
// or the timeout or cancellation that ended the request.
func (s *h2Stream) requestErr(req *http.Request, err error) error {
	ctx := req.Context()
	if ctx.Err() != nil && s.h.owner.Cause() == nil {
		if cause := context.Cause(ctx); cause == proto.ErrResponseHeaderTimeout {
			return proto.ErrResponseHeaderTimeout
		}
		if errors.Is(err, ctx.Err()) {
			return ctx.Err()
		}
	}
	return s.streamErr(err)
}

// streamErr maps x/net's error for a stream, from RoundTrip or a body's Read, to what the
// caller sees, at a stable depth whatever the timing:
//   - a connection error: the *ProtocolError that ended the connection (connError decides
//     it here if x/net's closing of the connection has not yet);
//   - why endwell ended the connection, if it did, marked proto.ErrNotSent if the server never
//     saw the stream;
//   - a stream error (RST_STREAM): a *StreamError;
//   - else x/net's error, marked proto.ErrNotSent when the server never saw the stream, or
//     proto.ErrServerClosedConn when it closed the connection before answering.
func (s *h2Stream) streamErr(err error) error {
	h := s.h
	if code, ok := connectionErrorCode(err); ok {
		return h.connError(code)
	}
	if code := h.connErr.Load(); code != uint32(http2.ErrCodeNo) {
		// x/net's frame parser met a connection error (CountError said which) and
		// failed the streams with an error of its own, ErrFrameTooLarge say.
		return h.connError(http2.ErrCode(code))
	}
	notSent := h2NotSent(err)
	if cause := h.owner.Cause(); cause != nil {
		if notSent && !errors.Is(cause, proto.ErrNotSent) {
			return &h2Error{err: cause, notSent: true}
		}
		return cause
	}
	var se http2.StreamError
	isStreamErr := errors.As(err, &se)
	if w := h.wire; w.peerGoAway.Load() && !isStreamErr {
		if code := http2.ErrCode(w.peerCode.Load()); code != http2.ErrCodeNo {
			// The server's GOAWAY carried an error (the wire saw it before x/net did), and
			// x/net failed this stream for it, or for the close that followed, before the
			// connection's end was decided (endGoAway, when its last stream is done): the
			// same typed error the decision carries, whichever engine and timing.
			pe := &proto.ProtocolError{Err: &proto.H2ConnError{Code: code, Remote: true}}
			if notSent {
				return &h2Error{err: pe, notSent: true}
			}
			return pe
		}
	}
	switch {
	case isStreamErr:
		return &proto.StreamError{StreamID: se.StreamID, Code: se.Code, Err: err}
	case notSent:
		return &h2Error{err: err, notSent: true}
	case h2ServerClosed(err):
		return &h2Error{err: err, serverClosed: true}
	}
	return err
}

// h2NotSent reports whether x/net's error says the server never processed the stream: it
// was refused (REFUSED_STREAM), above the Last-Stream-ID of the server's GOAWAY, or never
// started because the connection was closing. x/net's errors for the last three are not
// exported: they are recognised here, and only here, by their text.
func h2NotSent(err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return true
	}
	switch msg := err.Error(); {
	case msg == "http2: Transport received Server's graceful shutdown GOAWAY",
		msg == "http2: client conn not usable",
		msg == "http2: client conn could not be established",
		// The first stream of a connection, above the Last-Stream-ID of a GOAWAY with an
		// error code.
		strings.HasPrefix(msg, "http2: Transport received GOAWAY from server ErrCode:"):
		return true
	}
	return false
}

// h2ServerClosed reports whether x/net's error says the server closed the connection while
// the stream was open, before it answered.
func h2ServerClosed(err error) bool {
	var gae http2.GoAwayError
	return errors.As(err, &gae) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// h2Error is an HTTP/2 request error that endwell classified: errors.Is(err, proto.ErrNotSent)
// is true for a stream the server never processed (safe to retry whatever its method),
// errors.Is(err, proto.ErrServerClosedConn) for one whose connection the server closed before
// answering. It unwraps to x/net's error.
type h2Error struct {
	err          error
	notSent      bool
	serverClosed bool
}

func (e *h2Error) Error() string {
	msg := e.err.Error()
	if strings.HasPrefix(msg, "endwell: ") {
		return msg
	}
	return "endwell: " + msg
}
func (e *h2Error) Unwrap() error { return e.err }
func (e *h2Error) Is(target error) bool {
	return e.notSent && target == proto.ErrNotSent || e.serverClosed && target == proto.ErrServerClosedConn
}

// h2Body is an HTTP/2 response body: it gives the stream's use back when it ends.
type h2Body struct {
	rc     io.ReadCloser
	s      *h2Stream // &stream
	stream h2Stream
	closed atomic.Bool // Close was called: Read returns proto.ErrBodyClosed
}

func (b *h2Body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, proto.ErrBodyClosed
	}
	n, err := b.rc.Read(p)
	if err != nil {
		switch {
		case b.closed.Load():
			// A Close while this Read was blocked: x/net's own error says the same.
			err = proto.ErrBodyClosed
		case err == io.ErrUnexpectedEOF && b.s.h.owner.Cause() == nil:
			// A body cut short (END_STREAM before its Content-Length, a truncated gzip
			// stream, the connection's end): io.ErrUnexpectedEOF itself, as net/http's
			// and endwell's HTTP/1.1.
		case err != io.EOF:
			err = b.s.streamErr(err)
			proto.AwaitClientTimer(b.s.req, err)
		}
		b.s.release()
	}
	return n, err
}

// Close ends the body. Before its end, x/net resets the stream (RST_STREAM CANCEL) and the
// connection lives on. A Read after Close, or blocked during it, returns proto.ErrBodyClosed.
func (b *h2Body) Close() error {
	b.closed.Store(true)
	err := b.rc.Close()
	b.s.release()
	return err
}

// Layer is the top of an HTTP/2 connection's teardown stack: its goodbye is GOAWAY
// (NO_ERROR, last-stream-id 0), written by endwell on its wire once the open streams end.
type Layer struct {
	H   *Conn
	TLS *shutdown.TLS // the TLS layer below, or nil: its Raw tells TLS's EOF from TCP's
}

// Graceful waits for the connection's open streams to end, then writes GOAWAY on the wire
// and ends x/net's use of the connection. If ctx ends first, it returns ctx's cause: the
// layers below abort. If the server has already ended its side (EOF), there is nothing to
// say at this level.
//
// x/net's ClientConn.Shutdown is not used: built by Go 1.26 it sends a GOAWAY before the
// streams end, built by Go 1.27 (a wrapper of net/http's HTTP/2) none at all. The wait
// and the frame are endwell's on both.
func (l *Layer) Graceful(ctx context.Context, p *shutdown.Progress) error {
	h := l.H
	w := h.wire
	if rerr := w.readError(); rerr != nil {
		if l.TLS != nil && rerr == io.EOF && !l.TLS.Raw.PeerFIN() && !l.TLS.Raw.PeerReset() {
			p.Note(shutdown.CloseNotifyReceived) // TLS said EOF while TCP did not: the server's
		}
		w.writesOff.Store(true)
		h.cc.Close()
		return nil
	}
	err := h.owner.WaitUnused(ctx, p)
	if err == nil && h.failing.Load() {
		// A connection error while the streams ended (connError has sent its GOAWAY):
		// no goodbye below either.
		err = h.owner.Cause()
	}
	if err == nil {
		err = w.sendGoAway(ctx, http2.ErrCodeNo)
	}
	if w.goAwaySent.Load() {
		p.Note(shutdown.GoAwaySent)
	}
	w.writesOff.Store(true)
	h.cc.Close() // fails what x/net still has; its Close of the wire closes nothing
	if err == nil {
		err = w.stopReads(ctx)
	}
	if err != nil && ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// Abort fails the open streams and sends nothing: no GOAWAY(NO_ERROR), and x/net's close
// closes nothing (the layers below close the socket, without close_notify).
func (l *Layer) Abort() {
	l.H.wire.writesOff.Store(true)
	l.H.cc.Close()
}
