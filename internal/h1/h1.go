package h1

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"golang.org/x/net/http/httpguts"
)

// exchange is one request's use of a connection, from writing the request to the end of
// the response body.
type exchange struct {
	c     *Conn
	req   *http.Request
	ctx   context.Context
	trace *httptrace.ClientTrace
	mark  int64 // c.nwritten when the exchange started
	gzip  bool  // we asked for gzip ourselves

	stopCtx    func() bool      // unregisters the context watch; nil if ctx can't end
	body       io.Reader        // what the request body's writer reads: req.Body, or after a probe
	hasBody    bool             // the request has a body to send
	chunked    bool             // the body goes chunked (else by its Content-Length)
	inMemory   bool             // the body is a standard in-memory reader (see inMemory)
	bw         *bodyWriter      // nil when the request has no body
	bodyResult error            // the body writer's result, once received
	bodyDone   bool             // bodyResult is set
	syncBody   bool             // the body was written before the response was read
	bodyClosed atomic.Bool      // req.Body was closed (once: the writer, or fail)
	header     proto.HeaderWait // ResponseHeaderTimeout's timer
	noReuse    bool             // the connection must not be reused after this exchange
	released   atomic.Bool      // release was called
	// claim settles a race between the response's end and a concurrent Close of its
	// body: finish claims the exchange for its ending (claimFinish), a Close that finds a
	// Read under way claims it for an abort (claimClose). The first wins: a Close never
	// aborts a connection that finish gave back, which another request may be using.
	claim atomic.Int32

	// The response and its body live here, so that a request costs one allocation for
	// all of them (the header's aside): parsed is the response when parseBuffered read
	// it, and rbody the body handed to the caller (deliver). An exchange serves one
	// request and is never reused, so the caller may keep the response, which keeps the
	// exchange (as the body always did), after the body ends.
	parsed parsed
	rbody  body
}

// roundTrip runs req over c. On error the connection has been ended (or, for errors
// before any byte was written, may be retried elsewhere: see retryable).
func (c *Conn) RoundTrip(req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	ex := &exchange{c: c, req: req, ctx: req.Context(), trace: trace, mark: c.nwritten.Load()}
	if req.Body == nil && req.ContentLength != 0 {
		// As net/http over HTTP/1: refused before any byte; the connection goes back
		// untouched.
		ex.release(nil)
		return nil, fmt.Errorf("endwell: Request.ContentLength=%d with nil Body", req.ContentLength)
	}
	if ex.ctx.Done() != nil {
		ex.stopCtx = context.AfterFunc(ex.ctx, func() {
			c.abort(proto.CtxEnded(ex.ctx))
		})
	}
	ex.gzip = !c.cfg.DisableCompression && req.Method != http.MethodHead &&
		first(req.Header, "Accept-Encoding") == "" && first(req.Header, "Range") == ""
	if c.cfg.DisableKeepAlives || req.Close {
		ex.noReuse = true
	}
	ex.hasBody = req.Body != nil && req.Body != http.NoBody
	ex.body = req.Body
	teChunked := len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked"
	if ex.hasBody && req.ContentLength <= 0 && !teChunked && methodUsuallyLacksBody(req.Method) {
		// A body of unknown length where none is usual: if it is empty, send none, as
		// net/http does (a GET with Transfer-Encoding: chunked puzzles many servers).
		var empty bool
		if ex.body, empty = probeBody(req.Body); empty {
			ex.hasBody = false
			req.Body.Close()
		}
	}

	// A body of unknown length goes chunked, as does one whose caller asked for it.
	ex.chunked = ex.hasBody && (req.ContentLength <= 0 || teChunked)

	if err := ex.writeHeaders(); err != nil {
		ex.closeReqBody()
		return nil, ex.fail(err)
	}
	if ex.hasBody {
		ex.bw = &bodyWriter{done: make(chan error, 1)}
		if httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
			ex.bw.cont = make(chan bool, 1)
		}
		ex.inMemory = inMemory(req.Body)
		if ex.bw.cont == nil && !ex.chunked && req.ContentLength <= int64(c.bw.Available()) && ex.inMemory {
			// A small body in memory goes out with the header, in one write and without
			// a writer goroutine (as net/http, which writes such a request at once). It
			// fits the socket's send buffer: the write can't wait on the server.
			ex.syncBody = true
			ex.writeBody()
			return ex.readResponse()
		}
		// The header goes out first, and is counted written before the response is read
		// (the retry decision rests on it).
		if err := c.bw.Flush(); err != nil {
			ex.closeReqBody()
			return nil, ex.fail(err)
		}
		// The request body's writer: it streams the body while this goroutine reads the
		// response, and exits when the body is written or the connection fails.
		go ex.writeBody()
	} else {
		if err := c.bw.Flush(); err != nil {
			return nil, ex.fail(err)
		}
		if trace != nil && trace.WroteRequest != nil {
			trace.WroteRequest(httptrace.WroteRequestInfo{})
		}
	}
	return ex.readResponse()
}

