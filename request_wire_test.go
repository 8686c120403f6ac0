package endwell_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// wireCapture is a loopback server that answers each request with an empty 200 and
// records the bytes of each request's line and header block as they came.
type wireCapture struct {
	ln   net.Listener
	reqs chan string
}

func startWireCapture(t *testing.T) *wireCapture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wireCapture{ln: ln, reqs: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return w
}

func (w *wireCapture) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var raw strings.Builder
		line := func() (string, bool) {
			l, err := br.ReadString('\n')
			raw.WriteString(l)
			return l, err == nil
		}
		for {
			l, ok := line()
			if !ok {
				return
			}
			if l == "\r\n" {
				break
			}
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw.String())))
		if err != nil {
			return
		}
		switch {
		case len(req.TransferEncoding) > 0:
			// A chunked body, raw: sizes, data, the last chunk, the trailers, the end.
			for {
				l, ok := line()
				if !ok {
					return
				}
				var n int64
				if _, err := fmt.Sscanf(l, "%x", &n); err != nil {
					return
				}
				if n == 0 {
					break
				}
				if _, err := io.CopyN(&raw, br, n+2); err != nil {
					return
				}
			}
			for {
				l, ok := line()
				if !ok {
					return
				}
				if l == "\r\n" {
					break
				}
			}
		case req.ContentLength > 0:
			if _, err := io.CopyN(&raw, br, req.ContentLength); err != nil {
				return
			}
		}
		w.reqs <- raw.String()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); err != nil {
			return
		}
	}
}

