package endwell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/h3"
	"github.com/endwell/endwell/internal/proto"
	"github.com/quic-go/quic-go"
)

// HTTP3Config turns HTTP/3 on for a [Transport] (its HTTP3 field). The zero value is valid.
type HTTP3Config struct {
	// Only, if true, sends every https:// request over HTTP/3 alone: no TCP, no fallback.
	// A Proxy that names a proxy for such a request fails it (QUIC does not go through
	// HTTP or SOCKS proxies; endwell never bypasses a proxy it was given).
	//
	// Only false (the default) finds HTTP/3 through Alt-Svc (RFC 7838): an https origin
	// that answers over TCP with an "h3" alternative is dialled over QUIC in the
	// background; once that connection is up, its requests go over HTTP/3. No request
	// waits for QUIC: until then, and while an alternative that failed is marked broken
	// (5 minutes, doubling at each failure in a row, up to 2 days), requests go over TCP.
	// Requests through a proxy, and Upgrade requests, always go over TCP.
	Only bool

	// QUIC configures the QUIC connections; it is cloned. Nil, or zero fields, mean
	// endwell's defaults: an idle timeout of 2 minutes (above IdleConnTimeout's default,
	// so that the pool, not a silent QUIC timeout, ends an idle connection), keep-alive
	// PINGs every 15 seconds, no streams opened by the server.
	QUIC *quic.Config
}

// An HTTP/3 connection ends as DESIGN's third column says: a graceful ending sends
// CONNECTION_CLOSE with H3_NO_ERROR (0x100) once its requests are done, then keeps the
// socket for a closing period of three probe timeouts, answering late packets; an abort
// sends H3_REQUEST_CANCELLED (0x10c) in one packet and releases the socket at once; a
// body closed early resets its stream only. internal/h3 speaks the protocol and reports
// what happened; this file turns its reports into the connection's ending.

// h3Conn is the HTTP/3 side of a conn.
type h3Conn struct {
	pc *conn
	c  *h3.Conn
	// ready is set once the dial has made pc whole: from then on, the hooks end pc.
	ready atomic.Bool
	// early holds a hook's ending that came before ready, run by start.
	early atomic.Pointer[func()]
	// alt is the Alt-Svc alternative this connection serves as "up", or nil; guarded by
	// the transport's altSvcs.mu.
	alt *altSvc
}

// h3Only reports whether requests of scheme go over HTTP/3 alone (HTTP3.Only, https).
func (t *Transport) h3Only(scheme string) bool {
	return scheme == "https" && t.HTTP3 != nil && t.HTTP3.Only
}

// dialH3 makes an HTTP/3 connection to tg's server.
func (t *Transport) dialH3(ctx context.Context, tg *target) (*conn, error) {
	h := &h3Conn{}
	cfg := &h3.Config{
		TLSClientConfig:        t.tlsConfig(tg.host, nil),
		MaxResponseHeaderBytes: t.cfg.maxHeaderBytes,
		DisableCompression:     t.DisableCompression,
		OnGoAway:               h.peerGoAway,
		OnPeerClose:            h.peerClosed,
		OnLocalClose:           h.localClosed,
	}
	if t.HTTP3 != nil {
		cfg.QUIC = t.HTTP3.QUIC
	}
	c, err := h3.Dial(ctx, tg.addr, cfg)
	if err != nil {
		return nil, &DialError{Op: "h3", Addr: tg.addr, Err: err}
	}
	pc := &conn{t: t, key: tg.poolKey, created: time.Now(), serverAddr: tg.addr}
	h.pc, h.c = pc, c
	pc.h3 = h
	pc.tel = newConnTelemetry(tg.addr, c.RemoteAddr(), "3")
	return pc, nil
}

// start hands the connection's endings to the engine, once the dial has made pc whole.
func (h *h3Conn) start() {
	h.ready.Store(true)
	if f := h.early.Swap(nil); f != nil {
		(*f)()
	}
}

// whenReady runs end now, or once the connection is whole.
func (h *h3Conn) whenReady(end func()) {
	if h.ready.Load() {
		end()
		return
	}
	h.early.CompareAndSwap(nil, &end) // the first hook's ending wins
	if h.ready.Load() {
		if f := h.early.Swap(nil); f != nil {
			(*f)()
		}
	}
}

// peerGoAway runs when the server's GOAWAY arrives: the pool hands the connection out no
// more, and it ends once its last request does (at once if it is idle).
func (h *h3Conn) peerGoAway() {
	h.whenReady(func() {
		pc := h.pc
		if e := pc.entry.Load(); e != nil && pc.t.pool.Unshare(e) {
			pc.Report(proto.Outcome{Kind: proto.GoAway})
		}
	})
}

// peerClosed runs when the connection ended not by us: the server's CONNECTION_CLOSE
// (draining: nothing is sent), an idle timeout, a stateless reset. The teardown only
// releases the socket.
func (h *h3Conn) peerClosed(err error) {
	h.whenReady(func() {
		pc := h.pc
		var idle *quic.IdleTimeoutError
		var ae *quic.ApplicationError
		switch {
		case errors.As(err, &idle):
			pc.Report(proto.Outcome{Kind: proto.Failed, Cause: &timeoutError{Msg: "endwell: HTTP/3 connection lost: QUIC idle timeout"}})
		case errors.As(err, &ae) && uint64(ae.ErrorCode) == h3.CodeNoError:
			pc.Report(proto.Outcome{Kind: proto.PeerClosed})
		case errors.As(err, &ae):
			pc.Report(proto.Outcome{Kind: proto.PeerClosed, Cause: &ProtocolError{Err: fmt.Errorf("server closed the HTTP/3 connection: %w", err)}})
		default:
			pc.Report(proto.Outcome{Kind: proto.PeerClosed, Cause: fmt.Errorf("endwell: HTTP/3 connection closed: %w", err)})
		}
	})
}