// writeHeaders writes the request line and header into the connection's buffer, byte for
// byte as net/http writes them: the request line, Host, User-Agent, then (from the
// request's transfer) Connection: close for Request.Close, Content-Length or
// Transfer-Encoding and Trailer, then the caller's fields sorted by key, then those the
// transport adds (Accept-Encoding, Connection: close under DisableKeepAlives,
// Proxy-Authorization), sorted too. RoundTrip's checkRequest has validated every field, the
// host and the URL before any I/O. It fails, having written nothing, only for what
// net/http refuses as it writes: a request through a proxy whose Host is not a valid Host
// header, a chunked body's Trailer key that a trailer may not have.
func (ex *exchange) writeHeaders() error {
	req, c, trace := ex.req, ex.c, ex.trace
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return err
	}
	if !httpguts.ValidHostHeader(host) {
		// As net/http (go.dev/issue/61431): an invalid Host, a Unix socket's path say, is
		// sent empty; a proxy could do nothing with that.
		if c.proxied {
			return errInvalidHost
		}
		host = ""
	}
	host = removeZone(host)
	uri := req.URL.RequestURI()
	if c.proxied && req.URL.Scheme != "" && req.URL.Opaque == "" {
		uri = req.URL.Scheme + "://" + host + uri
	} else if method == http.MethodConnect && req.URL.Path == "" {
		uri = host
		if req.URL.Opaque != "" {
			uri = req.URL.Opaque
		}
	}

	// The header goes into the buffer's free space, which it fits but for a big one.
	b := c.bw.AvailableBuffer()
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	tracing := trace != nil && trace.WroteHeaderField != nil
	if tracing {
		trace.WroteHeaderField("Host", []string{host})
	}
	field := func(k, v string) {
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
		if tracing {
			trace.WroteHeaderField(k, []string{v})
		}
	}
	ua := defaultUserAgent
	if vs, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(vs) > 0 {
			ua = textproto.TrimString(vs[0])
		}
	}
	if ua != "" {
		field("User-Agent", ua)
	}
	// As net/http, the first Connection field alone is looked at, its tokens split at
	// spaces, tabs and commas.
	closeToken := hasToken(first(req.Header, "Connection"), "close")
	if req.Close && !closeToken {
		field("Connection", "close")
	}
	switch {
	case ex.hasBody && !ex.chunked:
		field("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case ex.chunked:
		field("Transfer-Encoding", "chunked")
		if len(req.Trailer) > 0 {
			// Announced only with a chunked body, which alone can carry them, as net/http.
			keys := make([]string, 0, len(req.Trailer))
			for k := range req.Trailer {
				k = http.CanonicalHeaderKey(k)
				switch k {
				case "Transfer-Encoding", "Trailer", "Content-Length":
					return fmt.Errorf("endwell: invalid Trailer key %q", k)
				}
				keys = append(keys, k)
			}
			slices.Sort(keys)
			field("Trailer", strings.Join(keys, ","))
		}
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		field("Content-Length", "0")
	}

	// The caller's fields, sorted by key (a few: sorted in place on the stack).
	var small [16]string
	keys := small[:0]
	for k := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		vs := req.Header[k]
		var traced []string
		for _, v := range vs {
			v = textproto.TrimString(v)
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
			if tracing {
				traced = append(traced, v)
			}
		}
		if tracing {
			trace.WroteHeaderField(k, traced)
		}
	}

	// The transport's own fields, in their sorted order.
	if ex.gzip {
		field("Accept-Encoding", "gzip")
	}
	if c.cfg.DisableKeepAlives && !req.Close && !closeToken && !isProtocolSwitch(req.Header) {
		field("Connection", "close")
	}
	if c.proxied {
		if auth := c.proxyAuth; auth != "" && req.Header.Get("Proxy-Authorization") == "" {
			field("Proxy-Authorization", auth)
		}
	}
	b = append(b, "\r\n"...)
	_, err = c.bw.Write(b)
	if trace != nil && trace.WroteHeaders != nil {
		trace.WroteHeaders()
	}
	return err
}

// hasToken reports whether v holds token (ASCII, lower case) as a whole word, in any case:
// bounded by the ends of v, spaces, tabs or commas.
func hasToken(v, token string) bool {
	for i := 0; i+len(token) <= len(v); i++ {
		if i > 0 && !tokenBoundary(v[i-1]) {
			continue
		}
		if end := i + len(token); end < len(v) && !tokenBoundary(v[end]) {
			continue
		}
		if strings.EqualFold(v[i:i+len(token)], token) {
			return true
		}
	}
	return false
}

func tokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// errInvalidHost is net/http's error for a request through a proxy whose Host is not a
// valid Host header.
var errInvalidHost = errors.New("http: invalid Host header")

