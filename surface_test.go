package endwell_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// TestSurfaceMatchesNetHTTP: every exported field and method of net/http's Transport (of the
// Go release running the test) exists on endwell's with the same type, so that code written
// for *http.Transport compiles with *endwell.Transport.
func TestSurfaceMatchesNetHTTP(t *testing.T) {
	nt, et := reflect.TypeFor[http.Transport](), reflect.TypeFor[endwell.Transport]()
	for f := range nt.Fields() {
		if !f.IsExported() {
			continue
		}
		g, ok := et.FieldByName(f.Name)
		if !ok {
			t.Errorf("field %s %v: missing", f.Name, f.Type)
			continue
		}
		if g.Type != f.Type {
			t.Errorf("field %s: got type %v, want %v", f.Name, g.Type, f.Type)
		}
	}
	npt, ept := reflect.PointerTo(nt), reflect.PointerTo(et)
	for m := range npt.Methods() {
		g, ok := ept.MethodByName(m.Name)
		if !ok {
			t.Errorf("method %s%v: missing", m.Name, m.Type)
			continue
		}
		// The receivers differ; compare the rest. Clone returns its receiver's type.
		want := strings.ReplaceAll(funcSig(m.Type), "*http.Transport", "*endwell.Transport")
		if got := funcSig(g.Type); got != want {
			t.Errorf("method %s: got %s, want %s", m.Name, got, want)
		}
	}
}

func funcSig(ft reflect.Type) string {
	var b strings.Builder
	b.WriteString("(")
	for i := 1; i < ft.NumIn(); i++ {
		b.WriteString(ft.In(i).String() + ",")
	}
	b.WriteString(")(")
	for i := 0; i < ft.NumOut(); i++ {
		b.WriteString(ft.Out(i).String() + ",")
	}
	return b.String() + ")"
}

// TestCloneCopiesEveryField: Clone copies every exported field (each set to a value that is
// not its zero), deeply for the TLS configuration, Protocols, HTTP2, the header and the map.
func TestCloneCopiesEveryField(t *testing.T) {
	var orig endwell.Transport
	v := reflect.ValueOf(&orig).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Bool:
			fv.SetBool(true)
		case reflect.Int, reflect.Int64:
			fv.SetInt(int64(i + 1))
		case reflect.Func:
			fv.Set(reflect.MakeFunc(fv.Type(), func([]reflect.Value) []reflect.Value { panic("not called") }))
		case reflect.Map:
			fv.Set(reflect.MakeMap(fv.Type()))
			fv.SetMapIndex(reflect.ValueOf("x/1"), reflect.Zero(fv.Type().Elem()))
		case reflect.Pointer:
			fv.Set(reflect.New(fv.Type().Elem()))
		case reflect.Interface:
			// The providers: the otel no-op ones stand in.
		default:
			t.Fatalf("field %s: kind %v not covered by this test", f.Name, fv.Kind())
		}
	}
	orig.ProxyConnectHeader = http.Header{"A": {"b"}}
	orig.TLSClientConfig = &tls.Config{ServerName: "example.test"}
	c := orig.Clone()
	cv := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Type.Kind() == reflect.Interface {
			continue
		}
		a, b := v.Field(i), cv.Field(i)
		switch a.Kind() {
		case reflect.Func:
			if a.Pointer() != b.Pointer() {
				t.Errorf("%s: not copied", f.Name)
			}
		case reflect.Pointer, reflect.Map:
			if b.IsNil() {
				t.Errorf("%s: not copied", f.Name)
			} else if a.Pointer() == b.Pointer() {
				t.Errorf("%s: shared with the original, want a deep copy", f.Name)
			}
		default:
			if !a.Equal(b) {
				t.Errorf("%s: got %v, want %v", f.Name, b, a)
			}
		}
	}
	if c.TLSClientConfig.ServerName != "example.test" || c.ProxyConnectHeader.Get("A") != "b" {
		t.Errorf("deep copies lost their contents")
	}
}

