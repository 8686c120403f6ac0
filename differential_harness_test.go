package endwell_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/mccutchen/go-httpbin/v2/httpbin"
)

// The harness of TestDifferential: go-httpbin served three ways, a case's request played
// through a transport, and what the caller can see of it, field by field.

// diffServer is go-httpbin served over one protocol.
type diffServer struct {
	name      string      // "h1", "h1tls" or "h2"
	url       string      // http://127.0.0.1:port or https://...
	clientTLS *tls.Config // trusts the server's certificate; nil for plain HTTP
}

// startDiffServers starts go-httpbin over HTTP/1.1 plain, HTTP/1.1 over TLS (ALPN offers
// http/1.1 only) and HTTP/2 over TLS (ALPN offers h2 only), so that both transports, which
// offer h2 and http/1.1, speak the same protocol to each. They close when the test ends.
func startDiffServers(t *testing.T) []diffServer {
	t.Helper()
	bin := httpbin.New(
		httpbin.WithMaxBodySize(8<<20),
		httpbin.WithMaxDuration(5*time.Second),
	)
	start := func(name string, tlsOn, h2 bool) diffServer {
		srv := httptest.NewUnstartedServer(bin)
		// Aborted requests (a failing body, a cancel) make the server log; the test
		// compares what the clients see.
		srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		s := diffServer{name: name}
		if tlsOn {
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			s.clientTLS = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
			s.clientTLS.NextProtos = nil
		} else {
			srv.Start()
		}
		t.Cleanup(srv.Close)
		s.url = srv.URL
		return s
	}
	return []diffServer{
		start("h1", false, false),
		start("h1tls", true, false),
		start("h2", true, true),
	}
}

// diffTransports returns a net/http Transport and an endwell Transport configured alike
// for tc against s. Defaults where the two differ by design are set explicitly, so that the
// comparison is of behaviour, not of defaults:
//   - ExpectContinueTimeout: zero means none for a zero http.Transport and 1 s for endwell
//     (as http.DefaultTransport): both get 1 s unless the case sets it;
//   - ForceAttemptHTTP2: net/http offers h2 with a custom TLSClientConfig only when set;
//     endwell always offers it (transport.go, ForceAttemptHTTP2's doc).
//
// MaxIdleConnsPerHost (net/http 2, endwell 32, documented) is left at its defaults: the
// cases use one connection at a time, which neither limit touches.
func diffTransports(t *testing.T, s diffServer, tc *diffCase) (*http.Transport, *endwell.Transport) {
	ect := tc.expectContinueTimeout
	if ect == 0 {
		ect = time.Second
	}
	nt := &http.Transport{
		TLSClientConfig:       s.clientTLS.Clone(),
		ForceAttemptHTTP2:     true,
		ExpectContinueTimeout: ect,
		DisableCompression:    tc.disableCompression,
		DisableKeepAlives:     tc.disableKeepAlives,
	}
	t.Cleanup(nt.CloseIdleConnections)
	et := newTransport(t, &endwell.Transport{
		TLSClientConfig:       s.clientTLS.Clone(),
		ExpectContinueTimeout: ect,
		DisableCompression:    tc.disableCompression,
		DisableKeepAlives:     tc.disableKeepAlives,
	})
	return nt, et
}

// diffField is one thing a caller can see of an exchange.
type diffField struct{ name, value string }

// diffValue returns the value of the field name in fs, or "".
func diffValue(fs []diffField, name string) string {
	for _, f := range fs {
		if f.name == name {
			return f.value
		}
	}
	return ""
}

// diffExcludedHeaders are the response headers not compared, and why.
var diffExcludedHeaders = map[string]string{
	// The server's clock: two responses a second apart differ.
	"Date": "the server's clock",
	// go-httpbin's /etag and /range serve through http.ServeContent with time.Now() as the
	// modification time: the server's clock again.
	"Last-Modified": "http.ServeContent(..., time.Now(), ...) in /etag and /range",
}