// isProtocolSwitch reports whether h asks to switch protocols (Upgrade, with Connection:
// Upgrade): DisableKeepAlives then adds no Connection: close, as net/http.
func isProtocolSwitch(h http.Header) bool {
	return first(h, "Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// defaultUserAgent is net/http's, so that servers see a drop-in client as they saw the
// one it replaced.
const defaultUserAgent = "Go-http-client/1.1"

// writeBody runs in the body writer's goroutine.
func (ex *exchange) writeBody() {
	req, c, bw := ex.req, ex.c, ex.bw
	err := func() error {
		if bw.cont != nil {
			if ex.trace != nil && ex.trace.Wait100Continue != nil {
				ex.trace.Wait100Continue()
			}
			if d := c.cfg.ExpectContinueTimeout; d > 0 {
				timer := time.NewTimer(d)
				defer timer.Stop()
				select {
				case ok := <-bw.cont:
					if !ok {
						return proto.ErrBodyNotSent
					}
				case <-timer.C:
				}
			}
		}
		return ex.copyBody()
	}()
	var cerr error
	if ex.bodyClosed.CompareAndSwap(false, true) {
		cerr = req.Body.Close()
	}
	if err == nil && cerr != nil {
		err = &proto.BodyReadError{Err: cerr}
	}
	if err != nil && err != proto.ErrBodyNotSent {
		c.abort(err)
	} else if err == nil {
		ex.armHeaderTimer() // the request is written: the wait for the response starts
	}
	if ex.trace != nil && ex.trace.WroteRequest != nil {
		werr := err
		if werr == proto.ErrBodyNotSent {
			werr = nil // the request is written, its body withheld by design: as net/http
		}
		ex.trace.WroteRequest(httptrace.WroteRequestInfo{Err: werr})
	}
	bw.done <- err
}

// copyBody writes the request body, framed by its length or chunked, and flushes it. As
// net/http, every Read of a body that is not in memory goes out at once (a streamed
// upload, a duplex exchange: the server sees each piece as the caller gives it), and a
// body of declared length must have exactly that length: a longer one fails the request
// as a shorter one does, though the declared bytes went out.
func (ex *exchange) copyBody() error {
	req, c := ex.req, ex.c
	src := bodyReader{ex.body}
	var dst io.Writer = c.bw
	if !ex.inMemory {
		// The last declared bytes wait for the check that no more follow: a body found
		// longer fails without the server having seen a complete request.
		limit := int64(-1)
		if !ex.chunked {
			limit = req.ContentLength
		}
		dst = &flushWriter{bw: c.bw, hold: limit}
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	if !ex.chunked {
		n, err := io.CopyBuffer(dst, io.LimitReader(src, req.ContentLength), *buf)
		if err != nil {
			return err
		}
		if n == req.ContentLength {
			// More than declared? Counted to its end, as net/http does for its error.
			extra, err := io.CopyBuffer(io.Discard, src, *buf)
			if err != nil {
				return err
			}
			n += extra
		}
		if n != req.ContentLength {
			return &proto.BodyReadError{Err: fmt.Errorf("endwell: ContentLength=%d with Body length %d", req.ContentLength, n)}
		}
		return c.bw.Flush()
	}
	cw := httputil.NewChunkedWriter(dst)
	n, err := io.CopyBuffer(cw, src, *buf)
	if err != nil {
		return err
	}
	if req.ContentLength > 0 && n != req.ContentLength {
		// Transfer-Encoding: chunked asked with a declared length: the length must hold.
		return &proto.BodyReadError{Err: fmt.Errorf("endwell: ContentLength=%d with Body length %d", req.ContentLength, n)}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	// The trailers, sorted and trimmed as net/http writes them, then the end.
	if err := req.Trailer.Write(c.bw); err != nil {
		return err
	}
	if _, err := c.bw.WriteString("\r\n"); err != nil {
		return err
	}
	return c.bw.Flush()
}

// copyBufs holds copyBody's buffers: a body's Reads go through one of them.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// flushWriter writes through a bufio.Writer and flushes it after each Write, but for the
// Write that completes hold bytes (if hold is not negative), which its caller flushes.
type flushWriter struct {
	bw      *bufio.Writer
	hold, n int64
}

func (w *flushWriter) Write(p []byte) (int, error) {
	if w.hold >= 0 && len(p) > 1 && w.n+int64(len(p)) >= w.hold {
		// The Write that completes hold: all but its last byte go out (a bufio.Writer
		// passes a Write larger than its free space straight to the socket), the last
		// waits in the buffer, which has room for it after the flush.
		k := len(p) - 1
		n, err := w.bw.Write(p[:k])
		w.n += int64(n)
		if err == nil {
			err = w.bw.Flush()
		}
		if err != nil {
			return n, err
		}
		m, err := w.bw.Write(p[k:])
		w.n += int64(m)
		return n + m, err
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err == nil && (w.hold < 0 || w.n < w.hold) {
		err = w.bw.Flush()
	}
	return n, err
}

// nopCloserTypes are io.NopCloser's two types, which inMemory looks through.
var nopCloserTypes = [2]reflect.Type{
	reflect.TypeOf(io.NopCloser(nil)),
	reflect.TypeOf(io.NopCloser(struct {
		io.Reader
		io.WriterTo
	}{})),
}

// inMemory reports whether a request body is one of the standard library's in-memory
// readers (net/http's isKnownInMemoryReader): such a body is written without a flush per
// Read, and its header waits to go out with its first bytes.
func inMemory(r io.Reader) bool {
	switch r.(type) {
	case *bytes.Reader, *bytes.Buffer, *strings.Reader:
		return true
	}
	if t := reflect.TypeOf(r); t != nil && (t == nopCloserTypes[0] || t == nopCloserTypes[1]) {
		inner, _ := reflect.ValueOf(r).Field(0).Interface().(io.Reader)
		return inner != nil && inMemory(inner)
	}
	return false
}

// bodyReader marks errors of the request body's Read as such.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &proto.BodyReadError{Err: err}
	}
	return n, err
}

func (ex *exchange) closeReqBody() {
	if ex.req.Body != nil && ex.bodyClosed.CompareAndSwap(false, true) {
		ex.req.Body.Close()
	}
}

// fail ends the exchange: it aborts the connection (unless something else ended it
// first, whose cause then wins) and returns the error the caller should see. Only the
// exchange's owner calls it: the request's goroutine, then the body's lock holder, then
// the drain.
//
// fail never waits, not for the body writer either. A body writer's own error says more
// than the read error it caused, and needs no wait to be found: the writer, failing on the
// request body, aborts the connection with that error as the cause, and the cause is
// recorded before the socket closes (conn.endBy), so every read error the abort causes
// finds it as the close cause below. A writer that failed after something else ended the
// connection caused nothing here: the first cause wins. The writer itself is left to end
// on its own: it fails on the dead connection or returns with the request body's Read, and
// its result channel is buffered.
func (ex *exchange) fail(err error) error {
	if ex.stopCtx != nil {
		ex.stopCtx()
	}
	ex.c.abort(err)
	ex.release(err)
	if ex.bw != nil && !ex.bodyDone {
		// The body's writer may be blocked in the body's Read, which the connection's
		// abort does not end: the body is closed now, as RoundTrip promises on error.
		ex.closeReqBody()
	}
	err = ex.c.requestErr(err)
	var bre *proto.BodyReadError
	if errors.As(err, &bre) {
		return bre.Err
	}
	return err
}

// waitBody waits up to d for the body writer's result. Only finish calls it: in the
// request's goroutine, a body's Read at EOF, or the drain; never in Close.
func (ex *exchange) waitBody(d time.Duration) error {
	if ex.bodyDone {
		return ex.bodyResult
	}
	select {
	case ex.bodyResult = <-ex.bw.done:
		ex.bodyDone = true
		return ex.bodyResult
	default:
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ex.bodyResult = <-ex.bw.done:
		ex.bodyDone = true
		return ex.bodyResult
	case <-timer.C:
		return proto.ErrBodyStillWriting
	}
}

// readResponse reads the response headers (skipping 1xx) within ResponseHeaderTimeout and
// hands back the response with a body that returns the connection when it ends.
func (ex *exchange) readResponse() (*http.Response, error) {
	if ex.bw == nil || ex.bodyDone || ex.syncBody {
		ex.armHeaderTimer() // else the body's writer arms it once the body is out
	}
	resp, err := ex.readHeader()
	if ex.c.cfg.ResponseHeaderTimeout > 0 && ex.header.Disarm() && err == nil {
		// The timer fired and aborted the connection; report the timeout.
		err = proto.ErrResponseHeaderTimeout
	}
	if err != nil {
		return nil, ex.fail(err)
	}
	return ex.deliver(resp)
}

// armHeaderTimer starts ResponseHeaderTimeout's timer (see proto.HeaderWait), if there is
// a timeout.
func (ex *exchange) armHeaderTimer() {
	if d := ex.c.cfg.ResponseHeaderTimeout; d > 0 {
		c := ex.c
		ex.header.Arm(d, func() { c.abort(proto.ErrResponseHeaderTimeout) })
	}
}

// readHeader reads the header of the final response, skipping 1xx responses (each goes to
// the trace's hooks; a 100 Continue releases a body that waits for it).
//
// 1xx responses count against MaxResponseHeaderBytes together with the final one, as in
// net/http, unless a Got1xxResponse hook saw them: each it saw starts a new count.
func (ex *exchange) readHeader() (*http.Response, error) {
	c, trace := ex.c, ex.trace
	c.readLimit = c.cfg.MaxHeaderBytes
	defer func() { c.readLimit = noLimit }()
	if _, err := c.br.Peek(1); err != nil {
		if c.owner.Cause() == nil && c.writtenSince(ex.mark) > 0 && PeerGone(err) {
			err = fmt.Errorf("%w: %w", proto.ErrServerClosedConn, err)
		}
		return nil, err
	}
	if trace != nil && trace.GotFirstResponseByte != nil {
		trace.GotFirstResponseByte()
	}
	for {
		resp, err := readResponse(c.br, ex.req, c.cfg.MaxHeaderBytes, &ex.parsed)
		if err != nil {
			return nil, ex.headerErr(err)
		}
		code := resp.StatusCode
		switch {
		case code < 100:
			// http.ReadResponse takes any three digits, "000" included; a status
			// under 100 exists in no class (RFC 9110, section 15).
			return nil, &proto.ProtocolError{Err: fmt.Errorf("invalid status code %03d", code)}
		case code > 199 || code == http.StatusSwitchingProtocols:
			return resp, nil
		}
		if code == http.StatusContinue && ex.bw != nil && ex.bw.cont != nil && !ex.bw.contSent {
			// The 100 Continue the request asked for (Got100Continue fires for that one
			// only, as in net/http; any 1xx goes to Got1xxResponse).
			ex.bw.cont <- true
			ex.bw.contSent = true
			if trace != nil && trace.Got100Continue != nil {
				trace.Got100Continue()
			}
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
			c.readLimit = c.cfg.MaxHeaderBytes
		}
	}
}

// connBroken is net/http's word for a connection that ended in the middle of a response's
// header: callers match it.
const connBroken = "net/http: HTTP/1.x transport connection broken"

// headerErr says what a failure of http.ReadResponse was, unless the connection was ended
// from elsewhere (whose cause fail then reports): the header limit, the server gone or
// timed out, a header cut short by the server's hang-up, or a malformed header.
func (ex *exchange) headerErr(err error) error {
	c := ex.c
	if c.owner.Cause() != nil {
		return err
	}
	switch {
	case errors.Is(err, proto.ErrHeaderTooLarge) || c.readLimit <= 0:
		// At the limit, the parser may see a line cut short by it, and call that
		// malformed: the limit is the cause.
		return &proto.ProtocolError{Err: proto.ErrHeaderTooLarge}
	case isTimeout(err):
		return err
	case PeerGone(err):
		// The server hung up mid-header: in net/http's words.
		return fmt.Errorf("%s: %w", connBroken, err)
	case c.br.Buffered() == 0 && (c.raw.PeerReset() || c.raw.PeerFIN()):
		// The server hung up mid-header: bufio's ReadLine hands over the line cut short
		// as if it were whole and drops the read error, so the parser calls it malformed.
		// The hang-up is the cause.
		cause := io.ErrUnexpectedEOF
		if c.raw.PeerReset() {
			cause = syscall.ECONNRESET
		}
		return fmt.Errorf("%s: %w", connBroken, cause)
	}
	return &proto.ProtocolError{Err: err}
}

// deliver readies the final response for the caller: the connection's reuse as it says,
// the body that waited for a 100 Continue sent or withheld, its TLS state, and its body,
// which ends the exchange when it ends (a 101 hands the connection over instead).
func (ex *exchange) deliver(resp *http.Response) (*http.Response, error) {
	c := ex.c
	if resp.Close {
		ex.noReuse = true
	}
	if ex.bw != nil && ex.bw.cont != nil && !ex.bw.contSent {
		// A final answer without 100 Continue. As net/http: unless the response or the
		// request says the connection closes, the body goes out all the same (the server
		// reads or discards it, and the connection stays in step); else it is not sent.
		ex.bw.cont <- !resp.Close && !ex.req.Close
		ex.bw.contSent = true
	}
	resp.TLS = nil
	if c.tls != nil {
		if c.tlsState == nil {
			// As net/http: one state per connection, shared by its responses.
			st := c.tls.ConnectionState()
			c.tlsState = &st
		}
		resp.TLS = c.tlsState
	}

	if resp.StatusCode == http.StatusSwitchingProtocols {
		return ex.switchProtocols(resp)
	}

	if resp.Body == http.NoBody {
		ex.finish()
		return resp, nil
	}
	b := &ex.rbody
	b.ex, b.rc, b.remaining = ex, resp.Body, resp.ContentLength
	resp.Body = b
	if ce := first(resp.Header, "Content-Encoding"); ex.gzip && ce != "" && strings.EqualFold(ce, "gzip") {
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Uncompressed = true
		resp.Body = &gzipBody{body: b}
	}
	return resp, nil
}

// The claims on an exchange's ending (exchange.claim).
const (
	claimNone   int32 = iota
	claimFinish       // finish ends the exchange
	claimClose        // a body's Close aborts the connection
)

// finish ends the exchange after the whole response was read: the connection goes back to
// the pool, or closes gracefully when it may not be reused.
func (ex *exchange) finish() {
	c := ex.c
	// Something else got there first and is aborting the connection, and may not have
	// got to it yet: the body's Close from another goroutine, or the context's AfterFunc.
	// Abort here too (the first call decides), so that the connection is never handed
	// back to the pool, where the next request would fail with this one's ending.
	var lost error
	switch {
	case !ex.claim.CompareAndSwap(claimNone, claimFinish):
		lost = proto.ErrBodyClosed
	case ex.stopCtx != nil && !ex.stopCtx():
		lost = proto.CtxEnded(ex.ctx)
	}
	if lost != nil {
		c.abort(lost)
		ex.release(c.owner.Cause())
		return
	}
	if ex.bw != nil {
		switch err := ex.waitBody(50 * time.Millisecond); {
		case err == proto.ErrBodyNotSent:
			// A final answer without 100 Continue: the body never went out, the
			// exchange is complete, but the server may still expect the body: close
			// gracefully rather than reuse.
			c.owner.Report(proto.Outcome{Kind: proto.ServerClose})
			ex.release(err)
			return
		case err != nil:
			// The response is complete but the request was not fully written: the
			// connection's state is unknown, so it is not reused, and our goodbye
			// would cut into a body still in flight. The reason is the upload's.
			c.owner.Report(proto.Outcome{Kind: proto.Unfinished, Cause: err})
			ex.release(err)
			return
		}
	}
	if c.owner.Dead() {
		ex.release(c.owner.Cause())
		return
	}
	// Bytes after the response (net/http's "unsolicited response") leave the connection
	// out of step: it is not reused.
	if !c.owner.Report(proto.Outcome{Kind: proto.Complete, NoReuse: ex.noReuse || c.br.Buffered() > 0}) {
		ex.release(errNotReused)
		return
	}
	ex.release(nil)
}

var errNotReused = errors.New("endwell: connection not reused")

// release hands the connection back once the exchange is over: to the pool if err is nil,
// else only out of the transport's active set (it has been ended). A connection that went
// back to the pool is reported to httptrace's PutIdleConn, as net/http does: after it is
// back, so that a request made from the hook finds it; one that is not reused (aborted,
// Connection: close, HTTP/1.0, DisableKeepAlives) is not reported, as in net/http. Only
// its first call counts.
func (ex *exchange) release(err error) {
	if !ex.released.CompareAndSwap(false, true) {
		return
	}
	c := ex.c
	if err == nil {
		c.startWatch() // before the pool has it: a taker stops the watch
	}
	c.owner.Release(err)
	if err == nil && ex.trace != nil && ex.trace.PutIdleConn != nil {
		ex.trace.PutIdleConn(nil)
	}
	if h := c.cfg.OnRelease; h != nil {
		if f := h.Load(); f != nil {
			(*f)(err)
		}
	}
}

// switchProtocols hands the connection over to the caller as the response body, an
// io.ReadWriteCloser, as net/http does for 101 Switching Protocols. The connection leaves
// the pool; closing the body closes it gracefully. A 101 that the request did not ask for
// (see checkSwitch) is a malformed response: the connection is aborted.
func (ex *exchange) switchProtocols(resp *http.Response) (*http.Response, error) {
	if ex.stopCtx != nil && !ex.stopCtx() {
		return nil, ex.fail(proto.CtxEnded(ex.ctx))
	}
	if err := checkSwitch(ex.req, resp); err != nil {
		return nil, ex.fail(&proto.ProtocolError{Err: err})
	}
	c := ex.c
	c.owner.Detach()
	resp.Body = &switchedBody{c: c, ex: ex}
	return resp, nil
}

// checkSwitch says why a 101 Switching Protocols response may not switch req's connection:
// a server switches only to a protocol that the request offered in its Upgrade header, with
// Connection: upgrade, and names it in its own Upgrade header (RFC 9110, section 7.8). A
// 101 to a request that asked for nothing would hand the caller a raw connection where it
// expects a response body, and leave a server in charge of the bytes that follow.
func checkSwitch(req *http.Request, resp *http.Response) error {
	if !RequiresHTTP1(req) {
		return errors.New("101 Switching Protocols to a request that asked for no upgrade")
	}
	got := resp.Header["Upgrade"]
	if len(got) == 0 {
		return errors.New("101 Switching Protocols without an Upgrade header")
	}
	for _, v := range got {
		for proto := range strings.SplitSeq(v, ",") {
			proto = strings.TrimSpace(proto)
			if proto == "" {
				continue
			}
			if !offered(req.Header["Upgrade"], proto) {
				return fmt.Errorf("101 Switching Protocols to %q, which the request did not offer", proto)
			}
		}
	}
	return nil
}

// offered reports whether one of the Upgrade header values vs names proto; protocol
// names compare case-insensitively.
func offered(vs []string, proto string) bool {
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), proto) {
				return true
			}
		}
	}
	return false
}

