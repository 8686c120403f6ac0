package endwell_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// rawProxy is a loopback proxy that reads each CONNECT request, records its
// Proxy-Authorization, and answers with reply.
type rawProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	auths []string
	wg    sync.WaitGroup
}

func startRawProxy(t *testing.T, reply string) *rawProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawProxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitFor))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				p.mu.Lock()
				p.auths = append(p.auths, req.Header.Get("Proxy-Authorization"))
				p.mu.Unlock()
				io.WriteString(c, reply)
				// Hold the connection until the client is done with it.
				io.Copy(io.Discard, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *rawProxy) seenAuths() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.auths...)
}

// TestProxyConnectAsNetHTTP: the CONNECT exchange behaves as net/http's: the proxy URL's
// credentials win over a Proxy-Authorization in ProxyConnectHeader; OnProxyConnectResponse
// sees the proxy's response with its body unread; and what the proxy answers is bounded
// by MaxResponseHeaderBytes, so a proxy can't make a dial read without end.
func TestProxyConnectAsNetHTTP(t *testing.T) {
	checkLeaks(t)
	const refusal = "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 9\r\n\r\nneed auth"
	huge := "HTTP/1.1 200 OK\r\nX-Filler: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	tests := []struct {
		name       string
		reply      string
		maxHeader  int64
		wantAuth   string // the Proxy-Authorization the proxy must see
		wantBody   string // what OnProxyConnectResponse read of the body
		wantErrSub string // the error must say this
	}{
		{name: "URL credentials win", reply: refusal, wantAuth: basic("alice", "s3cret"), wantBody: "need auth", wantErrSub: "Proxy Authentication Required"},
		{name: "huge header refused", reply: huge, maxHeader: 4096},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startRawProxy(t, tc.reply)
			pu := &url.URL{Scheme: "http", Host: p.ln.Addr().String(), User: url.UserPassword("alice", "s3cret")}
			var bodies []string
			var mu sync.Mutex
			onResp := func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
				b, err := io.ReadAll(resp.Body)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					bodies = append(bodies, "error: "+err.Error())
				} else {
					bodies = append(bodies, string(b))
				}
				return nil
			}
			hdr := http.Header{"Proxy-Authorization": {"Basic b3RoZXI6b3RoZXI="}}
			std := &http.Transport{Proxy: http.ProxyURL(pu), ProxyConnectHeader: hdr,
				OnProxyConnectResponse: onResp, MaxResponseHeaderBytes: tc.maxHeader}
			defer std.CloseIdleConnections()
			ew := newTransport(t, &endwell.Transport{Proxy: http.ProxyURL(pu), ProxyConnectHeader: hdr,
				OnProxyConnectResponse: onResp, MaxResponseHeaderBytes: tc.maxHeader})
			for _, rt := range []http.RoundTripper{std, ew} {
				req := newRequest(t, boundedCtx(t), "GET", "https://origin.example/", nil)
				resp, err := rt.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
					t.Fatalf("%T: got %s, want an error", rt, resp.Status)
				}
				if !strings.Contains(err.Error(), tc.wantErrSub) {
					t.Errorf("%T: error %q, want it to say %q", rt, err, tc.wantErrSub)
				}
			}
			if tc.wantAuth != "" {
				if got := p.seenAuths(); len(got) != 2 || got[0] != tc.wantAuth || got[1] != tc.wantAuth {
					t.Errorf("Proxy-Authorization seen (net/http, endwell): %q, want %q twice", got, tc.wantAuth)
				}
			}
			if tc.wantBody != "" {
				if len(bodies) != 2 || bodies[0] != tc.wantBody || bodies[1] != tc.wantBody {
					t.Errorf("OnProxyConnectResponse read (net/http, endwell): %q, want %q twice", bodies, tc.wantBody)
				}
			} else if len(bodies) != 0 {
				t.Errorf("OnProxyConnectResponse called with %q, want no call", bodies)
			}
		})
	}
}

