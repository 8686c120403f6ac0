// Package endwell is an HTTP client transport, an [http.RoundTripper] with its own
// connection pool, that ends every connection the way its story ended.
//
// A finished conversation ends gracefully: TLS close_notify, TCP FIN, a bounded drain of what
// the peer still sends, then close, so the peer sees a clean end and no socket lingers in
// CLOSE_WAIT or FIN_WAIT_2. An aborted transfer (a body closed early, a cancelled context, a
// timeout, an error) ends without close_notify, as curl does since 8.9, so a server can never
// take a truncated transfer for a complete one. Every graceful close runs in the background
// under a budget ([Transport.ShutdownTimeout], 2 seconds by default) and never blocks a
// request.
//
// A [Transport] is a drop-in replacement for [http.Transport] in an [http.Client]:
//
//	t := &endwell.Transport{}
//	defer t.Shutdown(context.Background())
//	client := &http.Client{Transport: t}
package endwell

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/h1"
	"github.com/endwell/endwell/internal/h2"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
)

var _ http.RoundTripper = (*Transport)(nil)

// Transport is an [http.RoundTripper] that owns its connections and ends each of them the
// right way. Its configuration is exported fields, as in [http.Transport]; set them before
// the first request and do not change them afterwards. The zero Transport is ready to use.
//
// Transports are safe for concurrent use by multiple goroutines. Like [http.Transport], a
// Transport should be reused rather than created per request; end it with
// [Transport.Shutdown] (graceful) or [Transport.Close] (abort).
type Transport struct {
	// Proxy returns the proxy for a request, or nil for none. Zero means no proxy; set it
	// to [http.ProxyFromEnvironment] for the environment's. http:// and https:// proxy URLs
	// are supported: http:// requests go through them in absolute form, https:// requests
	// through a CONNECT tunnel.
	Proxy func(*http.Request) (*url.URL, error)

	// DialContext dials the TCP connections. Zero means a [net.Dialer] with a 30 second
	// timeout and 30 second keep-alive, as in [http.DefaultTransport]. Its context carries
	// the request's values, so that httptrace's DNS and Connect hooks fire from it, as in
	// net/http.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Dial dials the TCP connections when DialContext is nil.
	//
	// Deprecated: Use DialContext, which can be cancelled, as in [http.Transport].
	Dial func(network, addr string) (net.Conn, error)

	// DialTLSContext, if set, makes the TLS connections of https:// requests that go to
	// the server directly (not through a proxy), as in [http.Transport]: DialContext,
	// TLSClientConfig and TLSHandshakeTimeout are then not used for them. endwell
	// completes the handshake if the dialer did not, and reads ALPN from it (a server
	// that chose h2 is spoken to in HTTP/2).
	//
	// endwell's endings need the TCP socket under the TLS session: when the returned
	// connection is a *[tls.Conn], endwell takes the socket from its NetConn and ends the
	// connection as any other (close_notify, FIN, drain; aborts without close_notify),
	// but it no longer sees the session's reads at the TCP level, so its records cannot
	// tell the server's close_notify from a bare FIN. Any other connection type (a TLS
	// library of its own) is treated as opaque: it is spoken to in HTTP/1.1 and its
	// endings are a close of the connection, whatever that library's Close sends.
	DialTLSContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// DialTLS is DialTLSContext without a context, used when DialTLSContext is nil.
	//
	// Deprecated: Use DialTLSContext, as in [http.Transport].
	DialTLS func(network, addr string) (net.Conn, error)

	// TLSClientConfig configures TLS. Zero means the default configuration. It is cloned
	// before use; its NextProtos are replaced by the protocols this transport speaks.
	TLSClientConfig *tls.Config

	// TLSHandshakeTimeout bounds the TLS handshake. Zero means 10 seconds; negative means
	// no limit other than the request's context.
	TLSHandshakeTimeout time.Duration

	// DisableKeepAlives, if true, uses each connection for one request only and then
	// closes it gracefully (reason keepalives_disabled).
	DisableKeepAlives bool

	// DisableCompression, if true, stops the transport from asking for gzip on its own.
	// When it does ask (the request has no Accept-Encoding and no Range), it decompresses
	// the response transparently and sets [http.Response.Uncompressed], as net/http does.
	DisableCompression bool

	// MaxIdleConns limits idle connections over all hosts. Zero means 100, as in
	// [http.DefaultTransport]; negative means no limit.
	MaxIdleConns int

	// MaxIdleConnsPerHost limits idle connections per host. Zero means 32: net/http's
	// default of 2 makes busy clients close and redial connections all the time. Negative
	// means none, as in net/http: each HTTP/1.1 connection closes gracefully after its
	// response (an HTTP/2 or HTTP/3 connection, which many requests share at once, is
	// kept with no limit).
	MaxIdleConnsPerHost int

	// MaxConnsPerHost limits connections per host, dialing, active and idle. Requests over
	// the limit wait, in order, until a connection frees or their context ends. Zero means
	// no limit.
	MaxConnsPerHost int

	// IdleConnTimeout is how long a connection may stay idle before it is closed
	// gracefully (reason idle_timeout). Zero means 90 seconds, as in
	// [http.DefaultTransport]; negative means no limit.
	IdleConnTimeout time.Duration

	// ResponseHeaderTimeout bounds the wait for the response headers once the request is
	// written. When it runs out, the connection is aborted and RoundTrip returns
	// [ErrResponseHeaderTimeout]. Zero means no limit.
	ResponseHeaderTimeout time.Duration

	// ExpectContinueTimeout is how long a request with "Expect: 100-continue" waits for
	// the server's 100 Continue before it sends its body anyway. Zero means 1 second, as
	// in [http.DefaultTransport]; negative means the body is sent at once.
	ExpectContinueTimeout time.Duration

	// MaxResponseHeaderBytes limits the size of the response headers. Zero means 1 MiB.
	MaxResponseHeaderBytes int64

	// ProxyConnectHeader holds headers sent with CONNECT requests to a proxy.
	ProxyConnectHeader http.Header

	// GetProxyConnectHeader, if set, returns the headers to send to proxyURL with the
	// CONNECT request for target (host:port), as in [http.Transport]; ProxyConnectHeader
	// is then ignored. If it returns an error, the request fails with that error.
	GetProxyConnectHeader func(ctx context.Context, proxyURL *url.URL, target string) (http.Header, error)

	// OnProxyConnectResponse, if set, is called with the proxy's response to a CONNECT
	// request, before its status is checked, as in [http.Transport]. If it returns an
	// error, the request fails with that error and the connection is aborted.
	OnProxyConnectResponse func(ctx context.Context, proxyURL *url.URL, connectReq *http.Request, connectRes *http.Response) error

	// WriteBufferSize and ReadBufferSize are the sizes of an HTTP/1.1 connection's write
	// and read buffers. Zero means 4 KiB, as in [http.Transport]. HTTP/2 connections use
	// x/net's buffers.
	WriteBufferSize int
	ReadBufferSize  int

	// ForceAttemptHTTP2 is accepted for compatibility with [http.Transport]. endwell
	// always offers HTTP/2 over TLS, with a custom dialer or TLS configuration too,
	// unless Protocols or TLSNextProto say otherwise: the field changes nothing.
	ForceAttemptHTTP2 bool

	// TLSNextProto, as in [http.Transport], turns HTTP/2 off when it is non-nil and has no
	// "h2" entry (a non-nil empty map is the historical way to disable HTTP/2), unless
	// Protocols is set, which then decides. endwell speaks HTTP/2 itself: an "h2"
	// function is never called, and functions for other protocols are not offered in
	// ALPN.
	TLSNextProto map[string]func(authority string, c *tls.Conn) http.RoundTripper

	// HTTP3, if set, turns HTTP/3 on (see [HTTP3Config]). Nil means HTTP/3 is off.
	HTTP3 *HTTP3Config

	// HTTP2 configures HTTP/2, as in [http.Transport]. Zero means x/net's defaults. These
	// fields apply: MaxDecoderHeaderTableSize, MaxEncoderHeaderTableSize,
	// MaxReadFrameSize, SendPingTimeout and PingTimeout (when ReadIdleTimeout and
	// PingTimeout are zero), WriteByteTimeout and CountError; built by Go 1.27,
	// MaxReceiveBufferPerConnection and MaxReceiveBufferPerStream too (built by Go 1.26,
	// x/net's client connection has no such settings; its windows are 1 GiB and 4 MiB).
	// These do not:
	// StrictMaxConcurrentRequests (a request over the server's MAX_CONCURRENT_STREAMS on
	// every connection dials another, within MaxConnsPerHost); MaxConcurrentStreams and
	// PermitProhibitedCipherSuites are a server's.
	HTTP2 *http.HTTP2Config

	// ShutdownTimeout is the budget of each graceful close: when it runs out the socket is
	// closed underneath. Zero means 2 seconds.
	ShutdownTimeout time.Duration

	// MaxDrainBytes and MaxDrainTime bound the discard of a response body closed before
	// its end: if the rest arrives within both limits, the connection is reused; otherwise
	// it is aborted. A remainder known to be larger than MaxDrainBytes aborts at once. Zero
	// means 256 KiB and 100 milliseconds; negative turns the drain off (always abort).
	MaxDrainBytes int64
	MaxDrainTime  time.Duration

	// Protocols says which protocols the transport speaks, as in [http.Transport]. Nil
	// means HTTP/1.1 and HTTP/2 (see TLSNextProto): over TLS, ALPN offers "h2" and
	// "http/1.1" and the server chooses. Over TLS, ALPN offers the set's HTTP1 and HTTP2
	// (nothing if it has neither); a connection whose server does not choose h2 speaks
	// HTTP/1.1, even if the set leaves HTTP1 out, as net/http's. With UnencryptedHTTP2 and
	// not HTTP1, http:// requests without a proxy speak HTTP/2 over TCP (prior knowledge);
	// other http:// requests speak HTTP/1.1. An HTTP/2 connection serves as many requests at
	// once as the server's MAX_CONCURRENT_STREAMS allows; requests over it dial another.
	Protocols *http.Protocols

	// ReadIdleTimeout turns on the HTTP/2 health check: when no frame has arrived on a
	// connection for this long, a PING is sent, and the connection is aborted (reason
	// timeout) if no answer arrives within PingTimeout. Zero means no health check.
	// PingTimeout zero means 15 seconds.
	ReadIdleTimeout time.Duration
	PingTimeout     time.Duration

	// MaxConnLifetime bounds how long a connection may serve requests: once past it, the
	// connection finishes its current request and closes gracefully (reason
	// max_lifetime). Each connection's lifetime is jittered by up to ±10% so that
	// connections made together do not expire together. Zero means no limit.
	MaxConnLifetime time.Duration

	// TracerProvider, a go.opentelemetry.io/otel/trace.TracerProvider, makes the spans
	// of connection teardowns (endwell.conn.close). Nil means the global provider,
	// otel.GetTracerProvider().
	TracerProvider tracerProvider

	// MeterProvider, a go.opentelemetry.io/otel/metric.MeterProvider, makes the
	// connection metrics. Nil means the global provider, otel.GetMeterProvider().
	MeterProvider meterProvider

	// altProto holds the RoundTrippers of RegisterProtocol, by scheme; nil until the
	// first. Its map is never changed once stored: RegisterProtocol stores a new one.
	altProto   atomic.Pointer[map[string]http.RoundTripper]
	altProtoMu sync.Mutex // serialises RegisterProtocol

	// onRelease, if set, sees every HTTP/1.1 exchange's release, with its error (tests:
	// PutIdleConn, as in net/http, sees only those that went back to the pool).
	onRelease atomic.Pointer[func(error)]

	// onTeardown, if set, sees every teardown record (tests).
	onTeardown func(*shutdown.Record)

	initOnce sync.Once
	cfg      config
	pool     *pool.Pool[poolKey, *conn]
	engine   shutdown.Engine
	tel      telemetry
	keys     keyCache
	alts     altSvcs
	stats    closeStats

	// state is stateOpen, stateShuttingDown or stateClosed.
	state atomic.Int32

	// shutdownCtx is Shutdown's context, once it was called.
	shutdownCtx atomic.Pointer[context.Context]

	mu         sync.Mutex         // guards the following
	active     map[*conn]struct{} // connections in use by a request, for Shutdown and Close
	activeDone chan struct{}      // closed when active empties, if someone waits
}

