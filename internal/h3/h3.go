// Package h3 is endwell's HTTP/3 protocol package: the seam to quic-go and its http3
// package, and the teardown layer of an HTTP/3 connection (CONNECTION_CLOSE, closing
// period).
//
// endwell dials and owns every QUIC connection and its UDP socket: [Dial] opens a socket of
// its own, runs a [quic.Transport] on it and dials one connection, which quic-go's
// [http3.ClientConn] speaks HTTP/3 over. Nothing closes the socket but the connection's
// teardown layer ([Conn.Layer]), so that every ending goes through endwell's engine:
//
//   - graceful: no new requests, in-flight requests end, CONNECTION_CLOSE of the application
//     kind with H3_NO_ERROR (0x100), then a closing period of at least three probe timeouts
//     (RFC 9000, section 10.2) in which quic-go answers late packets of the peer with the
//     CONNECTION_CLOSE again, then the socket is released;
//   - abort: CONNECTION_CLOSE with H3_REQUEST_CANCELLED (0x10c), one packet, no closing
//     period, and the socket is released at once;
//   - the peer's CONNECTION_CLOSE (draining), an idle timeout or a stateless reset: nothing
//     is sent; the layer only releases the socket.
//
// A stream abort (a response body closed before its end, a cancelled request context) puts
// STOP_SENDING and RESET_STREAM with H3_REQUEST_CANCELLED on the wire and leaves the
// connection serving other requests.
//
// The package reports what happened through plain func hooks ([Config]); it decides nothing
// about the pool. It does not import endwell's root package nor pool/.
package h3

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/endwell/endwell/shutdown"
)

// HTTP/3 error codes (RFC 9114, section 8.1) that endwell puts on the wire.
const (
	// CodeNoError is H3_NO_ERROR, the code of a graceful CONNECTION_CLOSE.
	CodeNoError = uint64(http3.ErrCodeNoError) // 0x100
	// CodeRequestCancelled is H3_REQUEST_CANCELLED, the code of a stream abort
	// (STOP_SENDING, RESET_STREAM) and of an aborted connection's CONNECTION_CLOSE.
	CodeRequestCancelled = uint64(http3.ErrCodeRequestCanceled) // 0x10c
)

// Defaults of a [Config] whose QUIC field is nil, or whose QUIC fields are zero.
const (
	// DefaultMaxIdleTimeout is the QUIC idle timeout endwell offers (the connection's is
	// the smaller of both peers'). It is above the pool's default idle timeout (90 s), so
	// that the pool, not a silent QUIC idle timeout, ends an idle connection; with
	// keep-alives on, QUIC's idle timeout fires only when the peer has vanished.
	DefaultMaxIdleTimeout = 2 * time.Minute
	// DefaultKeepAlivePeriod is how often an otherwise silent connection sends a PING, so
	// that a peer with a shorter idle timeout than the pool's (30 s is common) does not end
	// it silently. quic-go caps it at half the negotiated idle timeout.
	DefaultKeepAlivePeriod = 15 * time.Second
	// DefaultMaxStreams is what [Conn.MaxStreams] reports when the peer's
	// initial_max_streams_bidi transport parameter was not seen.
	DefaultMaxStreams = 100
)

// ErrConnClosing is returned, wrapped, by [Conn.RoundTrip] for a request that was not sent
// because the connection takes no new requests: its teardown began, the server sent
// GOAWAY, or the connection is closed. Such a request may be retried on another connection.
// It unwraps to [net.ErrClosed].
var ErrConnClosing error = connClosingError{}

type connClosingError struct{}

func (connClosingError) Error() string { return "h3: connection closing, request not sent" }
func (connClosingError) Unwrap() error { return net.ErrClosed }