// TestRequestBytesAsNetHTTP sends the same requests through net/http's Transport and
// endwell's, over HTTP/1.1, and requires the same bytes on the wire: the request line, the
// fields and their order (Host, User-Agent, the transfer's fields, the caller's sorted,
// then the transport's own), or the same refusal. It covers the Host and URL forms that
// net/http cleans or refuses, so that no caller-supplied Host or URL can split a request.
func TestRequestBytesAsNetHTTP(t *testing.T) {
	srv := startWireCapture(t)
	base := "http://" + srv.ln.Addr().String()
	tests := []struct {
		name     string
		method   string
		body     string // "" means none
		unknown  bool   // the body's length is unknown (chunked)
		prepare  func(*http.Request)
		noKeep   bool // DisableKeepAlives on both
		viaProxy bool // through an HTTP proxy (the capture server), with credentials
		wantErr  bool // both refuse the request
	}{
		{name: "plain GET"},
		{name: "fields sorted, values trimmed", method: "POST", prepare: func(r *http.Request) {
			r.Header.Set("Zeta", "1")
			r.Header.Set("Alpha", " 2 ")
			r.Header["Multi"] = []string{"b", "a"}
			r.Header.Set("Mid", "x\u00a0") // a UTF-8 NBSP is not trimmed
		}},
		{name: "POST without body sends Content-Length 0", method: "POST"},
		{name: "DELETE without body sends none", method: "DELETE"},
		{name: "known length body", method: "PUT", body: "hello"},
		{name: "chunked body with trailers", method: "PUT", body: "hello", unknown: true, prepare: func(r *http.Request) {
			r.Trailer = http.Header{"zz-last": nil, "Aa-First": nil}
		}},
		{name: "trailers sorted and trimmed", method: "POST", body: "hello", unknown: true, prepare: func(r *http.Request) {
			r.Trailer = http.Header{"Zz-Last": {" v2 "}, "Aa-First": {"v1"}}
		}},
		{name: "Transfer-Encoding chunked asked with a length", method: "POST", body: "hello", prepare: func(r *http.Request) {
			r.TransferEncoding = []string{"chunked"}
		}},
		{name: "unknown length GET body probed, sent", body: "hello", unknown: true},
		{name: "unknown length GET body probed, empty", body: "", unknown: true},
		{name: "Request.Close with Connection keep-alive, close", prepare: func(r *http.Request) {
			r.Close = true
			r.Header["Connection"] = []string{"keep-alive", "close"}
		}},
		{name: "Request.Close with Connection keep-alive close", prepare: func(r *http.Request) {
			r.Close = true
			r.Header["Connection"] = []string{"keep-alive close"}
		}},
		{name: "Request.Close", prepare: func(r *http.Request) {
			r.Close = true
			r.Header.Set("B", "1")
		}},
		{name: "DisableKeepAlives", noKeep: true, prepare: func(r *http.Request) { r.Header.Set("B", "1") }},
		{name: "DisableKeepAlives with an Upgrade", noKeep: true, prepare: func(r *http.Request) {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "x-test")
		}},
		{name: "User-Agent trimmed, own Accept-Encoding", prepare: func(r *http.Request) {
			r.Header.Set("User-Agent", "  me/1  ")
			r.Header.Set("Accept-Encoding", "br")
		}},
		{name: "empty User-Agent sends none", prepare: func(r *http.Request) { r.Header["User-Agent"] = []string{""} }},
		{name: "Range asks no gzip", prepare: func(r *http.Request) { r.Header.Set("Range", "bytes=0-1") }},
		{name: "internationalized Host in Punycode", prepare: func(r *http.Request) { r.Host = "bücher.example" }},
		{name: "CR LF in Host is sent as an empty Host", prepare: func(r *http.Request) {
			r.Host = "a.example\r\nX-Injected: 1"
		}},
		{name: "socket path as Host is sent empty", prepare: func(r *http.Request) { r.Host = "/var/run/app.sock" }},
		{name: "IPv6 zone removed", prepare: func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" }},
		{name: "query kept as is", prepare: func(r *http.Request) { r.URL.RawQuery = "a=1&b=%20x" }},
		{name: "CR LF in query refused", wantErr: true, prepare: func(r *http.Request) {
			r.URL.RawQuery = "a=1 HTTP/1.1\r\nX-Injected: 2"
		}},
		{name: "control byte in opaque URL refused", wantErr: true, prepare: func(r *http.Request) { r.URL.Opaque = "/a\x01b" }},
		{name: "through a proxy: absolute form and credentials", viaProxy: true, prepare: func(r *http.Request) {
			r.Header.Set("X-A", "1")
		}},
		{name: "through a proxy: invalid Host refused", viaProxy: true, wantErr: true, prepare: func(r *http.Request) {
			r.Host = "a.example\r\nX-Injected: 3"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := func(rt http.RoundTripper) (string, error) {
				method := tc.method
				if method == "" {
					method = http.MethodGet
				}
				target := base + "/p"
				if tc.viaProxy {
					target = "http://origin.example:8080/p?q=1"
				}
				var body io.Reader
				if tc.body != "" || tc.unknown {
					body = strings.NewReader(tc.body)
					if tc.unknown {
						body = io.MultiReader(body) // hides the length from NewRequest
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, method, target, body)
				if err != nil {
					t.Fatal(err)
				}
				if tc.prepare != nil {
					tc.prepare(req)
				}
				resp, err := rt.RoundTrip(req)
				if err != nil {
					return "", err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				select {
				case got := <-srv.reqs:
					return strings.ReplaceAll(got, srv.ln.Addr().String(), "SERVER"), nil
				case <-ctx.Done():
					t.Fatal("the server saw no request")
					return "", nil
				}
			}
			var proxy func(*http.Request) (*url.URL, error)
			if tc.viaProxy {
				pu, _ := url.Parse("http://user:secret@" + srv.ln.Addr().String())
				proxy = http.ProxyURL(pu)
			}
			std := &http.Transport{Proxy: proxy, DisableKeepAlives: tc.noKeep}
			defer std.CloseIdleConnections()
			ew := &endwell.Transport{Proxy: proxy, DisableKeepAlives: tc.noKeep}
			defer ew.Close()

			want, werr := run(std)
			got, gerr := run(ew)
			if tc.wantErr {
				if werr == nil || gerr == nil {
					t.Fatalf("want both to refuse the request; net/http: %v, endwell: %v (sent %q)", werr, gerr, got)
				}
				return
			}
			if werr != nil || gerr != nil {
				t.Fatalf("net/http: %v; endwell: %v", werr, gerr)
			}
			if got != want {
				t.Errorf("request bytes differ\nnet/http: %q\nendwell:  %q", want, got)
			}
		})
	}
}

// TestIDNDialsPunycode: a URL with an internationalized host name is dialled (and its Host
// sent) in its Punycode form, as net/http does; the name as typed is not a DNS name.
func TestIDNDialsPunycode(t *testing.T) {
	srv := startWireCapture(t)
	_, port, _ := net.SplitHostPort(srv.ln.Addr().String())
	run := func(rt http.RoundTripper, dialed *string) string {
		req, err := http.NewRequest(http.MethodGet, "http://bücher.example:"+port+"/p", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-srv.reqs
	}
	dialer := func(dialed *string) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			*dialed = addr
			var d net.Dialer
			return d.DialContext(ctx, network, srv.ln.Addr().String())
		}
	}
	var stdAddr, ewAddr string
	std := &http.Transport{DialContext: dialer(&stdAddr)}
	defer std.CloseIdleConnections()
	ew := &endwell.Transport{DialContext: dialer(&ewAddr)}
	defer ew.Close()
	want, got := run(std, &stdAddr), run(ew, &ewAddr)
	if stdAddr != "xn--bcher-kva.example:"+port || ewAddr != stdAddr {
		t.Errorf("dialled %q, net/http dialled %q", ewAddr, stdAddr)
	}
	if got != want {
		t.Errorf("request bytes differ\nnet/http: %q\nendwell:  %q", want, got)
	}
}
