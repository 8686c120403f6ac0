package endwell

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/endwell/endwell/internal/h1"
	"github.com/endwell/endwell/internal/h2"
	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/proxy"
)

// target is what a dial makes of its pool key: the key, with its proxy's URL parsed.
type target struct {
	poolKey
	proxyURL *url.URL // nil for a direct connection
}

// dialTarget makes the target of a dial from its key alone.
//
// The proxy's URL is parsed again from the String that the key holds, rather than handed
// from the request (through ctx, or a map by key): a dial serves whichever request of its
// key comes first, and the key already takes proxy URLs with the same String for one
// proxy, so the URL parsed from it is the proxy of every request the dial may serve. Only
// the pointer differs from the one Proxy returned: GetProxyConnectHeader and
// OnProxyConnectResponse see an equal URL. A map would have to be bounded and pruned to
// keep one request's pointer, which the others of the key don't share anyway.
func dialTarget(key poolKey) (*target, error) {
	tg := &target{poolKey: key}
	if key.proxy != "" {
		u, err := url.Parse(key.proxy)
		if err != nil {
			// A URL made by hand whose String does not parse (url.Parse's error would
			// repeat the URL, password included).
			return nil, &DialError{Op: "proxy", Err: errors.New("the proxy URL does not parse from its String")}
		}
		tg.proxyURL = u
	}
	return tg, nil
}

// dialForPool is the pool's Dial: it makes a connection for key (see dialTarget), through
// its proxy if any, with TLS for https. ctx is the request's, without its cancellation: a
// dial outlives a cancelled request and serves the next one.
func (t *Transport) dialForPool(ctx context.Context, key poolKey) (*conn, int, error) {
	tg, err := dialTarget(key)
	if err != nil {
		return nil, 0, err
	}
	if tg.h3 {
		pc, err := t.dialH3(ctx, tg)
		if err != nil {
			return nil, 0, err
		}
		pc.h3.start()
		capacity := pc.h3.c.MaxStreams()
		if t.DisableKeepAlives {
			capacity = 1
		}
		return pc, capacity, nil
	}
	pc, err := t.dial(ctx, tg)
	if err != nil {
		return nil, 0, err
	}
	return pc, pc.capacity(), nil
}

func (t *Transport) dial(ctx context.Context, tg *target) (*conn, error) {
	trace := httptrace.ContextClientTrace(ctx)
	dialAddr := tg.addr
	if tg.proxyURL != nil {
		dialAddr = proxyAddr(tg.proxyURL)
	}
	if tg.scheme == "https" && tg.proxyURL == nil && t.cfg.dialTLS != nil {
		return t.dialUserTLS(ctx, tg, trace)
	}
	var nc net.Conn
	var err error
	var tunnel *tls.Conn    // the TLS session to an https:// proxy
	var userTunnel net.Conn // the connection to an https:// proxy that DialTLSContext made
	reached := false        // the SOCKS proxy was reached, and refused or failed the connection
	switch {
	case tg.proxyURL != nil && isSOCKS(tg.proxyURL):
		nc, reached, err = t.dialSOCKS(ctx, tg)
	case tg.proxyURL != nil && tg.proxyURL.Scheme == "https" && t.cfg.dialTLS != nil:
		// As net/http: an https:// proxy is dialled with DialTLSContext when it is set.
		userTunnel, tunnel, err = t.dialUserTLSProxy(ctx, dialAddr, trace)
		nc = userTunnel
		if tunnel != nil {
			nc = tunnel.NetConn()
		}
	default:
		nc, err = t.dialTCP(ctx, dialAddr)
	}
	if err != nil {
		if tg.proxyURL == nil {
			return nil, dialFailure("dial", dialAddr, err, false)
		}
		return nil, dialFailure("proxy", dialAddr, err, !reached)
	}
	raw := shutdown.Watch(nc)
	// abort closes the socket of a connection that failed to set up: no goodbye.
	abort := func() { raw.Close() }

	var top net.Conn = raw
	switch {
	case tunnel != nil:
		top = tunnel
	case userTunnel != nil:
		// DialTLSContext's own connection type: its TLS is opaque to endwell.
	case tg.proxyURL != nil && tg.proxyURL.Scheme == "https":
		tunnel, err = t.handshake(ctx, raw, tg.proxyURL.Hostname(), []string{"http/1.1"}, trace)
		if err != nil {
			abort()
			return nil, dialFailure("tls", dialAddr, err, true)
		}
		top = tunnel
	}
	if tg.proxyURL != nil && tg.scheme == "https" && !isSOCKS(tg.proxyURL) {
		if err := t.connect(ctx, top, tg); err != nil {
			abort()
			return nil, dialFailure("proxy", dialAddr, err, false)
		}
	}
	var tunnelWatch *shutdown.Conn // what the inner TLS reads: the tunnel, watched
	if tg.scheme == "https" {
		inner := top
		if tunnel != nil {
			tunnelWatch = shutdown.Watch(tunnel)
			inner = tunnelWatch
		}
		tc, err := t.handshake(ctx, inner, tg.host, t.alpn(tg), trace)
		if err != nil {
			abort()
			return nil, dialFailure("tls", tg.addr, err, false)
		}
		top = tc
	}
	pc := newConn(t, tg.poolKey, raw, top)
	pc.tunnel, pc.tunnelWatch = tunnel, tunnelWatch
	return t.finishDial(ctx, tg, pc)
}

