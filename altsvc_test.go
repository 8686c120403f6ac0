package endwell

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestParseAltSvcH3(t *testing.T) {
	tests := []struct {
		name      string
		values    []string
		authority string
		maxAge    time.Duration
		clear, ok bool
	}{
		{"same host", []string{`h3=":443"`}, "origin.test:443", 24 * time.Hour, false, true},
		{"other host, ma", []string{`h3="alt.test:8443"; ma=3600`}, "alt.test:8443", time.Hour, false, true},
		{"h3 after others", []string{`h2=":443", h3-29=":443"; ma=60, h3=":4433"; ma=120; persist=1`}, "origin.test:4433", 2 * time.Minute, false, true},
		{"second field value", []string{`h2=":443"`, `h3=":443"`}, "origin.test:443", 24 * time.Hour, false, true},
		{"clear", []string{`clear`}, "", 0, true, false},
		{"no h3", []string{`h2=":443"`}, "", 0, false, false},
		{"unquoted authority", []string{`h3=:443`}, "", 0, false, false},
		{"bad port", []string{`h3=":99999"`}, "", 0, false, false},
		{"comma inside quotes", []string{`x="a,b", h3=":443"`}, "origin.test:443", 24 * time.Hour, false, true},
		{"IPv6 alternative", []string{`h3="[::1]:443"`}, "[::1]:443", 24 * time.Hour, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			authority, maxAge, clear, ok := parseAltSvcH3(tc.values, "origin.test")
			if authority != tc.authority || maxAge != tc.maxAge || clear != tc.clear || ok != tc.ok {
				t.Errorf("got (%q, %v, clear %v, ok %v), want (%q, %v, clear %v, ok %v)",
					authority, maxAge, clear, ok, tc.authority, tc.maxAge, tc.clear, tc.ok)
			}
		})
	}
}

// altSvcServer starts an https server speaking HTTP/1.1 and HTTP/2 over TCP whose
// responses advertise altSvc in Alt-Svc (if not empty).
func altSvcServer(t *testing.T, altSvc func() string) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := altSvc(); v != "" {
			w.Header().Set("Alt-Svc", v)
		}
		io.WriteString(w, "hello "+r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = h2TestCert(t).server.Clone()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// getProto runs a GET and returns the protocol it went over, failing the test on error.
func getProto(t *testing.T, tr *Transport, url string) string {
	t.Helper()
	start := time.Now()
	resp, err := tr.RoundTrip(mustGet(t, url))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "hello "+resp.Proto {
		t.Fatalf("GET %s: body %q, %v", url, b, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("GET %s over %s took %v: a request waited", url, resp.Proto, d)
	}
	return resp.Proto
}

// TestAltSvcUpgradesToHTTP3: an origin advertising h3 in Alt-Svc is dialled over QUIC in
// the background; its requests go over TCP until the QUIC connection is up, then over
// HTTP/3, none failing; "clear" sends them back to TCP.
func TestAltSvcUpgradesToHTTP3(t *testing.T) {
	h2CheckLeaks(t)
	h3s := startH3Server(t)
	_, h3port, _ := net.SplitHostPort(h3s.udp.LocalAddr().String())
	advert := fmt.Sprintf(`h3=":%s"; ma=60`, h3port)
	srv := altSvcServer(t, func() string { return advert })
	tr, _ := h2Transport(t, &Transport{HTTP3: &HTTP3Config{}})

	if p := getProto(t, tr, srv.URL); p != "HTTP/2.0" {
		t.Fatalf("first request: got %s, want HTTP/2.0 (no alternative known yet)", p)
	}
	var protos []string
	for i := 0; i < 200 && (len(protos) == 0 || protos[len(protos)-1] != "HTTP/3.0"); i++ {
		protos = append(protos, getProto(t, tr, srv.URL))
		time.Sleep(5 * time.Millisecond)
	}
	if protos[len(protos)-1] != "HTTP/3.0" {
		t.Fatalf("requests never went over HTTP/3: %v", protos)
	}
	for range 3 {
		if p := getProto(t, tr, srv.URL); p != "HTTP/3.0" {
			t.Errorf("after the upgrade: got %s, want HTTP/3.0", p)
		}
	}
	if n := h3s.numConns(); n != 1 {
		t.Errorf("QUIC connections: got %d, want 1", n)
	}
}

// TestAltSvcFallback: an alternative where nothing answers QUIC (a closed port, a silent
// one) costs no request anything: they all go over TCP without delay, and the alternative
// is marked broken once its background dial failed.
func TestAltSvcFallback(t *testing.T) {
	for _, kind := range []string{"closed port", "silent port"} {
		t.Run(kind, func(t *testing.T) {
			h2CheckLeaks(t)
			udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(udp.LocalAddr().String())
			if kind == "closed port" {
				udp.Close()
			} else {
				t.Cleanup(func() { udp.Close() })
				// The silent peer: it reads and drops every datagram until closed.
				go func() {
					buf := make([]byte, 2048)
					for {
						if _, _, err := udp.ReadFrom(buf); err != nil {
							return
						}
					}
				}()
			}
			srv := altSvcServer(t, func() string { return fmt.Sprintf(`h3=":%s"`, port) })
			tr, _ := h2Transport(t, &Transport{HTTP3: &HTTP3Config{}, TLSHandshakeTimeout: 300 * time.Millisecond})
			origin := strings.TrimPrefix(srv.URL, "https://")
			deadline := time.Now().Add(h2Wait)
			for {
				if p := getProto(t, tr, srv.URL); p != "HTTP/2.0" {
					t.Fatalf("got %s, want HTTP/2.0", p)
				}
				tr.alts.mu.Lock()
				alt := tr.alts.m[origin]
				broken := alt != nil && time.Now().Before(alt.brokenUntil)
				tr.alts.mu.Unlock()
				if broken {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the alternative was not marked broken within %v", h2Wait)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if p := getProto(t, tr, srv.URL); p != "HTTP/2.0" {
				t.Errorf("after the failure: got %s, want HTTP/2.0", p)
			}
		})
	}
}

// TestAltSvcClear: "clear" forgets the origin's alternative.
func TestAltSvcClear(t *testing.T) {
	var tr Transport
	tr.HTTP3 = &HTTP3Config{}
	tg := poolKey{scheme: "https", addr: "origin.test:443", host: "origin.test"}
	tr.alts.learn(&tr, tg, http.Header{"Alt-Svc": {`h3=":443"`}})
	if tr.alts.m[tg.addr] == nil {
		t.Fatal("the alternative was not learnt")
	}
	tr.alts.learn(&tr, tg, http.Header{"Alt-Svc": {`clear`}})
	if tr.alts.m[tg.addr] != nil {
		t.Error("clear did not forget the alternative")
	}
}