const (
	stateOpen int32 = iota
	stateShuttingDown
	stateClosed
)

// config is the Transport's configuration with defaults filled in, set once by init.
type config struct {
	dial                  func(ctx context.Context, network, addr string) (net.Conn, error)
	dialTLS               func(ctx context.Context, network, addr string) (net.Conn, error) // nil: dial, then endwell's handshake
	readBufferSize        int
	writeBufferSize       int
	tlsHandshakeTimeout   time.Duration
	idleTimeout           time.Duration
	responseHeaderTimeout time.Duration
	expectContinueTimeout time.Duration
	maxHeaderBytes        int64
	budget                time.Duration
	maxDrainBytes         int64
	maxDrainTime          time.Duration
	protocols             http.Protocols
	h1                    h1.Config // HTTP/1.1's share, shared by its connections
	h2                    h2.Config // HTTP/2's
}

func defaulted[T int | int64 | time.Duration](v, zero T) T {
	if v == 0 {
		return zero
	}
	return v
}

func (t *Transport) init() {
	t.initOnce.Do(func() {
		c := &t.cfg
		c.dial = t.DialContext
		if c.dial == nil && t.Dial != nil {
			dial := t.Dial
			c.dial = func(_ context.Context, network, addr string) (net.Conn, error) { return dial(network, addr) }
		}
		c.dialTLS = t.DialTLSContext
		if c.dialTLS == nil && t.DialTLS != nil {
			dial := t.DialTLS
			c.dialTLS = func(_ context.Context, network, addr string) (net.Conn, error) { return dial(network, addr) }
		}
		if c.dial == nil {
			d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			c.dial = d.DialContext
		}
		c.tlsHandshakeTimeout = defaulted(t.TLSHandshakeTimeout, 10*time.Second)
		c.idleTimeout = defaulted(t.IdleConnTimeout, 90*time.Second)
		c.responseHeaderTimeout = t.ResponseHeaderTimeout
		c.expectContinueTimeout = defaulted(t.ExpectContinueTimeout, time.Second)
		c.maxHeaderBytes = defaulted(t.MaxResponseHeaderBytes, 1<<20)
		c.budget = defaulted(t.ShutdownTimeout, shutdown.DefaultBudget)
		c.readBufferSize = max(defaulted(t.ReadBufferSize, 4<<10), 1)
		c.writeBufferSize = max(defaulted(t.WriteBufferSize, 4<<10), 1)
		c.maxDrainBytes = defaulted(t.MaxDrainBytes, 256<<10)
		c.maxDrainTime = defaulted(t.MaxDrainTime, 100*time.Millisecond)
		c.protocols = t.protocols()
		c.h1 = h1.Config{
			ResponseHeaderTimeout: c.responseHeaderTimeout,
			ExpectContinueTimeout: c.expectContinueTimeout,
			MaxHeaderBytes:        c.maxHeaderBytes,
			MaxDrainBytes:         c.maxDrainBytes,
			MaxDrainTime:          c.maxDrainTime,
			ReadBufferSize:        c.readBufferSize,
			WriteBufferSize:       c.writeBufferSize,
			DisableCompression:    t.DisableCompression,
			DisableKeepAlives:     t.DisableKeepAlives,
			OnRelease:             &t.onRelease,
		}
		c.h2 = h2.Config{
			DisableCompression:    t.DisableCompression,
			DisableKeepAlives:     t.DisableKeepAlives,
			MaxHeaderBytes:        c.maxHeaderBytes,
			ExpectContinueTimeout: c.expectContinueTimeout,
			ResponseHeaderTimeout: c.responseHeaderTimeout,
			ReadIdleTimeout:       t.ReadIdleTimeout,
			PingTimeout:           t.PingTimeout,
			SettingsTimeout:       c.tlsHandshakeTimeout,
			HTTP2:                 t.HTTP2,
		}
		t.active = make(map[*conn]struct{})
		t.initTelemetry()
		t.pool = pool.New(pool.Config[poolKey, *conn]{
			MaxIdle:       defaulted(t.MaxIdleConns, 100),
			MaxIdlePerKey: defaulted(t.MaxIdleConnsPerHost, 32),
			MaxPerKey:     t.MaxConnsPerHost,
			IdleTimeout:   c.idleTimeout,
			Dial:          t.dialForPool,
			Retire:        t.retire,
			ShareDials:    t.shareDials,
			Lifetime:      t.lifetime,
		})
	})
}