// TestRegisterProtocol: a registered scheme's requests go to its RoundTripper; one that
// returns ErrSkipAltProtocol hands the request back; registering twice panics.
func TestRegisterProtocol(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "real") }))
	t.Cleanup(srv.Close)
	tr := newTransport(t, &endwell.Transport{})
	tr.RegisterProtocol("file", roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("file " + r.URL.Path)), Request: r}, nil
	}))
	var skipped atomic.Int32
	tr.RegisterProtocol("http", roundTripFunc(func(r *http.Request) (*http.Response, error) {
		skipped.Add(1)
		return nil, http.ErrSkipAltProtocol
	}))
	c := &http.Client{Transport: tr}
	_, body := do(t, c, newRequest(t, nil, "GET", "file:///etc/motd", nil))
	if body != "file /etc/motd" {
		t.Errorf("file: got %q", body)
	}
	_, body = do(t, c, newRequest(t, nil, "GET", srv.URL, nil))
	if body != "real" || skipped.Load() != 1 {
		t.Errorf("skipped alternative: got %q after %d skips, want \"real\" after 1", body, skipped.Load())
	}
	defer func() {
		if recover() == nil {
			t.Errorf("registering file twice did not panic")
		}
	}()
	tr.RegisterProtocol("file", roundTripFunc(nil))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDialTLSContext: a DialTLSContext that dials and hands back a *tls.Conn (its handshake
// not done) is used for https://, DialContext is not; the connection speaks what the
// server chose in ALPN and still ends as endwell ends connections: close_notify then FIN
// on a graceful close. The deprecated Dial is used when DialContext is nil.
func TestDialTLSContext(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, r.Proto)
		return witness.KeepAlive
	}})
	var tlsDials, plainDials atomic.Int32
	tr := newTransport(t, &endwell.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			plainDials.Add(1)
			return nil, errors.New("DialContext must not be used for https with DialTLSContext")
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			tlsDials.Add(1)
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := s.ClientTLSConfig().Clone()
			cfg.NextProtos = []string{"http/1.1"}
			return tls.Client(c, cfg), nil
		},
	})
	c := &http.Client{Transport: tr}
	for range 2 {
		resp, body := do(t, c, newRequest(t, nil, "GET", s.URL()+"/", nil))
		if body != "HTTP/1.1" || resp.TLS == nil {
			t.Errorf("got %q (TLS %v), want HTTP/1.1 over TLS", body, resp.TLS != nil)
		}
	}
	if tlsDials.Load() != 1 || plainDials.Load() != 0 {
		t.Errorf("dials: DialTLSContext %d, DialContext %d; want 1 and 0", tlsDials.Load(), plainDials.Load())
	}
	tr.CloseIdleConnections()
	wantWitnessEnds(t, s, 1, gracefulEnding(true))

	// The deprecated Dial, for http://.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(plain.Close)
	var dials atomic.Int32
	tr2 := newTransport(t, &endwell.Transport{Dial: func(network, addr string) (net.Conn, error) {
		dials.Add(1)
		return net.DialTimeout(network, addr, 5*time.Second)
	}})
	do(t, &http.Client{Transport: tr2}, newRequest(t, nil, "GET", plain.URL, nil))
	if dials.Load() != 1 {
		t.Errorf("Dial calls: got %d, want 1", dials.Load())
	}
}

// TestProxyConnectHooks: GetProxyConnectHeader replaces ProxyConnectHeader for the CONNECT
// request; OnProxyConnectResponse sees the proxy's answer, and its error fails the request.
func TestProxyConnectHooks(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, "tunnelled")
		return witness.KeepAlive
	}})
	p := startProxy(t, 0)
	var gotTarget string
	var gotStatus int
	refuse := false
	tr := newTransport(t, &endwell.Transport{
		Proxy:              http.ProxyURL(p.url(nil)),
		ProxyConnectHeader: http.Header{"X-Static": {"ignored"}},
		GetProxyConnectHeader: func(ctx context.Context, proxyURL *url.URL, target string) (http.Header, error) {
			gotTarget = target
			return http.Header{"X-Dynamic": {"yes"}}, nil
		},
		OnProxyConnectResponse: func(ctx context.Context, proxyURL *url.URL, req *http.Request, resp *http.Response) error {
			gotStatus = resp.StatusCode
			if refuse {
				return errors.New("hook says no")
			}
			return nil
		},
		TLSClientConfig: s.ClientTLSConfig(),
	})
	c := &http.Client{Transport: tr}
	do(t, c, newRequest(t, nil, "GET", s.URL()+"/", nil))
	seen := p.seen()
	if len(seen) != 1 {
		t.Fatalf("proxy requests: got %d, want 1", len(seen))
	}
	if h := seen[0].header; h.Get("X-Dynamic") != "yes" || h.Get("X-Static") != "" {
		t.Errorf("CONNECT headers: got %v, want X-Dynamic and not X-Static", h)
	}
	if gotTarget != s.Addr() || gotStatus != http.StatusOK {
		t.Errorf("hooks saw target %q, status %d; want %q, 200", gotTarget, gotStatus, s.Addr())
	}
	tr.CloseIdleConnections()
	refuse = true
	_, err := c.Get(s.URL() + "/again")
	if err == nil || !strings.Contains(err.Error(), "hook says no") {
		t.Errorf("got %v, want the hook's error", err)
	}
}

// TestTLSNextProtoEmptyDisablesHTTP2: a non-nil empty TLSNextProto turns HTTP/2 off, as in
// net/http, against a server that prefers h2.
func TestTLSNextProtoEmptyDisablesHTTP2(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name string
		next map[string]func(string, *tls.Conn) http.RoundTripper
		want string
	}{
		{"nil", nil, "HTTP/2.0"},
		{"empty", map[string]func(string, *tls.Conn) http.RoundTripper{}, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTransport(t, &endwell.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig, TLSNextProto: tc.next})
			_, body := do(t, &http.Client{Transport: tr}, newRequest(t, nil, "GET", srv.URL, nil))
			if body != tc.want {
				t.Errorf("got %s, want %s", body, tc.want)
			}
		})
	}
}