// localClosed runs when quic-go closed the connection on its own: after the server's
// GOAWAY once no request is in flight (H3_NO_ERROR, a goodbye whose closing period the
// teardown keeps), or on a protocol error (its code sent: the teardown releases the
// socket).
func (h *h3Conn) localClosed(err error) {
	h.whenReady(func() {
		pc := h.pc
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && uint64(ae.ErrorCode) == h3.CodeNoError {
			pc.Report(proto.Outcome{Kind: proto.GoAway})
			return
		}
		pc.Report(proto.Outcome{Kind: proto.Failed, Cause: &ProtocolError{Err: fmt.Errorf("HTTP/3 connection error: %w", err)}})
	})
}

// usable reports whether a connection that Get just handed out may take the request. If
// not, it gives the use back (ending the connection as need be).
func (h *h3Conn) usable() bool {
	pc := h.pc
	t := pc.t
	e := pc.entry.Load()
	switch {
	case pc.Dead():
		t.pool.Remove(e)
		return false
	case h.c.GoAwayReceived():
		t.pool.Unshare(e)
		if t.pool.Put(e) {
			pc.Report(proto.Outcome{Kind: proto.GoAway})
		}
		return false
	}
	return true
}

// roundTrip runs req on a new stream. The stream's use of the pool is given back when its
// body ends (EOF, error or Close), or at once on error.
func (h *h3Conn) roundTrip(req *http.Request) (*http.Response, error) {
	pc := h.pc
	t := pc.t
	orig := req
	body := &h3Body{h: h, req: req}
	if d := t.cfg.responseHeaderTimeout; d > 0 {
		ctx, cancel := context.WithCancelCause(req.Context())
		body.cancel = cancel
		timer := time.AfterFunc(d, func() { cancel(ErrResponseHeaderTimeout) })
		defer timer.Stop()
		req = req.WithContext(ctx) // a shallow copy: the caller's request is not changed
	}
	resp, err := h.c.RoundTrip(req)
	if err != nil {
		body.release()
		return nil, h.requestErr(req, err)
	}
	resp.Request = orig
	body.rc = resp.Body
	resp.Body = body
	return resp, nil
}

// requestErr maps internal/h3's error for a request to what the caller sees.
func (h *h3Conn) requestErr(req *http.Request, err error) error {
	if cause := h.pc.Cause(); cause != nil {
		return cause
	}
	ctx := req.Context()
	if ctx.Err() != nil {
		if context.Cause(ctx) == ErrResponseHeaderTimeout {
			return ErrResponseHeaderTimeout
		}
		return ctx.Err()
	}
	if errors.Is(err, h3.ErrConnClosing) {
		return &h3Error{err: err, notSent: true}
	}
	return err
}

// h3Error is an HTTP/3 request error that endwell classified: errors.Is(err, ErrNotSent) is
// true for a request the connection never sent. It unwraps to internal/h3's error.
type h3Error struct {
	err     error
	notSent bool
}

func (e *h3Error) Error() string        { return "endwell: " + e.err.Error() }
func (e *h3Error) Unwrap() error        { return e.err }
func (e *h3Error) Is(target error) bool { return e.notSent && target == ErrNotSent }

// h3Body is an HTTP/3 response body: it gives the request's use of the connection back
// when it ends.
type h3Body struct {
	h        *h3Conn
	req      *http.Request // the caller's
	rc       io.ReadCloser
	cancel   context.CancelCauseFunc // ends the header-timeout context; nil if none
	released atomic.Bool
	closed   atomic.Bool
}

func (b *h3Body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, ErrBodyClosed
	}
	n, err := b.rc.Read(p)
	if err != nil {
		switch {
		case b.closed.Load():
			err = ErrBodyClosed
		case err != io.EOF:
			if cause := b.h.pc.Cause(); cause != nil {
				err = cause
			}
			proto.AwaitClientTimer(b.req, err)
		}
		b.release()
	}
	return n, err
}

// Close ends the body. Before its end, the stream is reset (STOP_SENDING and
// RESET_STREAM with H3_REQUEST_CANCELLED) and the connection lives on.
func (b *h3Body) Close() error {
	b.closed.Store(true)
	err := b.rc.Close()
	b.release()
	return err
}

// release gives the request's use of the connection back to the pool, once. The
// connection ends gracefully when it takes no new requests (the server's GOAWAY,
// DisableKeepAlives) and this was its last.
func (b *h3Body) release() {
	if !b.released.CompareAndSwap(false, true) {
		return
	}
	if b.cancel != nil {
		b.cancel(nil)
	}
	pc := b.h.pc
	pc.ReleaseUse(pc.Dead(), func() {
		// The pool dropped it at its last use: it takes no new requests (GOAWAY).
		pc.Report(proto.Outcome{Kind: proto.GoAway})
	})
}