// switchedBody is the connection of a 101 Switching Protocols response, handed to the
// caller as the response body. Reads and writes go straight to the connection; the
// request's context no longer applies to them, as in net/http: the connection is the
// caller's until Close.
//
// Close ends the connection gracefully, unless a Write was cut short (the other protocol's
// state is then unknown: abort). It first interrupts a Read or Write blocked in another
// goroutine, with a deadline in the past, and waits for it to let go, which it does at
// once: the teardown needs the connection's reads and writes (its check of the server's
// goodbye peeks at the socket, which a blocked Read would hold for the whole budget).
type switchedBody struct {
	c      *Conn
	ex     *exchange
	closed atomic.Bool // Close was called: Read and Write fail with proto.ErrBodyClosed

	rmu sync.Mutex // held by a Read while it uses the connection; guards eof
	eof bool       // a Read returned io.EOF: the server ended its side
	wmu sync.Mutex // held by a Write while it uses the connection; guards werr
	// werr is the first error of a Write, or proto.ErrBodyClosed for a Write that Close cut short.
	werr error
}

func (s *switchedBody) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.closed.Load() {
		return 0, proto.ErrBodyClosed
	}
	n, err := s.c.br.Read(p)
	switch {
	case err == nil:
	case s.closed.Load():
		err = proto.ErrBodyClosed // Close interrupted this Read
	case err == io.EOF:
		s.eof = true
	}
	return n, err
}

