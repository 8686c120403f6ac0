package endwell

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/endwell/endwell/internal/h1"
	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// RoundTrip implements [http.RoundTripper]. It does not modify req; it closes req.Body,
// possibly after returning.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil {
		proto.AwaitClientTimer(req, err) // http.Client's Timeout: see there
	}
	return resp, err
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	t.init()
	if m := t.altProto.Load(); m != nil && req.URL != nil {
		if rt := (*m)[req.URL.Scheme]; rt != nil {
			resp, err := rt.RoundTrip(req)
			if err != http.ErrSkipAltProtocol {
				return resp, err
			}
		}
	}
	if err := t.checkRequest(req); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	ctx := req.Context()
	if ctx.Err() != nil {
		// As net/http: a request whose context is done fails before any hook fires.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, context.Cause(ctx)
	}
	trace := httptrace.ContextClientTrace(ctx)
	key, err := t.keyFor(req)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	// tcp is the TCP key of an origin whose requests go over HTTP/3 by Alt-Svc: the
	// fallback when the alternative fails before the request is sent. Zero otherwise.
	var tcp poolKey
	if t.altSvcOn() && key.scheme == "https" && key.proxy == "" && !key.h1Only {
		if alt, ok := t.alts.route(t, key); ok {
			tcp, key = key, alt
		}
	}
	orig := req
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.getConn(ctx, key, req.URL, trace)
		if err != nil && tcp != (poolKey{}) && NotSent(err) && ctx.Err() == nil {
			// The alternative failed (its connection went away, a new dial failed): it
			// is broken for a while, and the request goes over TCP at once.
			t.alts.broken(tcp.addr, key)
			key, tcp = tcp, poolKey{}
			attempt--
			continue
		}
		if err != nil {
			if attempt == 0 && errors.Is(err, proto.ErrGoAwayAtOnce) && ctx.Err() == nil {
				// A new HTTP/2 connection refused every stream before the request was
				// sent (a server's idle timer counted from the connection's start, a
				// server going away): once more, on another connection, as net/http does.
				continue
			}
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		var resp *http.Response
		var mark int64
		switch {
		case pc.h2 != nil:
			resp, err = pc.h2.RoundTrip(req)
		case pc.h3 != nil:
			resp, err = pc.h3.roundTrip(req)
		default:
			mark = pc.h1.Written()
			resp, err = pc.h1.RoundTrip(req, trace)
		}
		if err == nil {
			if tcp == (poolKey{}) && pc.h3 == nil && t.altSvcOn() {
				t.alts.learn(t, key, resp.Header)
			}
			// The caller's own request, as net/http: not a retry's clone, nor a copy
			// made for a header timeout's context.
			resp.Request = orig
			return resp, nil
		}
		var wrote bool
		if pc.h1 != nil {
			wrote = pc.h1.Written() > mark
		} else {
			// An HTTP/2 stream's bytes can't be told from its neighbours': its error says
			// whether the server saw it (a stream refused by GOAWAY or REFUSED_STREAM is
			// retried even on a new connection).
			wrote = !errors.Is(err, ErrNotSent)
			reused = reused || !wrote
		}
		if !reused || !retryable(req, err, wrote) {
			return nil, err
		}
		if attempt > 0 {
			// Once more is all, but for a stream that an HTTP/2 server refused unprocessed
			// (REFUSED_STREAM): as net/http's HTTP/2, it is tried up to 6 times more, each
			// after 1 s, 2 s, 4 s... with 10% jitter, within the request's context.
			var se *proto.StreamError
			if pc.h2 == nil || attempt > maxRefusedRetries || !errors.As(err, &se) || se.Code != http2.ErrCodeRefusedStream {
				return nil, err
			}
			d := time.Duration(1<<(attempt-1)) * time.Second
			d += time.Duration(rand.Int64N(int64(d / 10)))
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err() // as net/http's HTTP/2
			}
		}
		// A stale keep-alive connection: try once more on a fresh one.
		if req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(ctx) // never mutate the caller's request
			req.Body = body
		}
		if tcp != (poolKey{}) {
			// An HTTP/3 connection of an alternative refused the request unsent (a
			// GOAWAY, its end): the next try goes over TCP.
			key, tcp = tcp, poolKey{}
		}
	}
}

// maxRefusedRetries is how many times more a request whose stream a server refused is
// sent: x/net's limit.
const maxRefusedRetries = 6