// diffRun plays tc against s through rt and returns what the caller saw, then what a
// follow-up request (tc.then) saw, its field names prefixed with "then.".
func diffRun(t *testing.T, s diffServer, tc *diffCase, rt http.RoundTripper) []diffField {
	t.Helper()
	c := &http.Client{Transport: rt, Timeout: tc.timeout}
	if !tc.follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	if tc.jar {
		jar, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Jar = jar
	}
	if tc.warm {
		// A first request, so that the case's request finds an idle connection.
		resp, err := c.Get(s.url + "/get")
		if err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fields := diffExchange(t, c, s, tc, tc.method, tc.path, tc.body, true)
	if tc.then != "" {
		c.Timeout = 0
		for _, f := range diffExchange(t, c, s, tc, "GET", tc.then, nil, false) {
			fields = append(fields, diffField{"then." + f.name, f.value})
		}
	}
	return fields
}

// diffExchange sends one request (the case's when main, else a plain one) and observes it.
// The fields are always the same, in the same order; a response's are missing when there
// is none.
func diffExchange(t *testing.T, c *http.Client, s diffServer, tc *diffCase, method, path string, body func() io.Reader, main bool) []diffField {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hooks := &diffHooks{cancel: cancel, h2: s.name == "h2"}
	if main {
		hooks.cancelOn = tc.cancelOn
	}
	ctx = httptrace.WithClientTrace(ctx, hooks.trace())
	var rbody io.Reader
	if body != nil {
		rbody = body()
	}
	base := s.url
	if main && tc.host != "" {
		base = strings.Replace(base, "127.0.0.1", tc.host, 1)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rbody)
	if err != nil {
		t.Fatal(err)
	}
	if main {
		for k, vs := range tc.header {
			req.Header[k] = vs
		}
		if tc.contentLength != 0 {
			req.ContentLength = tc.contentLength
		}
		if tc.prepare != nil {
			tc.prepare(req)
		}
		if tc.cancelOn == "start" {
			cancel()
		}
	}
	resp, err := c.Do(req)
	// The error's message is not compared: http.Client adds "(Client.Timeout exceeded ...)"
	// only when its own timer's goroutine ran before the transport returned the
	// context's error, a race; its chain of types is, except where that race decides it.
	fields := []diffField{{"error", diffErrClass(err)}, {"errorChain", chainTypes(err)}}
	var bodyField, trailer, saw string
	if resp != nil {
		var b []byte
		var rerr error
		switch {
		case main && tc.read == diffReadOneThenCancel:
			b, rerr = diffReadOne(resp.Body)
			if rerr == nil {
				cancel()
				var rest []byte
				rest, rerr = io.ReadAll(resp.Body)
				b = append(b, rest...)
			}
		case main && tc.read == diffReadOneThenClose:
			b, rerr = diffReadOne(resp.Body)
		default:
			b, rerr = io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		// A multipart response's boundary is random (mime/multipart.Writer): it is
		// replaced, in the body and the Content-Type, before they are compared.
		var boundary string
		if mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && strings.HasPrefix(mt, "multipart/") {
			boundary = params["boundary"]
			b = bytes.ReplaceAll(b, []byte(boundary), []byte("BOUNDARY"))
		}
		switch {
		case rerr != nil:
			// How much arrived before the failure depends on timing: the class only.
			bodyField = "read error: " + diffErrClass(rerr)
		case main && tc.read == diffReadOneThenClose:
			bodyField = fmt.Sprintf("first byte %q, then closed", b)
		default:
			sum := sha256.Sum256(b)
			bodyField = fmt.Sprintf("%d bytes, sha256 %s", len(b), hex.EncodeToString(sum[:6]))
			saw = diffServerSaw(b)
		}
		trailer = diffRenderHeader(resp.Trailer)
		tlsProto := "none"
		if resp.TLS != nil {
			tlsProto = "alpn=" + resp.TLS.NegotiatedProtocol
		}
		fields = append(fields,
			diffField{"status", resp.Status},
			diffField{"proto", resp.Proto},
			diffField{"tls", tlsProto},
			diffField{"header", diffUnbound(diffRenderHeader(resp.Header), boundary)},
			diffField{"contentLength", fmt.Sprint(resp.ContentLength)},
			diffField{"transferEncoding", fmt.Sprint(resp.TransferEncoding)},
			diffField{"uncompressed", fmt.Sprint(resp.Uncompressed)},
			diffField{"close", fmt.Sprint(resp.Close)},
			diffField{"bodyIsNoBody", fmt.Sprint(resp.Body == http.NoBody)},
		)
	}
	hooks.settle(err == nil)
	dial, ev, wrote := hooks.snapshot()
	return append(fields,
		diffField{"body", bodyField},
		diffField{"trailer", trailer},
		diffField{"serverSaw", saw},
		diffField{"hooks.dial", dial},
		diffField{"hooks", ev},
		diffField{"wroteHeaderFields", wrote},
	)
}

// diffReadOne reads the first byte of a body.
func diffReadOne(r io.Reader) ([]byte, error) {
	b := make([]byte, 1)
	_, err := io.ReadFull(r, b)
	return b, err
}

// diffRenderHeader spells h with sorted keys, without diffExcludedHeaders.
func diffRenderHeader(h http.Header) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		if _, skip := diffExcludedHeaders[k]; !skip {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		vs := h[k]
		if k == "Trailer" {
			// go-httpbin's /trailers announces its trailers in a map's order.
			vs = slices.Sorted(slices.Values(vs))
		}
		fmt.Fprintf(&b, "%s: %q; ", k, vs)
	}
	return b.String()
}

// diffUnbound replaces a multipart boundary in s.
func diffUnbound(s, boundary string) string {
	if boundary == "" {
		return s
	}
	return strings.ReplaceAll(s, boundary, "BOUNDARY")
}

// diffServerSaw returns the request headers go-httpbin echoed in a JSON body ("headers"),
// or "" when the body has none.
func diffServerSaw(body []byte) string {
	var echo struct {
		Headers http.Header `json:"headers"`
	}
	if json.Unmarshal(body, &echo) != nil || echo.Headers == nil {
		return ""
	}
	return diffRenderHeader(echo.Headers)
}

// errDiffBody is the error of a request body that fails mid-way.
var errDiffBody = errors.New("request body failed mid-way")

// diffErrClass classifies err as a caller would, with errors.Is and errors.As over the
// standard library's errors: deadline, cancelled, timeout, the request body's own error, an
// unexpected EOF, a closed connection.
func diffErrClass(err error) string {
	if err == nil {
		return "none"
	}
	var cls []string
	var ue *url.Error
	if errors.As(err, &ue) {
		cls = append(cls, "url.Error("+ue.Op+")")
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"deadline", context.DeadlineExceeded},
		{"canceled", context.Canceled},
		{"request-body", errDiffBody},
		{"unexpected-EOF", io.ErrUnexpectedEOF},
		{"net.ErrClosed", net.ErrClosed},
	} {
		if errors.Is(err, c.err) {
			cls = append(cls, c.name)
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		cls = append(cls, "timeout")
	}
	if len(cls) == 0 || len(cls) == 1 && ue != nil {
		cls = append(cls, "other")
	}
	return strings.Join(cls, "+")
}

// diffHooks records the httptrace hooks an exchange fired.
type diffHooks struct {
	cancelOn string             // the hook whose first firing cancels the request, if any
	cancel   context.CancelFunc // the request's
	h2       bool               // the server speaks HTTP/2

	mu     sync.Mutex // guards the following
	events []string   // in the order they fired
	wrote  []string   // WroteHeaderField's "key: values"
}

func (h *diffHooks) add(name, detail string) {
	ev := name
	if detail != "" {
		ev += "(" + detail + ")"
	}
	h.mu.Lock()
	h.events = append(h.events, ev)
	fire := h.cancelOn == name
	if fire {
		h.cancelOn = ""
	}
	h.mu.Unlock()
	if fire {
		h.cancel()
	}
}

func diffErrDetail(err error) string {
	if err != nil {
		return "err"
	}
	return ""
}

func (h *diffHooks) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(string) { h.add("GetConn", "") },
		GotConn: func(i httptrace.GotConnInfo) {
			if h.h2 {
				// An HTTP/2 stream leaves its connection (WasIdle) in the goroutine that
				// wrote it, racing the caller's read of the body's end, in both
				// transports (x/net's clientStream.cleanupWriteRequest).
				h.add("GotConn", fmt.Sprintf("reused=%v", i.Reused))
				return
			}
			h.add("GotConn", fmt.Sprintf("reused=%v,idle=%v", i.Reused, i.WasIdle))
		},
		PutIdleConn:          func(err error) { h.add("PutIdleConn", diffErrDetail(err)) },
		GotFirstResponseByte: func() { h.add("GotFirstResponseByte", "") },
		Got100Continue:       func() { h.add("Got100Continue", "") },
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			h.add("Got1xxResponse", fmt.Sprint(code))
			return nil
		},
		DNSStart:          func(httptrace.DNSStartInfo) { h.add("DNSStart", "") },
		DNSDone:           func(i httptrace.DNSDoneInfo) { h.add("DNSDone", diffErrDetail(i.Err)) },
		ConnectStart:      func(string, string) { h.add("ConnectStart", "") },
		ConnectDone:       func(_, _ string, err error) { h.add("ConnectDone", diffErrDetail(err)) },
		TLSHandshakeStart: func() { h.add("TLSHandshakeStart", "") },
		TLSHandshakeDone: func(cs tls.ConnectionState, err error) {
			h.add("TLSHandshakeDone", cs.NegotiatedProtocol+diffErrDetail(err))
		},
		WroteHeaderField: func(k string, vs []string) {
			h.mu.Lock()
			h.wrote = append(h.wrote, fmt.Sprintf("%s: %q", k, vs))
			h.mu.Unlock()
		},
		WroteHeaders:    func() { h.add("WroteHeaders", "") },
		Wait100Continue: func() { h.add("Wait100Continue", "") },
		WroteRequest:    func(i httptrace.WroteRequestInfo) { h.add("WroteRequest", diffErrDetail(i.Err)) },
	}
}