func (s *switchedBody) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed.Load() {
		return 0, proto.ErrBodyClosed
	}
	if s.werr != nil {
		return 0, s.werr
	}
	n, err := s.c.nc.Write(p)
	if err != nil {
		if s.closed.Load() {
			err = proto.ErrBodyClosed // Close interrupted this Write
		}
		s.werr = err
	}
	return n, err
}

// Close ends the connection: gracefully, as a complete exchange that can't be reused
// (reason server_close, as for Connection: close), or, when the server had ended its side
// first, as a connection the peer closed (peer_closed: its close_notify is answered); with
// an abort if a Write failed or was cut short. It returns once the teardown has started.
func (s *switchedBody) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	c := s.c
	c.nc.SetReadDeadline(aLongTimeAgo)
	c.nc.SetWriteDeadline(aLongTimeAgo)
	s.rmu.Lock()
	s.wmu.Lock()
	eof, werr := s.eof, s.werr
	s.wmu.Unlock()
	s.rmu.Unlock()
	c.nc.SetReadDeadline(time.Time{})
	c.nc.SetWriteDeadline(time.Time{})
	switch {
	case werr != nil:
		c.abort(werr)
	case eof:
		// As for a connection the server closed while idle (see idleLayer): the teardown
		// tells the server's close_notify from a bare FIN by this read's EOF.
		c.watchErr = io.EOF
		c.peerClosed.Store(true)
		c.owner.Report(proto.Outcome{Kind: proto.PeerClosed})
	default:
		c.owner.Report(proto.Outcome{Kind: proto.ServerClose})
	}
	s.ex.release(errNotReused)
	return nil
}