// finishDial starts HTTP/2 on pc if its server chose it, and makes pc ready for the pool.
// On error it closes pc's socket.
func (t *Transport) finishDial(ctx context.Context, tg *target, pc *conn) (*conn, error) {
	pc.serverAddr = tg.addr
	if pc.serverAddr == "" {
		// http:// through an HTTP proxy: the connection serves every server, and its
		// key names none.
		pc.serverAddr = proxyAddr(tg.proxyURL)
	}
	version := "1.1"
	if t.wantH2(tg, pc.nc) {
		var err error
		pc.h2, err = h2.Start(ctx, pc, &t.cfg.h2, pc.nc)
		if err != nil {
			pc.raw.Close()
			return nil, &DialError{Op: "h2", Addr: pc.serverAddr, Err: err}
		}
		version = "2"
	} else {
		// http:// requests through an HTTP proxy go to it in absolute form.
		proxied, auth := tg.proxyURL != nil && tg.scheme == "http" && !isSOCKS(tg.proxyURL), ""
		if proxied && tg.proxyURL.User != nil {
			auth = basicAuth(tg.proxyURL.User)
		}
		pc.h1 = h1.New(pc, &t.cfg.h1, pc.nc, pc.raw, proxied, auth)
	}
	pc.tel = newConnTelemetry(pc.serverAddr, pc.raw.RemoteAddr(), version)
	if pc.h2 != nil {
		pc.h2.Ready()
	}
	return pc, nil
}

// dialUserTLS makes the connection of an https:// request with DialTLSContext (or
// DialTLS), completing the TLS handshake if the dialer did not, as net/http does. See
// [Transport.DialTLSContext] for what endwell sees of such a connection.
func (t *Transport) dialUserTLS(ctx context.Context, tg *target, trace *httptrace.ClientTrace) (*conn, error) {
	c, err := t.cfg.dialTLS(ctx, "tcp", tg.addr)
	if err == nil && c == nil {
		err = errors.New("DialTLSContext returned (nil, nil)")
	}
	if err != nil {
		return nil, dialFailure("tls", tg.addr, err, false)
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		// An opaque connection: no TLS layer of ours over it.
		raw := shutdown.Watch(c)
		return t.finishDial(ctx, tg, newConn(t, tg.poolKey, raw, raw))
	}
	raw := shutdown.Watch(tc.NetConn())
	if err := finishUserHandshake(ctx, tc, trace); err != nil {
		raw.Close()
		return nil, dialFailure("tls", tg.addr, err, false)
	}
	return t.finishDial(ctx, tg, newConn(t, tg.poolKey, raw, tc))
}

// finishUserHandshake completes the handshake of a *tls.Conn that DialTLSContext returned,
// if it is still pending (net/http's DialTLSContext contract allows that), with the trace's
// TLS hooks.
func finishUserHandshake(ctx context.Context, tc *tls.Conn, trace *httptrace.ClientTrace) error {
	if tc.ConnectionState().HandshakeComplete {
		return nil
	}
	if trace != nil && trace.TLSHandshakeStart != nil {
		trace.TLSHandshakeStart()
	}
	err := tc.HandshakeContext(ctx)
	if trace != nil && trace.TLSHandshakeDone != nil {
		trace.TLSHandshakeDone(tc.ConnectionState(), err)
	}
	return err
}