// CloseIdleConnections closes every idle connection gracefully, in the background, and
// returns at once. Connections in use are not touched, but, as with net/http, one whose
// last request ends before the next request starts is closed then rather than kept idle;
// dials that no request waits for any more are cancelled (they would only have gone idle). Many closes are paced: a few
// say their goodbyes at a time, spread over at most half the budget, so that closing
// thousands does not crowd out the program's other goroutines; each still ends within its
// budget.
func (t *Transport) CloseIdleConnections() {
	t.init()
	t.pool.CloseIdle()
}

// Shutdown ends the transport gracefully. From the call on, RoundTrip fails with
// [ErrShutdown]. Idle connections close gracefully from now on (paced as in
// [Transport.CloseIdleConnections], under the shared deadline below); each connection
// in use closes gracefully as soon as its response is done. When ctx ends, what is still in
// flight is aborted, without close_notify, and the graceful closes still running are cut
// off. The whole pool shares one deadline: the earlier of ctx's and the budget.
//
// Dials in progress are cancelled. Shutdown returns nil once every socket is closed, those
// of the cancelled dials included, or ctx's error if it ended first (the sockets are then
// being closed, without waiting on any peer).
func (t *Transport) Shutdown(ctx context.Context) error {
	t.init()
	// Graceful closes from now on run under ctx: its deadline bounds them, its span is
	// their parent.
	t.shutdownCtx.CompareAndSwap(nil, &ctx)
	t.state.CompareAndSwap(stateOpen, stateShuttingDown)
	// Idle connections retire gracefully at once, all under one deadline: the budget
	// from now, or ctx's if earlier. Closing 10 000 of them takes one budget.
	deadline := time.Now().Add(t.cfg.budget)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for _, pc := range t.pool.CloseAndTakeIdle() { // cancels the dials in progress, too
		t.retireBy(pc, pool.Closed, deadline)
	}

	err := t.waitActive(ctx)
	if err == nil {
		// A dial cancelled just as it completed hands its connection to the pool, which
		// retires it: wait for the dials before the engine.
		err = t.pool.WaitDials(ctx)
	}
	if err == nil {
		err = t.engine.Wait(ctx)
	}
	if err != nil {
		t.abortActive(ErrShutdown)
		t.engine.ForceAll(ErrShutdown)
		t.waitDials()
		t.engine.Wait(context.Background()) // forced teardowns end without waiting on peers
		return ctx.Err()
	}
	return nil
}