// body is a response body read from the connection in the reader's goroutine.
//
// Until the exchange ends, it is owned by whoever holds mu: a Read, Close, or Close's
// finisher. Close uses TryLock and never waits for the lock: when a Read holds it, blocked
// on the connection, Close only aborts the connection (conn.abort is safe from any
// goroutine: its decision is a compare-and-swap), which makes the Read return, and leaves
// the rest of the ending to the lock: the Read, on its error, or a later Read, or the
// finisher, whichever takes the lock first, ends the exchange (fail: the context's watch,
// the release, the body writer's state) under it, exactly once (done).
type body struct {
	ex *exchange
	rc io.ReadCloser // what the body is read from: lengthBody, or http.ReadResponse's body
	// closing is set by the first Close; Read checks it first, under mu, and from then on
	// returns proto.ErrBodyClosed.
	closing atomic.Bool

	mu        sync.Mutex // guards the following, rc, and the exchange until done
	remaining int64      // bytes still expected, or -1 when unknown
	done      bool       // the exchange has ended, or was handed to the drain
	err       error      // error to return once done (EOF or a read error)
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing.Load() {
		// Close was called. If it found the lock taken, it only aborted the connection:
		// the exchange is ended here if the Read that held the lock returned data, not
		// an error, and the finisher has not run yet.
		b.endLocked()
		return 0, proto.ErrBodyClosed
	}
	if b.done {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	switch {
	case err == io.EOF:
		b.done, b.err = true, io.EOF
		b.ex.finish()
	case err != nil:
		var ne net.Error
		switch {
		case b.ex.c.owner.Cause() != nil:
			// Ended from elsewhere (a concurrent Close, the context, Transport.Close):
			// fail reports that cause.
		case errors.Is(err, io.ErrUnexpectedEOF):
			// Truncated by the server: a FIN before Content-Length or the last chunk.
		case errors.As(err, &ne):
		default:
			err = &proto.ProtocolError{Err: err} // broken chunked framing and the like
		}
		err = b.ex.fail(err)
		b.done, b.err = true, err
		proto.AwaitClientTimer(b.ex.req, err)
	}
	return n, err
}

// endLocked ends the exchange of a body closed before its end, unless it has ended: it
// aborts the connection and releases it. It never waits.
func (b *body) endLocked() {
	if b.done {
		return
	}
	b.done, b.err = true, proto.ErrBodyClosed
	b.ex.fail(proto.ErrBodyClosed)
}

// Close ends the body. Before its end, the rest is drained in the background when it is
// small enough to arrive within MaxDrainBytes and MaxDrainTime, and the connection reused;
// otherwise the connection is aborted. Close never blocks: not on a concurrent Read, nor on
// the request body's writer.
func (b *body) Close() error {
	if b.closing.Swap(true) {
		return nil // closed already, or being closed by another goroutine
	}
	if !b.mu.TryLock() {
		// A Read holds the lock, blocked on the connection (or about to return): the
		// exchange is its own. Abort, which unblocks it, and touch nothing else; unless
		// the Read met the body's end and finish claimed the exchange: the connection
		// is then back in the pool, or on its way, and no longer this body's to abort.
		if !b.ex.claim.CompareAndSwap(claimNone, claimClose) {
			return nil
		}
		b.ex.c.abort(proto.ErrBodyClosed)
		// The finisher: it ends the exchange once the Read lets go of the lock, in case
		// no Read does it (one that returned data read before the abort). It exits then;
		// the abort bounds its wait.
		go func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.endLocked()
		}()
		return nil
	}
	defer b.mu.Unlock()
	if b.done {
		return nil
	}
	if cfg := b.ex.c.cfg; cfg.MaxDrainBytes < 0 || cfg.MaxDrainTime < 0 || b.remaining > cfg.MaxDrainBytes {
		b.endLocked()
		return nil
	}
	// The drain owns the exchange from now on; Read no longer touches rc (closing).
	b.done = true
	// The drain: it discards the rest of the body within the limits, then reuses or
	// aborts the connection. It exits by the drain deadline at the latest.
	go b.drain()
	return nil
}