// retryable reports whether a request that failed on a reused connection may be sent again
// on a new one: the server closed the connection before answering, and either nothing of the
// request reached it or the request is idempotent; and its body can be replayed.
func retryable(req *http.Request, err error, wrote bool) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if req.Context().Err() != nil {
		return false
	}
	if !wrote && !errors.Is(err, ErrResponseHeaderTimeout) && (errors.Is(err, ErrNotSent) || h1.PeerGone(err)) {
		return true
	}
	return errors.Is(err, ErrServerClosedConn) && isIdempotent(req)
}

// isIdempotent reports whether the transport may send req again on its own, unasked, after
// the server closed a reused connection without answering: net/http's rule (its
// isReplayable): GET, HEAD, OPTIONS, TRACE, or an Idempotency-Key header. PUT and DELETE
// are idempotent by RFC 9110 (section 9.2.2) and RetryPolicy retries them
// (idempotentMethod), because there the caller chose to retry; a silent retry of the
// transport's own stays as narrow as net/http's.
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func (t *Transport) checkRequest(req *http.Request) error {
	switch {
	case req.URL == nil:
		return &RequestError{"nil Request.URL"}
	case req.Header == nil:
		return &RequestError{"nil Request.Header"}
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return &RequestError{fmt.Sprintf("unsupported protocol scheme %q", req.URL.Scheme)}
	case req.URL.Host == "":
		return &RequestError{"no Host in request URL"}
	case req.Method != "" && !validMethod(req.Method):
		return &RequestError{fmt.Sprintf("invalid method %q", req.Method)}
	}
	switch t.state.Load() {
	case stateShuttingDown:
		return ErrShutdown
	case stateClosed:
		return ErrClosed
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if _, err := httpguts.PunycodeHostPort(host); err != nil {
		return &RequestError{fmt.Sprintf("invalid host %q: %v", host, err)}
	}
	// The request line carries the URL's query and opaque part as they are (its path is
	// escaped): a control character there, a CR LF say, would split the request.
	if hasCTL(req.URL.RawQuery) || hasCTL(req.URL.Opaque) {
		return &RequestError{"can't write control character in Request.URL"}
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return &RequestError{fmt.Sprintf("invalid header field name %q", k)}
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return &RequestError{fmt.Sprintf("invalid header field value for %q", k)}
			}
		}
	}
	return nil
}

// hasCTL reports whether s has an ASCII control character (DEL included).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

func validMethod(m string) bool {
	for _, r := range m {
		if !httpguts.IsTokenRune(r) {
			return false
		}
	}
	return true
}

// poolKey is the pool's key: where a connection goes, and all that makes two connections
// interchangeable. A dial learns all it needs from its key (dialTarget): it serves
// whichever request of the key comes first, so nothing of one request's may steer it.
// String spells the key as Stats shows it.
type poolKey struct {
	scheme string // the server's: "http" or "https"
	// addr is the server's host:port, where the connection goes: for an Alt-Svc
	// alternative, its authority. It is "" for http:// requests through an HTTP proxy,
	// which share the proxy's connections whatever their server.
	addr string
	// host is the server's host, for TLS's ServerName: addr's, or for an Alt-Svc
	// alternative the origin's.
	host string
	// proxy is the proxy's URL as its String, "" for a direct connection: proxy URLs
	// with the same String share connections.
	proxy string
	// h1Only says the request needs HTTP/1.1 (an Upgrade, such as WebSocket's): its
	// connections offer nothing else.
	h1Only bool
	// h3 says the connection speaks HTTP/3: HTTP3.Only, or an Alt-Svc alternative.
	h3 bool
	// origin is, for an Alt-Svc alternative, the host:port of the origin it serves; ""
	// otherwise.
	origin string
}

// String spells k as Stats' Hosts shows it: "https://host:port", "proxy URL"
// (http:// through an HTTP proxy), "proxy URL https://host:port" (a tunnel, or SOCKS),
// each preceded by "h1 " for an Upgrade; "h3 https://host:port" for HTTP3.Only, and
// "h3 https://origin:port alternative:port" for an Alt-Svc alternative.
func (k poolKey) String() string {
	switch {
	case k.origin != "":
		return "h3 " + k.scheme + "://" + k.origin + " " + k.addr
	case k.h3:
		return "h3 " + k.scheme + "://" + k.addr
	}
	s := k.scheme + "://" + k.addr
	switch {
	case k.proxy != "" && k.addr == "":
		s = "proxy " + k.proxy
	case k.proxy != "":
		s = "proxy " + k.proxy + " " + s
	}
	if k.h1Only {
		s = "h1 " + s
	}
	return s
}