// Config configures [Dial]. A nil *Config is valid and means the zero Config.
type Config struct {
	// TLSClientConfig is the TLS configuration; it is cloned, its NextProtos is set to
	// ["h3"], and an empty ServerName is set to the host of the dialed address. Nil means
	// the zero tls.Config.
	TLSClientConfig *tls.Config

	// QUIC is the QUIC configuration; it is cloned. Nil means endwell's defaults:
	// MaxIdleTimeout [DefaultMaxIdleTimeout], KeepAlivePeriod [DefaultKeepAlivePeriod],
	// MaxIncomingStreams -1 (a server may not open bidirectional streams, RFC 9114), and
	// quic-go's defaults otherwise. In a non-nil QUIC, those three fields when zero take
	// the same defaults; a negative KeepAlivePeriod turns keep-alives off. A Tracer is kept:
	// endwell's own tracer wraps it and passes every event on.
	QUIC *quic.Config

	// MaxResponseHeaderBytes limits the size of a response's header section. Zero means
	// quic-go's default, 10 MB.
	MaxResponseHeaderBytes int64

	// DisableCompression, if true, keeps the connection from asking for gzip on its own
	// (as net/http.Transport.DisableCompression).
	DisableCompression bool

	// The hooks below are called without locks, from quic-go's goroutines or from one
	// started for the purpose; they must not block. Nil means no call. OnPeerClose and
	// OnLocalClose are not called once the Layer has begun (Graceful or Abort): the
	// connection's owner is ending it already, and the Layer deals with the close.

	// OnGoAway is called once when the server sent GOAWAY: the connection takes no new
	// requests (RoundTrip returns ErrConnClosing), and the ones in flight go on. quic-go
	// closes the connection itself with H3_NO_ERROR once none is in flight; OnLocalClose
	// then follows (unless the Layer has begun), always after OnGoAway.
	OnGoAway func()

	// OnPeerClose is called once when the connection ended without a CONNECTION_CLOSE of
	// ours, nor a call of the Layer: the server's CONNECTION_CLOSE (err is a
	// *quic.ApplicationError or *quic.TransportError with Remote set; we are draining),
	// an idle timeout (*quic.IdleTimeoutError), a stateless reset
	// (*quic.StatelessResetError), or a socket error. The socket stays open until the
	// Layer runs: its Graceful sends nothing and releases it.
	OnPeerClose func(err error)

	// OnLocalClose is called once when quic-go closed the connection on its own, not
	// through the Layer: after a GOAWAY once no request was in flight (err is a
	// *quic.ApplicationError with code H3_NO_ERROR), or on a protocol error of the peer
	// (another code; a *quic.TransportError for QUIC-level errors). Its CONNECTION_CLOSE
	// is sent and its closing period has begun: the Layer's Graceful waits it out and
	// releases the socket.
	OnLocalClose func(err error)
}

// Conn is one HTTP/3 connection that endwell dialed, with its own UDP socket. Conns are
// made by [Dial] (the zero Conn is not usable) and are safe for concurrent use by multiple
// goroutines. A Conn ends through its [Conn.Layer] alone: until the layer has run
// (Graceful or Abort), the socket stays open, even once the QUIC connection is closed.
type Conn struct {
	hooks Config // only the hooks are read

	udp *net.UDPConn
	tr  *quic.Transport
	qc  *quic.Conn
	cc  *http3.ClientConn

	peerMaxStreams atomic.Int64 // the peer's initial_max_streams_bidi; 0 until seen
	goAway         atomic.Bool  // the server's GOAWAY was seen
	goAwayNotified atomic.Bool  // OnGoAway was called (or is being called)

	mu         sync.Mutex    // guards the following
	inFlight   int           // requests between RoundTrip and the end of their body
	idle       chan struct{} // closed when inFlight drops to zero; nil if nobody waits
	closing    bool          // no new requests: a teardown began, or the connection closed
	initiated  bool          // the Layer decided the ending (Graceful or Abort)
	settled    bool          // the fields below are set: the QUIC connection is closed
	closeErr   error         // why the QUIC connection closed (its context's cause)
	closeCode  uint64        // the CONNECTION_CLOSE code we sent, if closeSent
	closeSent  bool          // a CONNECTION_CLOSE of ours went out (by endwell or quic-go)
	closedAt   time.Time     // when the QUIC connection closed
	releasedAt time.Time     // when the socket was released; zero until then

	releaseOnce sync.Once
}

var _ http.RoundTripper = (*Conn)(nil)

// Dial opens a UDP socket of its own (of the address's family), runs a quic.Transport on
// it, dials addr ("host:port") with ALPN h3 and returns once the handshake is complete.
// ctx bounds the name resolution and the handshake. On any failure every socket and
// goroutine of the attempt is released before Dial returns.
func Dial(ctx context.Context, addr string, cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	raddr, host, err := resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if raddr.Addr().Is6() {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, err
	}
	c := &Conn{
		hooks: Config{OnGoAway: cfg.OnGoAway, OnPeerClose: cfg.OnPeerClose, OnLocalClose: cfg.OnLocalClose},
		udp:   udp,
		tr:    &quic.Transport{Conn: udp},
	}
	tlsConf := tlsConfig(cfg.TLSClientConfig, host)
	qc, err := c.tr.Dial(ctx, net.UDPAddrFromAddrPort(raddr), tlsConf, c.quicConfig(cfg.QUIC))
	if err != nil {
		c.tr.Close() // stops the transport's goroutines; the socket is ours to close
		udp.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("h3: dial %s: %w", addr, context.Cause(ctx))
		}
		return nil, fmt.Errorf("h3: dial %s: %w", addr, err)
	}
	c.qc = qc
	c.cc = (&http3.Transport{
		MaxResponseHeaderBytes: int(min(cfg.MaxResponseHeaderBytes, int64(maxInt))),
		DisableCompression:     cfg.DisableCompression,
	}).NewClientConn(qc)
	// No goroutine until the connection ends: then one, which classifies the ending and
	// calls the hooks, and exits.
	context.AfterFunc(qc.Context(), c.onClosed)
	if ga := goAwayContext(c.cc); ga != nil {
		// Nor until the server's GOAWAY, if ever: one, which reports it, and exits. It
		// is stopped with the connection.
		stop := context.AfterFunc(ga, c.noteGoAway)
		context.AfterFunc(qc.Context(), func() { stop() })
	}
	return c, nil
}