func (b *body) drain() {
	ex := b.ex
	c := ex.c
	c.nc.SetReadDeadline(time.Now().Add(c.cfg.MaxDrainTime))
	n, err := io.Copy(io.Discard, io.LimitReader(b.rc, c.cfg.MaxDrainBytes+1))
	if err == nil && n <= c.cfg.MaxDrainBytes {
		// io.Copy stops at EOF without reporting it: the body is complete.
		c.nc.SetReadDeadline(time.Time{})
		ex.finish()
		return
	}
	ex.fail(proto.ErrBodyClosed)
}

// gzipBody decompresses a body we asked gzip for. The gzip reader is made on the first Read,
// so that a body closed unread costs nothing.
type gzipBody struct {
	body *body
	zr   *gzip.Reader
	zerr error
}

func (g *gzipBody) Read(p []byte) (int, error) {
	if g.body.closing.Load() {
		// Closed: the decompressor may hold more of the body, which is not the
		// caller's any more (as net/http's, a Read after Close fails).
		return 0, proto.ErrBodyClosed
	}
	if g.zr == nil && g.zerr == nil {
		g.zr, g.zerr = gzip.NewReader(g.body)
	}
	if g.zerr != nil {
		return 0, g.zerr
	}
	return g.zr.Read(p)
}