// dialUserTLSProxy dials an https:// proxy at addr with DialTLSContext. A *tls.Conn comes
// back as tunnel, its handshake done (net/http's DialTLSContext contract lets it be
// pending); another type comes back as c, opaque.
func (t *Transport) dialUserTLSProxy(ctx context.Context, addr string, trace *httptrace.ClientTrace) (c net.Conn, tunnel *tls.Conn, err error) {
	c, err = t.cfg.dialTLS(ctx, "tcp", addr)
	if err == nil && c == nil {
		err = errors.New("DialTLSContext returned (nil, nil)")
	}
	if err != nil {
		return nil, nil, err
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return c, nil, nil
	}
	if err := finishUserHandshake(ctx, tc, trace); err != nil {
		tc.NetConn().Close()
		return nil, nil, err
	}
	return nil, tc, nil
}

// dialTCP dials addr with the transport's dialer. httptrace's DNS and Connect hooks fire
// from the dialer itself, as in net/http: net.Resolver and net.Dialer call them from ctx,
// which keeps the request's values (a custom DialContext that uses a net.Dialer with ctx
// fires them too).
func (t *Transport) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	return t.cfg.dial(ctx, "tcp", addr)
}

// handshake runs a TLS client handshake over c for serverName, offering the protocols alpn,
// within TLSHandshakeTimeout. On failure c is left to the caller to close.
func (t *Transport) handshake(ctx context.Context, c net.Conn, serverName string, alpn []string, trace *httptrace.ClientTrace) (*tls.Conn, error) {
	cfg := t.tlsConfig(serverName, alpn)
	tc := tls.Client(c, cfg)
	if trace != nil && trace.TLSHandshakeStart != nil {
		trace.TLSHandshakeStart()
	}
	hctx := ctx
	if d := t.cfg.tlsHandshakeTimeout; d > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeoutCause(ctx, d, errTLSHandshakeTimeout)
		defer cancel()
	}
	err := tc.HandshakeContext(hctx)
	if err != nil && hctx.Err() != nil {
		err = context.Cause(hctx)
	}
	if trace != nil && trace.TLSHandshakeDone != nil {
		trace.TLSHandshakeDone(tc.ConnectionState(), err)
	}
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// errTLSHandshakeTimeout says net/http's words: callers match them.
var errTLSHandshakeTimeout error = &timeoutError{Msg: "net/http: TLS handshake timeout"}

func (t *Transport) tlsConfig(serverName string, alpn []string) *tls.Config {
	var cfg *tls.Config
	if t.TLSClientConfig != nil {
		cfg = t.TLSClientConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	cfg.NextProtos = alpn
	return cfg
}

// connect asks the proxy on c for a tunnel to tg's server.
func (t *Transport) connect(ctx context.Context, c net.Conn, tg *target) error {
	var hdr http.Header
	if t.GetProxyConnectHeader != nil {
		h, err := t.GetProxyConnectHeader(ctx, tg.proxyURL, tg.addr)
		if err != nil {
			return err
		}
		hdr = h.Clone()
	} else {
		hdr = t.ProxyConnectHeader.Clone()
	}
	if hdr == nil {
		hdr = make(http.Header)
	}
	if tg.proxyURL.User != nil {
		// The proxy URL's credentials win over a Proxy-Authorization of the headers, as
		// net/http sets them.
		hdr.Set("Proxy-Authorization", basicAuth(tg.proxyURL.User))
	}
	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: tg.addr},
		Host:   tg.addr,
		Header: hdr,
	}
	// The exchange is bounded: by ctx's deadline, else by a minute, as net/http bounds its
	// CONNECT (a dial's ctx has no cancellation of its own, so a proxy that never answers
	// would otherwise hold the socket and this goroutine for ever).
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
		defer c.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := req.Write(c); err != nil {
		return err
	}
	// The proxy sends nothing after its response until our TLS ClientHello, so the reader
	// cannot consume any of the handshake; it is checked below all the same. What the
	// proxy may send is bounded by MaxResponseHeaderBytes, as net/http bounds it: a proxy
	// (or anyone on the path to a plain-http one) can't make the dial read without end.
	br := bufio.NewReader(&io.LimitedReader{R: c, N: t.cfg.maxHeaderBytes})
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if t.OnProxyConnectResponse != nil {
		// Called with the response as it came, its body unread, as net/http does.
		if err := t.OnProxyConnectResponse(ctx, tg.proxyURL, req, resp); err != nil {
			return err
		}
	}
	if resp.StatusCode != http.StatusOK {
		return &ProxyConnectError{StatusCode: resp.StatusCode, Status: resp.Status}
	}
	if br.Buffered() > 0 {
		return errors.New("proxy sent data after its CONNECT response")
	}
	return nil
}

