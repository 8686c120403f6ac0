package endwell

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	socks5 "github.com/armon/go-socks5"
	"github.com/endwell/endwell/internal/testpeer"
	"github.com/endwell/endwell/shutdown"
)

// socksServer is a SOCKS5 proxy on loopback, from a library made for it (armon/go-socks5),
// that resolves the names it is asked for itself (every name to 127.0.0.1) and remembers
// them, and counts its connections.
type socksServer struct {
	srv   *testpeer.Server
	mu    sync.Mutex // guards names
	names []string
}

func newSOCKSServer(t *testing.T, creds socks5.StaticCredentials) *socksServer {
	t.Helper()
	s := &socksServer{}
	conf := &socks5.Config{
		Resolver: s,
		Logger:   log.New(io.Discard, "", 0),
		// Connections of the proxy's are wrapped so that its copies don't splice(2): Go
		// keeps the pipes of splices in a cache that only a GC empties, which the test's
		// check of file descriptors would count.
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return plainConn{c}, nil
		},
	}
	if creds != nil {
		conf.Credentials = creds
	}
	srv, err := socks5.New(conf)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy serves each connection until either side ends it.
	s.srv = testpeer.Serve(t, nil, func(_ int, c net.Conn) { srv.ServeConn(plainConn{c}) })
	return s
}

// Resolve is the proxy's name resolution: it sees the names the client did not resolve.
func (s *socksServer) Resolve(ctx context.Context, name string) (context.Context, net.IP, error) {
	s.mu.Lock()
	s.names = append(s.names, name)
	s.mu.Unlock()
	return ctx, net.IPv4(127, 0, 0, 1), nil
}

func (s *socksServer) resolved() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}

// plainConn hides a TCP connection's ReadFrom and WriteTo (and with them, splice), but
// not its CloseWrite: the proxy passes a FIN on with it.
type plainConn struct{ net.Conn }

func (c plainConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// TestSOCKS5Proxy: http:// and https:// requests through a SOCKS5 proxy (socks5:// and
// socks5h://, with and without credentials) reach their server by name through the proxy,
// share its connection for the next request, and end gracefully through it (close_notify
// for https); wrong credentials fail the request as not sent.
func TestSOCKS5Proxy(t *testing.T) {
	h2CheckLeaks(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Host)
	})
	plain := httptest.NewServer(handler)
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewUnstartedServer(handler)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.TLS = h2TestCert(t).server.Clone()
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)

	creds := socks5.StaticCredentials{"alice": "s3cret"}
	open := newSOCKSServer(t, nil)
	locked := newSOCKSServer(t, creds)

	port := func(u string) string { return u[strings.LastIndex(u, ":")+1:] }
	cases := []struct {
		name      string
		proxy     string
		server    string // the URL's scheme and port, by name
		wantProto string
		wantErr   bool
		srv       *socksServer
	}{
		{"http via socks5", "socks5://" + open.srv.Addr(), "http://target.test:" + port(plain.URL), "HTTP/1.1", false, open},
		{"https via socks5h, h2", "socks5h://" + open.srv.Addr(), "https://target.test:" + port(tlsSrv.URL), "HTTP/2.0", false, open},
		{"http with credentials", "socks5://alice:s3cret@" + locked.srv.Addr(), "http://target.test:" + port(plain.URL), "HTTP/1.1", false, locked},
		{"https with credentials", "socks5://alice:s3cret@" + locked.srv.Addr(), "https://target.test:" + port(tlsSrv.URL), "HTTP/2.0", false, locked},
		{"wrong credentials", "socks5://alice:wrong@" + locked.srv.Addr(), "http://target.test:" + port(plain.URL), "", true, locked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pu, err := url.Parse(tc.proxy)
			if err != nil {
				t.Fatal(err)
			}
			cfg := h2TestCert(t).client.Clone()
			cfg.ServerName = "127.0.0.1" // the test certificate's name; the URL says target.test
			tr, recs := h2Transport(t, &Transport{Proxy: http.ProxyURL(pu)})
			tr.TLSClientConfig = cfg
			before := tc.srv.srv.Accepts()
			namesBefore := len(tc.srv.resolved())
			for i := 0; i < 2; i++ {
				resp, err := tr.RoundTrip(mustGet(t, tc.server+"/"))
				if tc.wantErr {
					if err == nil {
						resp.Body.Close()
						t.Fatal("request with wrong proxy credentials succeeded")
					}
					if !NotSent(err) {
						t.Errorf("NotSent(%v): got false, want true", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := tc.wantProto + " target.test:" + port(tc.server); string(b) != want {
					t.Errorf("server saw %q, want %q", b, want)
				}
			}
			if n := tc.srv.srv.Accepts() - before; n != 1 {
				t.Errorf("proxy connections: got %d, want 1 for two requests", n)
			}
			if names := tc.srv.resolved()[namesBefore:]; len(names) != 1 || names[0] != "target.test" {
				t.Errorf("names the proxy resolved: got %q, want [target.test]", names)
			}
			tr.CloseIdleConnections()
			r := recs.next(t)
			if r.Mode != shutdown.Graceful || r.Reason != reasonCloseIdle {
				t.Errorf("teardown: got %v %s, want graceful close_idle", r.Mode, r.Reason)
			}
			if https := strings.HasPrefix(tc.server, "https"); r.CloseNotifySent != https {
				t.Errorf("close_notify sent: got %v, want %v", r.CloseNotifySent, https)
			}
		})
	}
}
