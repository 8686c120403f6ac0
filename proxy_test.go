package endwell_test

import (
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// testProxy is an in-process HTTP proxy: it forwards absolute-form http:// requests and
// tunnels CONNECT requests, and records what it was asked.
type testProxy struct {
	srv      *httptest.Server
	fwd      *http.Transport
	refuse   int            // if not zero, the status CONNECT requests get
	wg       sync.WaitGroup // the tunnels' pumps; Go is called under mu, before closed
	mu       sync.Mutex     // guards the following
	requests []proxySeen    // every request received, in order
	tunnels  []net.Conn     // hijacked and dialled connections, closed at the end
	closed   bool           // the cleanup has begun: a tunnel hijacked now is closed at once
}

// proxySeen is what the proxy saw of one request.
type proxySeen struct {
	method, uri, host string
	header            http.Header
}

func startProxy(t *testing.T, refuse int) *testProxy {
	return startProxyTLS(t, refuse, false)
}

// startProxyTLS starts the proxy, speaking TLS to its clients if withTLS (an https://
// proxy, whose certificate is p.srv.Certificate()).
func startProxyTLS(t *testing.T, refuse int, withTLS bool) *testProxy {
	t.Helper()
	p := &testProxy{fwd: &http.Transport{}, refuse: refuse}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if withTLS {
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(func() {
		p.srv.Close()
		p.fwd.CloseIdleConnections()
		p.mu.Lock()
		p.closed = true
		for _, c := range p.tunnels {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// url returns the proxy's URL, with userinfo if user is not nil.
func (p *testProxy) url(user *url.Userinfo) *url.URL {
	u, _ := url.Parse(p.srv.URL)
	u.User = user
	return u
}

func (p *testProxy) seen() []proxySeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxySeen(nil), p.requests...)
}

func (p *testProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests = append(p.requests, proxySeen{r.Method, r.RequestURI, r.Host, r.Header.Clone()})
	p.mu.Unlock()
	if r.Method != http.MethodConnect {
		out := r.Clone(r.Context())
		out.RequestURI = ""
		out.Header.Del("Proxy-Authorization")
		resp, err := p.fwd.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		return
	}
	if p.refuse != 0 {
		w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
		w.WriteHeader(p.refuse)
		return
	}
	up, err := net.Dial("tcp", r.Host)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		// A CONNECT that raced the cleanup (its handler is not waited for once hijacked):
		// the pumps' WaitGroup may no longer grow.
		c.Close()
		up.Close()
		return
	}
	p.tunnels = append(p.tunnels, c, up)
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	// The tunnel's two pumps: each exits when its source ends, and passes the end on. They
	// copy through plain readers and writers: splice(2) would cache pipes, which the file
	// descriptor checks would take for leaks.
	p.wg.Go(func() {
		io.Copy(struct{ io.Writer }{up}, struct{ io.Reader }{c})
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	})
	p.wg.Go(func() {
		io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{up})
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	})
}

func TestProxyHTTP(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, "via proxy")
		return witness.KeepAlive
	}})
	p := startProxy(t, 0)
	tr := newTransport(t, &endwell.Transport{Proxy: http.ProxyURL(p.url(url.UserPassword("user", "pass")))})
	c := &http.Client{Transport: tr}
	for range 2 {
		_, body := do(t, c, newRequest(t, nil, "GET", s.URL()+"/path?q=1", nil))
		if got, want := body, "via proxy"; got != want {
			t.Errorf("body: got %q, want %q", got, want)
		}
	}
	seen := p.seen()
	if got, want := len(seen), 2; got != want {
		t.Fatalf("requests at the proxy: got %v, want %v", got, want)
	}
	for _, r := range seen {
		if got, want := r.method+" "+r.uri, "GET "+s.URL()+"/path?q=1"; got != want {
			t.Errorf("request line at the proxy: got %q, want %q", got, want)
		}
		if got, want := r.header.Get("Proxy-Authorization"), basic("user", "pass"); got != want {
			t.Errorf("Proxy-Authorization: got %q, want %q", got, want)
		}
	}
}