// isSOCKS reports whether the proxy URL u is a SOCKS5 proxy: socks5:// or socks5h://.
func isSOCKS(u *url.URL) bool { return u.Scheme == "socks5" || u.Scheme == "socks5h" }

// dialSOCKS dials tg's SOCKS5 proxy and asks it for a connection to tg's server
// (golang.org/x/net/proxy; RFC 1928, and RFC 1929's username and password from the proxy
// URL). The server's name goes to the proxy unresolved, for socks5:// as for socks5h://,
// as net/http does. It returns the TCP connection to the proxy, which carries the
// server's bytes from then on: SOCKS adds nothing to say at the end, so its teardown is
// the TCP socket's (and the TLS session's over it, for https).
//
// reached reports whether the proxy was reached: a failure is then the proxy's answer (or
// the SOCKS exchange's), not the dial's.
func (t *Transport) dialSOCKS(ctx context.Context, tg *target) (nc net.Conn, reached bool, err error) {
	var auth *proxy.Auth
	if u := tg.proxyURL.User; u != nil {
		auth = &proxy.Auth{User: u.Username()}
		auth.Password, _ = u.Password()
	}
	var dialErr error
	fwd := socksForward(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := t.dialTCP(ctx, addr)
		nc, dialErr = c, err
		return c, err
	})
	d, err := proxy.SOCKS5("tcp", proxyAddr(tg.proxyURL), auth, fwd)
	if err != nil {
		return nil, false, err
	}
	// The exchange is bounded as CONNECT's is: by ctx's deadline, else by a minute.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}
	if _, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", tg.addr); err != nil {
		if dialErr != nil {
			return nil, false, dialErr
		}
		return nil, true, err // x/net closed nc
	}
	// x/net's connection wraps nc only to report the proxy's bound address.
	return nc, true, nil
}

// socksForward is how x/net's SOCKS5 dialer reaches the proxy: through endwell's dialer.
type socksForward func(ctx context.Context, network, addr string) (net.Conn, error)

func (f socksForward) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

func (f socksForward) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// connectTimeout bounds a CONNECT exchange whose context has no deadline.
const connectTimeout = time.Minute

// dialFailure returns the error of a failed dial, proxy exchange or TLS handshake as
// net/http returns it, down to the types inside its chain:
//
//   - a *[net.OpError] (a refused or failed dial, a TLS alert, a reset) and the TLS
//     errors that net/http returns bare (*[tls.CertificateVerificationError],
//     [tls.RecordHeaderError], [tls.AlertError]) are returned as they are: code such as
//     go-retryablehttp's asserts their types, and compares their chains, at those
//     depths. [NotSent] recognises the dial's;
//   - anything else (an error of a DialContext of the user's, a timeout of endwell's) is
//     wrapped in a quiet [DialError], whose message is the error's own, which matches
//     [ErrNotSent];
//   - when proxied is set (the dial of a proxy, or the TLS handshake with an https
//     proxy), the result is wrapped as net/http wraps it: a *net.OpError with Op
//     "proxyconnect".
func dialFailure(op, addr string, err error, proxied bool) error {
	var out error
	switch e := err.(type) {
	case *net.OpError:
		markDialFailure(e)
		out = err
	case *tls.CertificateVerificationError:
		markDialFailure(e)
		out = err
	case tls.RecordHeaderError, tls.AlertError:
		out = err
	default:
		out = &DialError{Op: op, Addr: addr, Err: err, quiet: true}
	}
	if proxied {
		pe := &net.OpError{Op: "proxyconnect", Net: "tcp", Err: out}
		markDialFailure(pe)
		out = pe
	}
	return out
}