// settle waits, within waitFor, for the hooks that may fire after the caller is done:
// both transports may report the end of a request's write from another goroutine than the
// caller's, after the response has been read. When the exchange succeeded, every request
// that got a connection was written (WroteRequest for each GotConn); else every request
// whose headers were written reports the end of its write.
func (h *diffHooks) settle(ok bool) {
	deadline := time.Now().Add(waitFor)
	for {
		h.mu.Lock()
		var gotConn, headers, requests int
		for _, ev := range h.events {
			switch {
			case strings.HasPrefix(ev, "GotConn"):
				gotConn++
			case ev == "WroteHeaders":
				headers++
			case strings.HasPrefix(ev, "WroteRequest"):
				requests++
			}
		}
		h.mu.Unlock()
		want := headers
		if ok {
			want = gotConn
		}
		if requests >= want || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// snapshot returns the hooks fired, as sorted multisets (the order of hooks fired by
// different goroutines, such as WroteRequest and GotFirstResponseByte, is not defined): the
// dial's (DNS, TCP connect, TLS handshake) and the others; and the header fields written,
// sorted.
func (h *diffHooks) snapshot() (dial, events, wrote string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var d, e []string
	for _, ev := range h.events {
		if strings.HasPrefix(ev, "DNS") || strings.HasPrefix(ev, "Connect") || strings.HasPrefix(ev, "TLSHandshake") {
			d = append(d, ev)
		} else {
			e = append(e, ev)
		}
	}
	slices.Sort(d)
	slices.Sort(e)
	return strings.Join(d, " "), strings.Join(e, " "), strings.Join(slices.Sorted(slices.Values(h.wrote)), "; ")
}

// diffKnownEverywhere holds the undocumented differences that show in nearly every case
// (every new connection, say), each with the exact transformation of net/http's value that
// gives endwell's: a field that differs in any other way fails. When a rule explains no
// difference in a whole run, the test fails: remove the rule then.
var diffKnownEverywhere = []struct {
	proto     string // the protocol it shows on; "" means all
	goRelease string // the Go release it shows on; "" means all
	field     string // a field's name, or its name after "then."
	why       string
	// explains reports whether got is want changed as the difference describes.
	explains func(want, got string) bool
}{}

// diffReport gathers the differences of a run, for the log and the stale-entry check.
type diffReport struct {
	mu        sync.Mutex // guards the following
	rows      []string
	everyUsed map[int]int // diffKnownEverywhere's use, by index
}

func (r *diffReport) add(kind, proto, name, field, want, got, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, fmt.Sprintf("%-10s %-5s %-45s %-18s net/http=%s | endwell=%s | %s", kind, proto, name, field, want, got, why))
}

// diffCompare reports the fields where endwell's observation differs from net/http's.
// A field named in tc.deliberate is not compared (a documented difference); a field in
// tc.knownDiff must differ (an undocumented difference, to be fixed: remove the entry
// then); a field in tc.racy is not compared (timing decides it); a difference explained by
// a diffKnownEverywhere rule is counted, not failed. Keys are as diffSplitKey reads them.
func diffCompare(t *testing.T, proto string, tc *diffCase, want, got []diffField, rep *diffReport) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("observed fields:\n got %v\nwant %v", got, want)
	}
	// lookup returns the entry of m for field that applies here, the most qualified one.
	lookup := func(m map[string]string, field string) (why string, ok bool) {
		best := -1
		for k, v := range m {
			quals, f := diffSplitKey(k)
			if f == field && diffApplies(quals, proto) && len(quals) > best {
				why, ok, best = v, true, len(quals)
			}
		}
		return why, ok
	}
	seen := map[string]bool{}
	for i, w := range want {
		g := got[i]
		if g.name != w.name {
			t.Fatalf("field %d: got %s, want %s", i, g.name, w.name)
		}
		seen[w.name] = true
		if _, racy := lookup(tc.racy, w.name); racy {
			continue
		}
		why, deliberate := lookup(tc.deliberate, w.name)
		known, isKnown := lookup(tc.knownDiff, w.name)
		switch {
		case deliberate:
			if g.value != w.value {
				rep.add("deliberate", proto, tc.name, w.name, w.value, g.value, why)
			}
		case isKnown && g.value == w.value:
			t.Errorf("%s: knownDiff %q no longer differs (both %q): remove the entry", w.name, known, w.value)
		case isKnown:
			rep.add("known", proto, tc.name, w.name, w.value, g.value, known)
		case g.value != w.value:
			if rule := diffEverywhere(proto, w.name, w.value, g.value); rule >= 0 {
				rep.mu.Lock()
				rep.everyUsed[rule]++
				rep.mu.Unlock()
				continue
			}
			rep.add("NEW", proto, tc.name, w.name, w.value, g.value, "")
			t.Errorf("%s:\n got %s\nwant %s (net/http's)", w.name, g.value, w.value)
		}
	}
	for _, m := range []map[string]string{tc.knownDiff, tc.deliberate, tc.racy} {
		for k := range m {
			if quals, field := diffSplitKey(k); diffApplies(quals, proto) && !seen[field] {
				t.Errorf("entry %q names no field of this case", k)
			}
		}
	}
}