// keyFor returns the pool key of req's connection.
func (t *Transport) keyFor(req *http.Request) (poolKey, error) {
	if t.Proxy != nil {
		return t.newKey(req)
	}
	// Without a proxy, a key depends on the URL's scheme and host only: reuse it.
	ck := keyCacheKey{req.URL.Scheme, req.URL.Host, h1.RequiresHTTP1(req)}
	kc := &t.keys
	kc.mu.RLock()
	key, ok := kc.m[ck]
	kc.mu.RUnlock()
	if ok {
		return key, nil
	}
	key, err := t.newKey(req)
	if err != nil {
		return poolKey{}, err
	}
	kc.mu.Lock()
	if kc.m == nil || len(kc.m) >= maxCachedKeys {
		kc.m = make(map[keyCacheKey]poolKey)
	}
	kc.m[ck] = key
	kc.mu.Unlock()
	return key, nil
}

// keyCache remembers the keys of direct connections by URL scheme and host, so that a
// request's key costs no allocation.
type keyCache struct {
	mu sync.RWMutex // guards m
	m  map[keyCacheKey]poolKey
}

type keyCacheKey struct {
	scheme, host string
	h1Only       bool
}

// maxCachedKeys bounds the cache: a client of many hosts starts it afresh when full.
const maxCachedKeys = 1024

func (t *Transport) newKey(req *http.Request) (poolKey, error) {
	u := req.URL
	addr := serverAddr(u)
	key := poolKey{scheme: u.Scheme, addr: addr, host: asciiHost(u.Hostname()), h1Only: h1.RequiresHTTP1(req)}
	var pu *url.URL // the proxy, or nil
	if t.Proxy != nil {
		var err error
		pu, err = t.Proxy(req)
		if err != nil {
			return poolKey{}, dialFailure("proxy", addr, err, false) // the Proxy func's error, as net/http
		}
		if pu != nil {
			switch pu.Scheme {
			case "http", "https", "socks5", "socks5h":
			default:
				return poolKey{}, &DialError{Op: "proxy", Addr: pu.Host, Err: fmt.Errorf("unsupported proxy scheme %q", pu.Scheme)}
			}
		}
	}
	if t.h3Only(u.Scheme) {
		switch {
		case pu != nil:
			return poolKey{}, &RequestError{"HTTP/3 (HTTP3.Only) cannot go through a proxy, and Proxy named one"}
		case key.h1Only:
			return poolKey{}, &RequestError{"an Upgrade request needs HTTP/1.1, and HTTP3.Only allows HTTP/3 alone"}
		}
		key.h3 = true
		return key, nil
	}
	if pu != nil {
		key.proxy = pu.String()
		if u.Scheme == "http" && !isSOCKS(pu) {
			// http:// requests share an HTTP proxy's connections, whatever their server.
			key.addr, key.host = "", ""
		}
	}
	return key, nil
}

// serverAddr returns the host:port of u's server, with the scheme's default port.
func serverAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return joinHostPort(asciiHost(u.Hostname()), port)
}

// asciiHost is host as DNS and TLS's ServerName take it: an internationalized name in its
// Punycode form (IDNA's lookup profile), as net/http dials and verifies it; host itself if
// it is ASCII or not a valid name.
func asciiHost(host string) string {
	if a, err := httpguts.PunycodeHostPort(host); err == nil {
		return a
	}
	return host
}

func joinHostPort(host, port string) string {
	if strings.IndexByte(host, ':') >= 0 {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// getConn takes a connection for key from the pool, dialling one if need be, for a
// request to u. A connection found dead when taken from the idle list is ended and never
// handed out.
func (t *Transport) getConn(ctx context.Context, key poolKey, u *url.URL, trace *httptrace.ClientTrace) (*conn, bool, error) {
	if trace != nil && trace.GetConn != nil {
		addr := key.addr
		if addr == "" {
			addr = serverAddr(u) // http:// through an HTTP proxy: the key names no server
		}
		trace.GetConn(addr)
	}
	for {
		e, info, err := t.pool.Get(ctx, key)
		if err != nil {
			return nil, false, t.getConnErr(ctx, err)
		}
		pc := e.Value
		pc.entry.CompareAndSwap(nil, e)
		if pc.h2 != nil {
			// HTTP/2 has no idle watcher: x/net's read loop watches the connection.
			if !pc.h2.Usable() {
				if !info.Reused {
					// A connection dialled for this request and refused at once: a GOAWAY
					// that followed the ack of the server's SETTINGS (h2.Start sees those
					// that came before), or an end. Dialling on could go on for ever with
					// such a server.
					return nil, false, &DialError{Op: "h2", Addr: key.addr, Err: pc.h2.Refusal()}
				}
				continue
			}
		} else if pc.h3 != nil {
			// internal/h3 watches the connection and reports its end.
			if !pc.h3.usable() {
				if !info.Reused {
					return nil, false, &DialError{Op: "h3", Addr: key.addr, Err: proto.ErrGoAwayAtOnce}
				}
				continue
			}
		} else if !pc.h1.TakeFromIdle() {
			// A connection handed over by Put, idle or straight to a waiting Get, has
			// its idle watcher running.
			continue
		}
		if !t.addActive(pc) {
			// The transport closed meanwhile.
			pc.abort(t.closedErr())
			return nil, false, t.closedErr()
		}
		pc.setState(stateActive)
		pc.noteRequest(ctx)
		if trace != nil && trace.GotConn != nil {
			// An HTTP/3 connection has no net.Conn to give: Conn is nil.
			trace.GotConn(httptrace.GotConnInfo{
				Conn: pc.nc, Reused: info.Reused, WasIdle: info.WasIdle, IdleTime: info.IdleTime,
			})
		}
		return pc, info.Reused, nil
	}
}

func (t *Transport) getConnErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx))) {
		// The request ended while it waited for a connection (a dial, a handshake, the
		// server's SETTINGS): nothing of it was sent. Its error is the context's cause,
		// as net/http's.
		return &notSentError{context.Cause(ctx)}
	}
	if errors.Is(err, pool.ErrClosed) {
		return t.closedErr()
	}
	return err
}