// dialFailures remembers the errors of net/http's types that dialFailure returned, so that
// NotSent knows them without a mark in their chains: its keys are weak pointers
// (weak.Pointer[T] for each T), each removed once its error is collected.
var dialFailures sync.Map

func markDialFailure[T any](e *T) {
	wp := weak.Make(e)
	dialFailures.Store(wp, struct{}{})
	runtime.AddCleanup(e, func(wp weak.Pointer[T]) { dialFailures.Delete(wp) }, wp)
}

// isDialFailure reports whether err itself (not its chain) is one that dialFailure marked.
func isDialFailure(err error) bool {
	var key any
	switch e := err.(type) {
	case *net.OpError:
		key = weak.Make(e)
	case *tls.CertificateVerificationError:
		key = weak.Make(e)
	default:
		return false
	}
	_, ok := dialFailures.Load(key)
	return ok
}

func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return joinHostPort(asciiHost(u.Hostname()), port)
}

func basicAuth(u *url.Userinfo) string {
	pass, _ := u.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass))
}

// protocols returns the protocols the transport speaks: Protocols, or HTTP/1.1 and
// HTTP/2 if it is nil or empty (HTTP/1.1 alone if TLSNextProto is non-nil without "h2",
// as in net/http).
func (t *Transport) protocols() http.Protocols {
	if p := t.Protocols; p != nil {
		return *p
	}
	var p http.Protocols
	p.SetHTTP1(true)
	_, h2 := t.TLSNextProto["h2"]
	p.SetHTTP2(t.TLSNextProto == nil || h2)
	return p
}

// alpn returns the protocols to offer in a TLS handshake with tg's server.
func (t *Transport) alpn(tg *target) []string {
	p := t.cfg.protocols
	switch {
	case tg.h1Only:
		return []string{"http/1.1"}
	case p.HTTP2() && p.HTTP1():
		return []string{"h2", "http/1.1"}
	case p.HTTP2():
		return []string{"h2"}
	case p.HTTP1():
		return []string{"http/1.1"}
	}
	// Neither (Protocols: unencrypted HTTP/2 alone): as net/http, no ALPN, and the
	// connection speaks HTTP/1.1.
	return nil
}

// h2c reports whether http:// requests go straight to the server as unencrypted HTTP/2:
// Protocols has UnencryptedHTTP2 and not HTTP1, as in net/http.
func (t *Transport) h2c() bool {
	p := t.cfg.protocols
	return p.UnencryptedHTTP2() && !p.HTTP1()
}

// shareDials is the pool's ShareDials: requests to a server likely to speak HTTP/2 wait
// for a dial in progress rather than dial their own.
func (t *Transport) shareDials(key poolKey) bool {
	switch {
	case t.DisableKeepAlives, key.h1Only, key.h3:
		// HTTP/3 keys share dials only once a connection has told its capacity.
		return false
	case key.proxy != "":
		// A tunnel (CONNECT, SOCKS) to an https server may speak HTTP/2; http://
		// requests go through a proxy in HTTP/1.1.
		return key.addr != "" && key.scheme == "https" && t.cfg.protocols.HTTP2()
	case key.scheme == "https":
		return t.cfg.protocols.HTTP2()
	case key.scheme == "http":
		return t.h2c()
	}
	return false
}

// wantH2 reports whether a new connection to tg over top speaks HTTP/2: the server chose
// h2 in the TLS handshake, or unencrypted HTTP/2 is on for http://. Otherwise the
// connection speaks HTTP/1.1, even if Protocols leaves HTTP/1 out: net/http does the same
// (Protocols with HTTP/2 alone offers h2 in ALPN, and a server that chooses nothing gets
// HTTP/1.1; with unencrypted HTTP/2 alone, https:// and its proxies speak HTTP/1.1).
func (t *Transport) wantH2(tg *target, top net.Conn) bool {
	if tc, ok := top.(*tls.Conn); ok && tg.scheme == "https" {
		return tc.ConnectionState().NegotiatedProtocol == "h2"
	}
	return tg.scheme == "http" && tg.proxyURL == nil && t.h2c() && !tg.h1Only
}