func (g *gzipBody) Close() error { return g.body.Close() }

// methodUsuallyLacksBody reports whether requests of method rarely carry a body (net/http's
// list): an unknown-length body of theirs is probed before it is sent chunked.
func methodUsuallyLacksBody(method string) bool {
	switch method {
	case "", "GET", "HEAD", "DELETE", "OPTIONS", "PROPFIND", "SEARCH":
		return true
	}
	return false
}

// probeWait is how long probeBody waits for a body's first byte.
const probeWait = 200 * time.Millisecond

// probeBody reads the first byte of body, waiting at most probeWait for it. It reports
// empty if body ended at once; otherwise it returns what to read in body's place: the
// byte read, then the rest; or, when body was too slow, a reader that takes the pending
// first read's result, then the rest.
func probeBody(body io.Reader) (rest io.Reader, empty bool) {
	first := make(chan probeResult, 1)
	// The probe: one Read of the body, whose result waits in first for whoever reads the
	// body next. It ends with that Read; a Read that never returns is the body's owner's
	// to unblock (Close), as for any body.
	go func() {
		var b [1]byte
		n, err := body.Read(b[:])
		first <- probeResult{b: b[0], n: n, err: err}
	}()
	timer := time.NewTimer(probeWait)
	defer timer.Stop()
	select {
	case r := <-first:
		if r.n == 0 && r.err == io.EOF {
			return nil, true
		}
		return r.then(body), false
	case <-timer.C:
		return &pendingProbe{ch: first, body: body}, false
	}
}

type probeResult struct {
	b   byte
	n   int
	err error
}

// then returns a reader of what the probe read, then of the rest of body, unless the
// probe's read ended it (an error, io.EOF included: body is not read again).
func (r probeResult) then(body io.Reader) io.Reader {
	var first io.Reader = bytes.NewReader([]byte{r.b}[:r.n])
	if r.err != nil {
		return io.MultiReader(first, errReader{r.err})
	}
	return io.MultiReader(first, body)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// pendingProbe reads the result of a probe that was too slow, once it comes, then the
// rest of the body.
type pendingProbe struct {
	ch   <-chan probeResult
	body io.Reader
	r    io.Reader
}

func (p *pendingProbe) Read(b []byte) (int, error) {
	if p.r == nil {
		p.r = (<-p.ch).then(p.body)
	}
	return p.r.Read(b)
}

// removeZone strips an IPv6 zone from a Host header value, as net/http does.
func removeZone(host string) string {
	if !strings.HasPrefix(host, "[") {
		return host
	}
	i := strings.LastIndex(host, "]")
	if i < 0 {
		return host
	}
	j := strings.LastIndex(host[:i], "%")
	if j < 0 {
		return host
	}
	return host[:j] + host[i:]
}

// first is h.Get(key) for a key in canonical form: the first value, or "".
func first(h http.Header, key string) string {
	if vs := h[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