// diffGoRelease is the Go release running the test, "go1.26" say: the servers are Go's too,
// and some behaviours (of the server, of net/http's client) changed between releases.
var diffGoRelease = func() string {
	v := runtime.Version()
	if i := strings.IndexByte(v, '.'); i >= 0 {
		if j := strings.IndexAny(v[i+1:], ".-+ "); j >= 0 {
			return v[:i+1+j]
		}
	}
	return v
}()

// diffSplitKey splits an entry's key, "[qualifier:]...field", where each qualifier is a
// protocol ("h1", "h1tls", "h2") or a Go release ("go1.26").
func diffSplitKey(k string) (quals []string, field string) {
	parts := strings.Split(k, ":")
	return parts[:len(parts)-1], parts[len(parts)-1]
}

// diffApplies reports whether every qualifier holds for proto and this Go release.
func diffApplies(quals []string, proto string) bool {
	for _, q := range quals {
		if q != proto && q != diffGoRelease {
			return false
		}
	}
	return true
}

// diffEverywhere returns the index of the diffKnownEverywhere rule that explains the
// difference in field, or -1.
func diffEverywhere(proto, field, want, got string) int {
	field = strings.TrimPrefix(field, "then.")
	for i, r := range diffKnownEverywhere {
		if (r.proto == "" || r.proto == proto) && (r.goRelease == "" || r.goRelease == diffGoRelease) &&
			r.field == field && r.explains(want, got) {
			return i
		}
	}
	return -1
}