func (t *Transport) closedErr() error {
	if t.state.Load() == stateClosed {
		return ErrClosed
	}
	return ErrShutdown
}

// closeCtx is the context graceful closes run under: Shutdown's, once it was called, so that
// its deadline bounds them and its span is their parent.
func (t *Transport) closeCtx() context.Context {
	if p := t.shutdownCtx.Load(); p != nil {
		return *p
	}
	return context.Background()
}

// addActive records pc as used by a request. It reports false once the transport is closed.
//
// A connection already in use (another HTTP/2 or HTTP/3 stream) counts one more use
// without the transport's lock: it is in t.active already, and stays there while its count
// is above 0 (only a change to or from 0 takes the lock). The transport's closing is seen
// after the count went up, so that Close either sees the use (abortActive's pc is in
// t.active) or the use sees the closing and gives itself back.
func (t *Transport) addActive(pc *conn) bool {
	for n := pc.uses.Load(); n > 0; n = pc.uses.Load() {
		if pc.uses.CompareAndSwap(n, n+1) {
			if t.state.Load() == stateClosed {
				t.doneActive(pc)
				return false
			}
			return true
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state.Load() == stateClosed {
		return false
	}
	if pc.uses.Add(1) == 1 {
		t.active[pc] = struct{}{}
	}
	return true
}

// doneActive records that pc's request is over. A use other than the last takes no lock.
func (t *Transport) doneActive(pc *conn) {
	for n := pc.uses.Load(); n > 1; n = pc.uses.Load() {
		if pc.uses.CompareAndSwap(n, n-1) {
			return
		}
	}
	t.mu.Lock()
	if pc.uses.Add(-1) > 0 {
		t.mu.Unlock() // a use came meanwhile (addActive's fast way, from 1)
		return
	}
	delete(t.active, pc)
	if pc.unused != nil {
		close(pc.unused)
		pc.unused = nil
	}
	if len(t.active) == 0 && t.activeDone != nil {
		close(t.activeDone)
		t.activeDone = nil
	}
	t.mu.Unlock()
}

// WaitUnused (h2.Owner's) waits until no request uses pc (HTTP/2: its streams have ended), or ctx is
// done. It tells p that the teardown waits, if it does.
func (pc *conn) WaitUnused(ctx context.Context, p *shutdown.Progress) error {
	t := pc.t
	t.mu.Lock()
	if pc.uses.Load() == 0 {
		t.mu.Unlock()
		return nil
	}
	if pc.unused == nil {
		pc.unused = make(chan struct{})
	}
	ch := pc.unused
	t.mu.Unlock()
	p.Waiting() // let the next teardown in line speak meanwhile
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// waitActive waits until no connection is in use by a request, or ctx is done.
func (t *Transport) waitActive(ctx context.Context) error {
	t.mu.Lock()
	if len(t.active) == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.activeDone == nil {
		t.activeDone = make(chan struct{})
	}
	ch := t.activeDone
	t.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// abortActive aborts every connection in use, with cause as the error their requests see.
func (t *Transport) abortActive(cause error) {
	t.mu.Lock()
	pcs := make([]*conn, 0, len(t.active))
	for pc := range t.active {
		pcs = append(pcs, pc)
	}
	t.mu.Unlock()
	for _, pc := range pcs {
		pc.abort(cause)
	}
}