// TestNegativeMaxIdleConnsPerHost: MaxIdleConnsPerHost -1 keeps no HTTP/1.1 connection
// idle, as net/http (a common way to turn pooling off): every request has a connection of
// its own, which closes gracefully after the response, and no Connection: close is sent.
func TestNegativeMaxIdleConnsPerHost(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var closeHeaders int
	ended := make(chan struct{}, 8)
	srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
		defer func() { ended <- struct{}{} }()
		for {
			c.SetDeadline(time.Now().Add(waitFor))
			req, _, err := r.readRequest()
			if err != nil {
				return // the client's close: EOF
			}
			if req.Close {
				mu.Lock()
				closeHeaders++
				mu.Unlock()
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, rt := range []http.RoundTripper{
		&http.Transport{MaxIdleConnsPerHost: -1},
		newTransport(t, &endwell.Transport{MaxIdleConnsPerHost: -1}),
	} {
		before := srv.accepts()
		c := &http.Client{Transport: rt}
		for range 3 {
			do(t, c, newRequest(t, nil, "GET", srv.url(), nil))
			select {
			case <-ended: // the server saw the client close the connection
			case <-time.After(waitFor):
				t.Fatalf("%T: the connection was kept open after its response", rt)
			}
		}
		if got := srv.accepts() - before; got != 3 {
			t.Errorf("%T: %d connections for 3 requests, want 3", rt, got)
		}
	}
	if closeHeaders != 0 {
		t.Errorf("requests with Connection: close: %d, want 0", closeHeaders)
	}
}

// TestCloseIdleConnectionsThenIdle: a connection busy when CloseIdleConnections is called
// is closed when it goes idle, unless a request came meanwhile, as with net/http: a
// caller that closes idle connections at its end finds none left open.
func TestCloseIdleConnectionsThenIdle(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	ended := make(chan struct{}, 4)
	srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
		defer func() { ended <- struct{}{} }()
		for {
			c.SetDeadline(time.Now().Add(waitFor))
			if _, _, err := r.readRequest(); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
			select {
			case <-release:
			case <-time.After(waitFor):
			}
			io.WriteString(c, "cd")
		}
	})
	for _, rt := range []interface {
		http.RoundTripper
		CloseIdleConnections()
	}{
		&http.Transport{},
		newTransport(t, &endwell.Transport{}),
	} {
		release = make(chan struct{})
		resp, err := rt.RoundTrip(newRequest(t, boundedCtx(t), "GET", srv.url(), nil))
		if err != nil {
			t.Fatal(err)
		}
		rt.CloseIdleConnections() // the connection is busy: the body is half read
		close(release)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "abcd" {
			t.Fatalf("%T: body %q, %v", rt, b, err)
		}
		select {
		case <-ended:
		case <-time.After(waitFor):
			t.Fatalf("%T: the connection busy at CloseIdleConnections was kept idle", rt)
		}
	}
}

// TestCloneDropsRegisteredProtocols: as net/http's Clone, endwell's does not carry over
// the protocols RegisterProtocol registered.
func TestCloneDropsRegisteredProtocols(t *testing.T) {
	var called bool
	rt := roundTripFunc(func(*http.Request) (*http.Response, error) {
		called = true
		return nil, errors.New("custom")
	})
	tr := &endwell.Transport{}
	defer tr.Close()
	tr.RegisterProtocol("foo", rt)
	clone := tr.Clone()
	defer clone.Close()
	req, _ := http.NewRequest("GET", "foo://x/", nil)
	if _, err := clone.RoundTrip(req); err == nil || called {
		t.Errorf("clone: foo:// went to the original's RoundTripper (err %v)", err)
	}
	if _, err := tr.RoundTrip(req); err == nil || !called {
		t.Errorf("original: foo:// did not go to its RoundTripper (err %v)", err)
	}
}

// TestHTTPSProxyDialTLSContext: an https:// proxy is dialled with DialTLSContext when it is
// set, as net/http does (a client certificate or pinning done there applies to the proxy
// hop too), and the request reaches the server through the tunnel; the connection still
// ends gracefully, server and proxy hop alike.
func TestHTTPSProxyDialTLSContext(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true})
	p := startProxyTLS(t, 0, true)
	cfg := s.ClientTLSConfig()
	cfg.RootCAs.AddCert(p.srv.Certificate())
	proxyHost := p.url(nil).Host
	for _, mk := range []func(dial func(context.Context, string, string) (net.Conn, error)) http.RoundTripper{
		func(dial func(context.Context, string, string) (net.Conn, error)) http.RoundTripper {
			return &http.Transport{Proxy: http.ProxyURL(p.url(nil)), TLSClientConfig: cfg, DialTLSContext: dial}
		},
		func(dial func(context.Context, string, string) (net.Conn, error)) http.RoundTripper {
			return newTransport(t, &endwell.Transport{Proxy: http.ProxyURL(p.url(nil)), TLSClientConfig: cfg, DialTLSContext: dial})
		},
	} {
		var mu sync.Mutex
		var dialled []string
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, addr)
			mu.Unlock()
			var d tls.Dialer
			d.Config = cfg.Clone()
			d.Config.ServerName = "127.0.0.1"
			return d.DialContext(ctx, network, addr)
		}
		rt := mk(dial)
		resp, err := rt.RoundTrip(newRequest(t, boundedCtx(t), "GET", s.URL()+"/", nil))
		if err != nil {
			t.Fatalf("%T: %v", rt, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if len(dialled) != 1 || dialled[0] != proxyHost {
			t.Errorf("%T: DialTLSContext dialled %q, want the proxy %q once", rt, dialled, proxyHost)
		}
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
	wantWitnessEnds(t, s, 2, gracefulEnding(true))
}