func TestProxyConnect(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, "tunnelled")
		return witness.KeepAlive
	}})
	p := startProxy(t, 0)
	tr := newTransport(t, &endwell.Transport{
		Proxy:              http.ProxyURL(p.url(url.UserPassword("user", "pass"))),
		ProxyConnectHeader: http.Header{"X-Proxy-Test": {"yes"}},
		TLSClientConfig:    s.ClientTLSConfig(),
	})
	c := &http.Client{Transport: tr}
	for range 2 {
		resp, body := do(t, c, newRequest(t, nil, "GET", s.URL()+"/secret", nil))
		if got, want := body, "tunnelled"; got != want {
			t.Errorf("body: got %q, want %q", got, want)
		}
		if resp.TLS == nil {
			t.Errorf("resp.TLS: got nil, want the tunnelled TLS session")
		}
	}
	seen := p.seen()
	if got, want := len(seen), 1; got != want {
		t.Fatalf("requests at the proxy (one tunnel, reused): got %v, want %v", got, want)
	}
	r := seen[0]
	if got, want := r.method+" "+r.host, "CONNECT "+s.Addr(); got != want {
		t.Errorf("CONNECT request: got %q, want %q", got, want)
	}
	if got, want := r.header.Get("X-Proxy-Test"), "yes"; got != want {
		t.Errorf("ProxyConnectHeader X-Proxy-Test: got %q, want %q", got, want)
	}
	if got, want := r.header.Get("Proxy-Authorization"), basic("user", "pass"); got != want {
		t.Errorf("Proxy-Authorization: got %q, want %q", got, want)
	}
	reps := s.Reports()
	if got, want := len(reps), 1; got != want {
		t.Fatalf("server connections: got %v, want %v", got, want)
	}
	if got, want := reps[0].Requests, 2; got != want {
		t.Errorf("requests through the tunnel: got %v, want %v", got, want)
	}
	// The tunnel ends as well as a direct connection: close_notify, then FIN.
	tr.CloseIdleConnections()
	wantWitnessEnds(t, s, 1, gracefulEnding(true))
}

// An https:// proxy: TLS to the proxy, and the server's TLS inside the tunnel. The teardown
// stack has both sessions: a graceful end says goodbye in each, the server sees its
// close_notify then FIN; an abort says none.
func TestProxyConnectOverTLS(t *testing.T) {
	tests := []struct {
		name  string
		abort bool
	}{
		{"graceful", false},
		{"abort", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.Respond(http.StatusOK, nil, strings.Repeat("x", 1<<20))
				return witness.KeepAlive
			}})
			p := startProxyTLS(t, 0, true)
			cfg := s.ClientTLSConfig()
			cfg.RootCAs.AddCert(p.srv.Certificate()) // the pool is the witness's copy
			tr := newTransport(t, &endwell.Transport{
				Proxy:           http.ProxyURL(p.url(nil)),
				TLSClientConfig: cfg,
				MaxDrainBytes:   -1, // an early close aborts at once
			})
			req := newRequest(t, nil, "GET", s.URL()+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].Equal(p.srv.Certificate()) {
				t.Errorf("resp.TLS: got %+v, want the server's session through the tunnel, not the proxy's", resp.TLS)
			}
			if tt.abort {
				resp.Body.Close()
				reps, err := s.WaitConns(boundedCtx(t), 1)
				if err != nil {
					t.Fatal(err)
				}
				if r := reps[0]; r.CloseNotifyReceived || r.ClientEnd == witness.EndOpen {
					t.Errorf("server saw %q, want FIN or RST without close_notify", r.ClientEnding())
				}
				return
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := p.seen(); len(got) != 1 || got[0].method != http.MethodConnect {
				t.Errorf("proxy saw %+v, want one CONNECT", got)
			}
			tr.CloseIdleConnections()
			wantWitnessEnds(t, s, 1, gracefulEnding(true))
		})
	}
}