// waitDials waits for the cancelled dials to return, within the budget: a DialContext that
// ignores its context could otherwise hold Close for ever.
func (t *Transport) waitDials() {
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.budget)
	defer cancel()
	t.pool.WaitDials(ctx)
}

// Close aborts everything now: requests in flight fail with [ErrClosed], every connection is
// closed without close_notify, graceful closes in progress are cut off, dials in progress
// are cancelled. It returns once every socket is closed, and never waits on a peer (nor,
// beyond the budget, on a DialContext that ignores its context).
func (t *Transport) Close() error {
	t.init()
	t.state.Store(stateClosed)
	t.pool.Close() // cancels the dials in progress, too
	t.abortActive(ErrClosed)
	t.engine.ForceAll(ErrClosed)
	t.waitDials()
	t.engine.Wait(context.Background())
	return nil
}

// Clone returns a new Transport with t's configuration: a deep copy of its exported
// fields, as [http.Transport.Clone] makes. The clone has its own pool and connections,
// and, as net/http's, none of the protocols that RegisterProtocol registered on t.
func (t *Transport) Clone() *Transport {
	c := &Transport{
		Proxy:                  t.Proxy,
		DialContext:            t.DialContext,
		Dial:                   t.Dial,
		DialTLSContext:         t.DialTLSContext,
		DialTLS:                t.DialTLS,
		TLSHandshakeTimeout:    t.TLSHandshakeTimeout,
		DisableKeepAlives:      t.DisableKeepAlives,
		DisableCompression:     t.DisableCompression,
		MaxIdleConns:           t.MaxIdleConns,
		MaxIdleConnsPerHost:    t.MaxIdleConnsPerHost,
		MaxConnsPerHost:        t.MaxConnsPerHost,
		IdleConnTimeout:        t.IdleConnTimeout,
		ResponseHeaderTimeout:  t.ResponseHeaderTimeout,
		ExpectContinueTimeout:  t.ExpectContinueTimeout,
		MaxResponseHeaderBytes: t.MaxResponseHeaderBytes,
		ProxyConnectHeader:     t.ProxyConnectHeader.Clone(),
		GetProxyConnectHeader:  t.GetProxyConnectHeader,
		OnProxyConnectResponse: t.OnProxyConnectResponse,
		WriteBufferSize:        t.WriteBufferSize,
		ReadBufferSize:         t.ReadBufferSize,
		ForceAttemptHTTP2:      t.ForceAttemptHTTP2,
		ShutdownTimeout:        t.ShutdownTimeout,
		MaxDrainBytes:          t.MaxDrainBytes,
		MaxDrainTime:           t.MaxDrainTime,
		ReadIdleTimeout:        t.ReadIdleTimeout,
		PingTimeout:            t.PingTimeout,
		MaxConnLifetime:        t.MaxConnLifetime,
		TracerProvider:         t.TracerProvider,
		MeterProvider:          t.MeterProvider,
	}
	if t.TLSClientConfig != nil {
		c.TLSClientConfig = t.TLSClientConfig.Clone()
	}
	if t.Protocols != nil {
		p := *t.Protocols
		c.Protocols = &p
	}
	if t.HTTP2 != nil {
		h := *t.HTTP2
		c.HTTP2 = &h
	}
	if t.HTTP3 != nil {
		h := *t.HTTP3
		if h.QUIC != nil {
			h.QUIC = h.QUIC.Clone()
		}
		c.HTTP3 = &h
	}
	if t.TLSNextProto != nil {
		c.TLSNextProto = make(map[string]func(string, *tls.Conn) http.RoundTripper, len(t.TLSNextProto))
		for k, f := range t.TLSNextProto {
			c.TLSNextProto[k] = f
		}
	}
	// As net/http's Clone: RegisterProtocol's registrations are not copied.
	return c
}