// goAwayContext returns the context that quic-go's ClientConn cancels when the server's
// GOAWAY arrives, or nil. quic-go exports no other sign of the GOAWAY while requests are
// in flight, short of building qlog events for every packet (a tracer, which cost a third
// of the throughput at 32 concurrent requests); so endwell reads the unexported field,
// set before NewClientConn returns and never changed. TestGoAwayContextCanary fences it
// (quic-go v0.65.0).
func goAwayContext(cc *http3.ClientConn) context.Context {
	f := reflect.ValueOf(cc).Elem().FieldByName("goAwayCtx")
	if !f.IsValid() || f.Type() != reflect.TypeFor[context.Context]() {
		return nil
	}
	return *(*context.Context)(unsafe.Pointer(f.UnsafeAddr()))
}

const maxInt = int(^uint(0) >> 1)

// resolve looks host up (the first address wins) and returns the address to dial and the
// host name for TLS.
func resolve(ctx context.Context, addr string) (netip.AddrPort, string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, "", fmt.Errorf("h3: dial %s: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		p, lerr := net.DefaultResolver.LookupPort(ctx, "udp", portStr)
		if lerr != nil {
			return netip.AddrPort{}, "", fmt.Errorf("h3: dial %s: %w", addr, lerr)
		}
		port = uint64(p)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), host, nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, "", fmt.Errorf("h3: dial %s: %w", addr, err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, "", fmt.Errorf("h3: dial %s: no address for %s", addr, host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(port)), host, nil
}

func tlsConfig(base *tls.Config, host string) *tls.Config {
	var conf *tls.Config
	if base == nil {
		conf = &tls.Config{}
	} else {
		conf = base.Clone()
	}
	conf.NextProtos = []string{http3.NextProtoH3}
	if conf.ServerName == "" {
		conf.ServerName = host
	}
	return conf
}

// quicConfig returns the QUIC configuration to dial with: base cloned, endwell's defaults
// filled in, and endwell's tracer wrapping base's.
func (c *Conn) quicConfig(base *quic.Config) *quic.Config {
	var conf *quic.Config
	if base == nil {
		conf = &quic.Config{}
	} else {
		conf = base.Clone()
	}
	if conf.MaxIdleTimeout == 0 {
		conf.MaxIdleTimeout = DefaultMaxIdleTimeout
	}
	switch {
	case conf.KeepAlivePeriod == 0:
		conf.KeepAlivePeriod = DefaultKeepAlivePeriod
	case conf.KeepAlivePeriod < 0:
		conf.KeepAlivePeriod = 0 // quic-go: off
	}
	if conf.MaxIncomingStreams == 0 {
		conf.MaxIncomingStreams = -1
	}
	if conf.Tracer != nil {
		// A tracer of the user's: quic-go builds its qlog events anyway, and endwell's
		// wrapper reads the GOAWAY and the peer's stream limit from them on the way.
		// Without one, endwell sets none: building the events cost a third of the
		// throughput at 32 concurrent requests (BenchmarkHTTP3).
		conf.Tracer = c.tracer(conf.Tracer)
	}
	return conf
}

// RoundTrip sends req on the connection and returns the response, with Proto "HTTP/3.0".
// It does not modify req. A request that could not be sent because the connection takes no
// new requests fails with an error wrapping [ErrConnClosing]. Closing the response body
// before its end, or cancelling req's context, aborts the stream with STOP_SENDING and
// RESET_STREAM (H3_REQUEST_CANCELLED); the connection goes on serving other requests.
// req's body is closed, on errors too.
func (c *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody *onceCloser
	if req.Body != nil && req.Body != http.NoBody {
		reqBody = &onceCloser{ReadCloser: req.Body}
	}
	if !c.acquire() {
		if reqBody != nil {
			reqBody.Close()
		}
		return nil, ErrConnClosing
	}
	// The request quic-go sees runs under a context of ours, so that closing the response
	// body early can cancel the stream both ways (quic-go's body Close only stops reading).
	ctx, cancel := context.WithCancel(req.Context())
	r := req.WithContext(ctx)
	if reqBody != nil {
		r.Body = reqBody
	}
	resp, err := c.cc.RoundTrip(r)
	if err != nil {
		cancel()
		c.releaseRequest()
		if reqBody != nil {
			reqBody.Close()
		}
		if req.Context().Err() == nil && isConnUnusable(err) {
			// quic-go could not open a stream (GOAWAY, connection closed): nothing was
			// sent. On a connection still open, that is the server's GOAWAY (which
			// quic-go does not report otherwise, without a qlog tracer). A request the
			// server refused unprocessed (H3_REQUEST_REJECTED, as a *http3.Error) is
			// passed on as it is.
			if c.qc.Context().Err() == nil {
				c.noteGoAway()
			}
			return nil, fmt.Errorf("%w: %w", ErrConnClosing, err)
		}
		return nil, err
	}
	resp.Request = req
	b := &body{rc: resp.Body, c: c, cancel: cancel}
	// The stream is reset once the context is done (quic-go cancels it both ways): the
	// request is no longer in flight, even if its body is never closed.
	b.mu.Lock()
	b.stopCtx = context.AfterFunc(ctx, b.finish)
	b.mu.Unlock()
	resp.Body = b
	return resp, nil
}

// isConnUnusable reports whether err is quic-go's errConnUnusable: no request stream could
// be opened (GOAWAY received, connection closed), so the request was not sent. The type is
// unexported; its message is fenced by a canary test.
func isConnUnusable(err error) bool {
	return strings.HasPrefix(err.Error(), "http3: conn unusable: ")
}

// acquire counts a new request in flight, unless the connection takes no new requests.
func (c *Conn) acquire() bool {
	if c.goAway.Load() || c.qc.Context().Err() != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.inFlight++
	return true
}

// releaseRequest counts a request out of flight.
func (c *Conn) releaseRequest() {
	c.mu.Lock()
	c.inFlight--
	if c.inFlight == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
}

// MaxStreams reports how many requests the connection can carry at once: the peer's
// initial_max_streams_bidi transport parameter, or [DefaultMaxStreams] if it was not seen.
// quic-go does not export it; endwell reads it from quic-go's qlog events, which exist
// only when the QUIC configuration has a Tracer of the user's. Above the peer's limit,
// quic-go makes a request wait for a stream to free.
func (c *Conn) MaxStreams() int {
	if n := c.peerMaxStreams.Load(); n > 0 {
		return int(min(n, int64(maxInt)))
	}
	return DefaultMaxStreams
}

// InFlight reports how many requests are in flight: from RoundTrip until their response
// body is read to its end, closed, or their context is done, or RoundTrip failed.
func (c *Conn) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}