func TestProxyConnectRefused(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true})
	p := startProxy(t, http.StatusProxyAuthRequired)
	tr := newTransport(t, &endwell.Transport{
		Proxy:           http.ProxyURL(p.url(nil)),
		TLSClientConfig: s.ClientTLSConfig(),
	})
	_, err := tr.RoundTrip(newRequest(t, boundedCtx(t), "GET", s.URL()+"/", nil))
	if err == nil {
		t.Fatal("RoundTrip: got nil error, want the proxy's refusal")
	}
	var pe *endwell.ProxyConnectError
	if !errors.As(err, &pe) {
		t.Fatalf("error: got %T %v, want *endwell.ProxyConnectError", err, err)
	}
	if got, want := pe.StatusCode, http.StatusProxyAuthRequired; got != want {
		t.Errorf("StatusCode: got %v, want %v", got, want)
	}
	var de *endwell.DialError
	if !errors.As(err, &de) {
		t.Fatalf("error: got %T %v, want *endwell.DialError", err, err)
	}
	if got, want := de.Op, "proxy"; got != want {
		t.Errorf("DialError.Op: got %q, want %q", got, want)
	}
	if !errors.Is(err, endwell.ErrNotSent) {
		t.Errorf("errors.Is(%v, ErrNotSent): got false, want true", err)
	}
	if got, want := len(s.Reports()), 0; got != want {
		t.Errorf("server connections: got %v, want %v", got, want)
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestProxyConnectSilentBounded: a proxy that takes the CONNECT and never answers holds
// the dial for a minute, as net/http's does, not for ever: then the request fails with a
// timeout, and the socket to the proxy is closed.
func TestProxyConnectSilentBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gotMethod string
		fn := &fakeNet{respond: func(w io.Writer, r *http.Request) { gotMethod = r.Method }}
		tr := &endwell.Transport{
			DialContext: fn.dial,
			Proxy:       http.ProxyURL(&url.URL{Scheme: "http", Host: "proxy.test:3128"}),
		}
		defer tr.Close()
		req, _ := http.NewRequest("GET", "https://origin.test/", nil)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatal("RoundTrip through a silent proxy: got a response, want an error")
		}
		if got := time.Since(start); got != time.Minute {
			t.Errorf("RoundTrip failed after %v, want 1m0s", got)
		}
		var de *endwell.DialError
		var ne net.Error
		if !errors.As(err, &de) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("err: got %v (%T), want a DialError that is a timeout", err, err)
		}
		synctest.Wait()
		if fn.dialCount() != 1 {
			t.Fatalf("dials: %d, want 1", fn.dialCount())
		}
		sc := fn.ends[0]
		select {
		case <-sc.done:
		default:
			t.Error("the connection to the proxy is still open")
		}
		if gotMethod != http.MethodConnect {
			t.Errorf("the proxy saw %q, want CONNECT", gotMethod)
		}
	})
}

// TestProxyConnectHTTP2: HTTP/2 through a CONNECT tunnel. Concurrent requests share one
// tunnel and one HTTP/2 connection; CloseIdleConnections ends it gracefully through the
// tunnel.
func TestProxyConnectHTTP2(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p := startProxy(t, 0)
	tr := newTransport(t, &endwell.Transport{
		Proxy:           http.ProxyURL(p.url(nil)),
		TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig,
	})
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, body := do(t, c, newRequest(t, nil, "GET", srv.URL+"/", nil))
			if resp.ProtoMajor != 2 || body != "HTTP/2.0" {
				t.Errorf("got %s, server saw %q, want HTTP/2.0 both ways", resp.Proto, body)
			}
		})
	}
	wg.Wait()
	if got := len(p.seen()); got != 1 {
		t.Errorf("CONNECTs at the proxy: got %d, want 1 (one tunnel, one HTTP/2 connection)", got)
	}
	tr.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for tr.Stats().Closing > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// net/http's HTTP/2 server closes its socket as soon as it has read our GOAWAY: its
	// close_notify races the reset our own draws (see the CLI's wantH2), so clean or
	// peer_silent; never forced, never failed.
	closes := tr.Stats().Closes
	clean := endwell.CloseKey{Mode: "graceful", Reason: "close_idle", Outcome: "clean"}
	silent := endwell.CloseKey{Mode: "graceful", Reason: "close_idle", Outcome: "peer_silent"}
	if closes[clean]+closes[silent] != 1 || len(closes) != 1 {
		t.Errorf("closes: got %v, want one graceful close_idle, clean or peer_silent", closes)
	}
}