// RegisterProtocol registers rt for requests whose URL has the given scheme, as
// [http.Transport.RegisterProtocol] does: RoundTrip passes them to rt, unless rt returns
// [http.ErrSkipAltProtocol], when the Transport handles the request itself. It panics if
// scheme is already registered.
func (t *Transport) RegisterProtocol(scheme string, rt http.RoundTripper) {
	t.altProtoMu.Lock()
	defer t.altProtoMu.Unlock()
	old := t.altProto.Load()
	m := make(map[string]http.RoundTripper)
	if old != nil {
		if _, exists := (*old)[scheme]; exists {
			panic("protocol " + scheme + " already registered")
		}
		for k, v := range *old {
			m[k] = v
		}
	}
	m[scheme] = rt
	t.altProto.Store(&m)
}

// CancelRequest does nothing: endwell cancels a request through its context only
// ([http.Request.WithContext]), which [http.Client] cancels too, on its Timeout. It is
// here so that code written for [http.Transport] compiles.
//
// Deprecated: Use [http.Request.WithContext] to make a request with a cancelable
// context, as for [http.Transport], whose CancelRequest cannot cancel HTTP/2 requests
// either.
func (t *Transport) CancelRequest(req *http.Request) {}

// NewClientConn returns a connection to the server at address for scheme ("http" or
// "https"), not in any pool, as [http.Transport.NewClientConn] does. Its type is
// net/http's, which only net/http can make: the connection is made and spoken by a
// net/http Transport with this Transport's dialers, TLS configuration, timeouts and
// protocols, and it ends as net/http ends connections (close_notify on every close),
// not through endwell's engine. Use the Transport itself for endwell's endings.
func (t *Transport) NewClientConn(ctx context.Context, scheme, address string) (*http.ClientConn, error) {
	t.init()
	nt := &http.Transport{
		DialContext:            t.cfg.dial,
		DialTLSContext:         t.cfg.dialTLS,
		TLSClientConfig:        t.TLSClientConfig,
		TLSHandshakeTimeout:    t.cfg.tlsHandshakeTimeout,
		DisableCompression:     t.DisableCompression,
		ResponseHeaderTimeout:  t.ResponseHeaderTimeout,
		ExpectContinueTimeout:  t.cfg.expectContinueTimeout,
		MaxResponseHeaderBytes: t.cfg.maxHeaderBytes,
		WriteBufferSize:        t.cfg.writeBufferSize,
		ReadBufferSize:         t.cfg.readBufferSize,
		HTTP2:                  t.HTTP2,
	}
	p := t.cfg.protocols
	nt.Protocols = &p
	return nt.NewClientConn(ctx, scheme, address)
}