// GoAwayReceived reports whether the server sent GOAWAY.
func (c *Conn) GoAwayReceived() bool { return c.goAway.Load() }

// Done returns a channel that is closed when the QUIC connection is closed, by either
// side. The socket may still be open then: the Layer releases it.
func (c *Conn) Done() <-chan struct{} { return c.qc.Context().Done() }

// CloseCode returns the code of the CONNECTION_CLOSE that our side sent, and whether one
// was sent: H3_NO_ERROR for a graceful close (endwell's, or quic-go's after a GOAWAY),
// H3_REQUEST_CANCELLED for an abort, another code when quic-go closed on a protocol error.
// sent is false while the connection is open, and when it ended without our
// CONNECTION_CLOSE (the peer closed it, an idle timeout, a stateless reset).
func (c *Conn) CloseCode() (code uint64, sent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeSent
}

// ClosingPeriod reports how long the closing period lasted: from our CONNECTION_CLOSE to
// the release of the socket. It is zero when no CONNECTION_CLOSE of ours was sent, and
// until the socket is released; an abort's is the few microseconds between its packet
// and the socket's close.
func (c *Conn) ClosingPeriod() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closeSent || c.releasedAt.IsZero() {
		return 0
	}
	return c.releasedAt.Sub(c.closedAt)
}

// LocalAddr returns the local address of the connection's UDP socket, which is bound to
// the unspecified address of its family.
func (c *Conn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// RemoteAddr returns the address of the server.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// ConnectionState returns the QUIC connection's state: TLS, 0-RTT, datagrams.
func (c *Conn) ConnectionState() quic.ConnectionState { return c.qc.ConnectionState() }

// Layer returns the connection's teardown layer, the only layer of an HTTP/3 stack: it
// owns the UDP socket. See [Layer.Graceful] and [Layer.Abort].
func (c *Conn) Layer() shutdown.Layer { return &Layer{c: c} }
