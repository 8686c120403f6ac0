package endwell

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http2"
)

// h2Server starts an httptest server with HTTP/2 over TLS, which announces
// MAX_CONCURRENT_STREAMS maxStreams (0: the default) and counts its connections.
func h2Server(t *testing.T, maxStreams int, h http.Handler) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: h2TestCert(t).server.Certificates}
	conns := new(atomic.Int32)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	if maxStreams > 0 {
		srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreams}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, conns
}

func TestH2Multiplexing(t *testing.T) {
	tests := []struct {
		name       string
		maxStreams int
		requests   int
		wantConns  int32
	}{
		{"concurrent first requests share one connection", 0, 20, 1},
		{"over MAX_CONCURRENT_STREAMS a second connection", 4, 8, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2CheckLeaks(t)
			// Every request waits until all have arrived: they are in flight together.
			var arrived sync.WaitGroup
			arrived.Add(tc.requests)
			all := make(chan struct{})
			go func() { arrived.Wait(); close(all) }()
			var proto atomic.Value
			srv, conns := h2Server(t, tc.maxStreams, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				proto.Store(r.Proto)
				arrived.Done()
				select {
				case <-all:
				case <-time.After(h2Wait):
				}
				io.WriteString(w, "ok")
			}))
			tr, recs := h2Transport(t, &Transport{})
			var wg sync.WaitGroup
			errs := make(chan error, tc.requests)
			for range tc.requests {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := tr.RoundTrip(mustGet(t, srv.URL))
					if err != nil {
						errs <- err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.ProtoMajor != 2 || string(b) != "ok" {
						errs <- fmt.Errorf("got %s %q, want HTTP/2.0 \"ok\"", resp.Proto, b)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := conns.Load(); got != tc.wantConns {
				t.Errorf("connections: got %d, want %d", got, tc.wantConns)
			}
			if got := proto.Load(); got != "HTTP/2.0" {
				t.Errorf("server saw %v, want HTTP/2.0", got)
			}
			if st := tr.Stats(); st.Idle != int(tc.wantConns) || st.Active != 0 {
				t.Errorf("stats: got %d idle %d active, want %d idle 0 active", st.Idle, st.Active, tc.wantConns)
			}
			if err := tr.Shutdown(boundedContext(t)); err != nil {
				t.Fatal(err)
			}
			for range tc.wantConns {
				r := recs.next(t)
				wantRecord(t, r, shutdown.Graceful, reasonShutdown)
				if !r.GoAwaySent {
					t.Errorf("shutdown sent no GOAWAY")
				}
			}
		})
	}
}

func TestH2GracefulCloseSendsGoAwayLastStreamID0(t *testing.T) {
	tests := []struct {
		name   string
		tr     *Transport
		close  func(*Transport) error
		reason string
	}{
		{"CloseIdleConnections", &Transport{}, func(tr *Transport) error { tr.CloseIdleConnections(); return nil }, reasonCloseIdle},
		{"Shutdown", &Transport{}, func(tr *Transport) error { return tr.Shutdown(context.Background()) }, reasonShutdown},
		{"idle timeout", &Transport{IdleConnTimeout: 50 * time.Millisecond}, func(*Transport) error { return nil }, reasonIdleTimeout},
		{"idle limit", &Transport{MaxIdleConnsPerHost: -1, MaxIdleConns: 1}, nil, reasonIdleLimit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2CheckLeaks(t)
			s := newH2FrameServer(t, nil)
			s2 := newH2FrameServer(t, nil)
			tr, recs := h2Transport(t, tc.tr)
			// Two requests: x/net's next stream id is then 5, which its GOAWAY would carry.
			h2Get(t, tr, s.url("/a"))
			h2Get(t, tr, s.url("/b"))
			if tc.close != nil {
				if err := tc.close(tr); err != nil {
					t.Fatal(err)
				}
			} else {
				h2Get(t, tr, s2.url("/")) // the second idle connection pushes the first out
			}
			sc := s.conn(t, 0)
			f := sc.waitFrame(t, "GOAWAY", isFrame(http2.FrameGoAway, 0))
			if f.LastStreamID != 0 || f.Code != http2.ErrCodeNo {
				t.Errorf("got %v, want GOAWAY last_stream_id=0 code=NO_ERROR", f)
			}
			sc.wantEnd(t, true)
			r := recs.next(t)
			wantRecord(t, r, shutdown.Graceful, tc.reason)
			if !r.GoAwaySent || !r.CloseNotifySent || !r.FINSent {
				t.Errorf("goodbyes: GOAWAY %v, close_notify %v, FIN %v; want all", r.GoAwaySent, r.CloseNotifySent, r.FINSent)
			}
			if r.Outcome != shutdown.Clean {
				t.Errorf("outcome: got %v (err %v), want clean", r.Outcome, r.Err)
			}
			if got := sc.goAways(); len(got) != 1 {
				t.Errorf("GOAWAY frames: got %v, want one", got)
			}
		})
	}
}

func TestH2AbortSendsNoCloseNotify(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) {
		s.onHeaders = func(*h2ServerConn, uint32, string) bool { return true } // never answer
	})
	tr, recs := h2Transport(t, &Transport{})
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(mustGet(t, s.url("/hang")))
		errc <- err
	}()
	sc := s.conn(t, 0)
	sc.waitFrame(t, "HEADERS", isFrame(http2.FrameHeaders, 1))
	start := time.Now()
	tr.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("request: got %v, want ErrClosed", err)
		}
	case <-time.After(h2Wait):
		t.Fatal("request not failed by Close")
	}
	sc.wantEnd(t, false)
	for _, f := range sc.log() {
		if f.Type == http2.FrameGoAway && f.Code == http2.ErrCodeNo {
			t.Errorf("abort sent %v", f)
		}
	}
	wantRecord(t, recs.next(t), shutdown.Abort, reasonClose)
}

func TestH2StreamAbortsKeepTheConnection(t *testing.T) {
	tests := []struct {
		name  string
		tr    *Transport
		abort func(t *testing.T, tr *Transport, url string) error
		want  error // the request's error, if any
	}{
		{"body closed early", &Transport{}, func(t *testing.T, tr *Transport, url string) error {
			resp, err := tr.RoundTrip(mustGet(t, url))
			if err != nil {
				return err
			}
			buf := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				return err
			}
			return resp.Body.Close()
		}, nil},
		{"context cancelled", &Transport{}, func(t *testing.T, tr *Transport, url string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", url+"?hang", nil)
			_, err := tr.RoundTrip(req)
			return err
		}, context.DeadlineExceeded},
		{"response header timeout", &Transport{ResponseHeaderTimeout: 100 * time.Millisecond}, func(t *testing.T, tr *Transport, url string) error {
			_, err := tr.RoundTrip(mustGet(t, url+"?hang"))
			return err
		}, ErrResponseHeaderTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2CheckLeaks(t)
			s := newH2FrameServer(t, func(s *h2FrameServer) {
				s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
					switch {
					case strings.HasSuffix(path, "?hang"):
						return true
					case path == "/big":
						// 48 KiB of body, and no end.
						sc.respond(id, 200, strings.Repeat("x", 16<<10), false)
						for range 2 {
							sc.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, make([]byte, 16<<10)) })
						}
						return true
					}
					return false
				}
			})
			tr, recs := h2Transport(t, tc.tr)
			err := tc.abort(t, tr, s.url("/big"))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("request: got %v, want %v", err, tc.want)
			}
			sc := s.conn(t, 0)
			f := sc.waitFrame(t, "RST_STREAM", isFrame(http2.FrameRSTStream, 1))
			if f.Code != http2.ErrCodeCancel {
				t.Errorf("got %v, want RST_STREAM code=CANCEL", f)
			}
			// The connection lives on and serves the next request.
			h2Get(t, tr, s.url("/next"))
			if n := s.numConns(); n != 1 {
				t.Errorf("server connections: got %d, want 1", n)
			}
			sc.waitFrame(t, "HEADERS of the next request", isFrame(http2.FrameHeaders, 3))
			recs.none(t, 50*time.Millisecond)
			if err := tr.Shutdown(boundedContext(t)); err != nil {
				t.Fatal(err)
			}
			wantRecord(t, recs.next(t), shutdown.Graceful, reasonShutdown)
		})
	}
}

func TestH2ServerGoAwayRetriesOnNewConnection(t *testing.T) {
	tests := []struct {
		name   string
		method string
	}{
		{"GET", "GET"},
		{"POST, never processed", "POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2CheckLeaks(t)
			s := newH2FrameServer(t, func(s *h2FrameServer) {
				s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
					if sc.n == 0 && id > 1 {
						// The first connection processes stream 1 only.
						sc.goAway(1, http2.ErrCodeNo)
						return true
					}
					return false
				}
			})
			tr, recs := h2Transport(t, &Transport{})
			h2Get(t, tr, s.url("/first"))
			req, _ := http.NewRequest(tc.method, s.url("/second"), strings.NewReader("body"))
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("request refused by GOAWAY was not retried: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "ok" {
				t.Errorf("body: got %q, want ok", b)
			}
			if n := s.numConns(); n != 2 {
				t.Errorf("server connections: got %d, want 2", n)
			}
			// The first connection ends gracefully, with our GOAWAY.
			r := recs.next(t)
			wantRecord(t, r, shutdown.Graceful, reasonGoAwayReceived)
			sc := s.conn(t, 0)
			f := sc.waitFrame(t, "GOAWAY", isFrame(http2.FrameGoAway, 0))
			if f.LastStreamID != 0 || f.Code != http2.ErrCodeNo {
				t.Errorf("got %v, want GOAWAY last_stream_id=0 code=NO_ERROR", f)
			}
			sc.wantEnd(t, true)
			s.conn(t, 1).waitFrame(t, "the retried HEADERS", isFrame(http2.FrameHeaders, 1))
		})
	}
}

func TestH2ServerGoAwayOnIdleConnection(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) {
		s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
			sc.respond(id, 200, "ok", true)
			sc.goAway(id, http2.ErrCodeNo) // goodbye, but the connection stays open
			return true
		}
	})
	tr, recs := h2Transport(t, &Transport{})
	h2Get(t, tr, s.url("/"))
	r := recs.next(t)
	wantRecord(t, r, shutdown.Graceful, reasonGoAwayReceived)
	if !r.GoAwaySent || !r.CloseNotifySent {
		t.Errorf("goodbyes: GOAWAY %v, close_notify %v; want both", r.GoAwaySent, r.CloseNotifySent)
	}
	s.conn(t, 0).wantEnd(t, true)
	h2Get(t, tr, s.url("/")) // a new connection
	if n := s.numConns(); n != 2 {
		t.Errorf("server connections: got %d, want 2", n)
	}
}

func TestH2ConnectionErrorAbortsWithGoAway(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) {
		s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
			// DATA on stream 0: a connection error (PROTOCOL_ERROR).
			sc.write(func(fr *http2.Framer) error { return fr.WriteData(0, false, []byte("x")) })
			return true
		}
	})
	tr, recs := h2Transport(t, &Transport{})
	if _, err := tr.RoundTrip(mustGet(t, s.url("/"))); err == nil {
		t.Fatal("request succeeded over a broken connection")
	}
	sc := s.conn(t, 0)
	f := sc.waitFrame(t, "GOAWAY", isFrame(http2.FrameGoAway, 0))
	if f.Code != http2.ErrCodeProtocol {
		t.Errorf("got %v, want GOAWAY code=PROTOCOL_ERROR", f)
	}
	sc.wantEnd(t, false)
	wantRecord(t, recs.next(t), shutdown.Abort, reasonProtocolError)
}

func TestH2PingTimeoutAborts(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) { s.noPingAck = true })
	tr, recs := h2Transport(t, &Transport{ReadIdleTimeout: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	h2Get(t, tr, s.url("/"))
	sc := s.conn(t, 0)
	sc.waitFrame(t, "PING", isFrame(http2.FramePing, 0))
	wantRecord(t, recs.next(t), shutdown.Abort, reasonTimeout)
	sc.wantEnd(t, false)
}

func TestH2PeerClosedIdleConnection(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) {
		s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
			sc.respond(id, 200, "ok", true)
			sc.tc.Close() // close_notify, then close: no GOAWAY
			return true
		}
	})
	tr, recs := h2Transport(t, &Transport{})
	h2Get(t, tr, s.url("/"))
	r := recs.next(t)
	wantRecord(t, r, shutdown.Graceful, reasonPeerClosed)
	if r.GoAwaySent {
		t.Errorf("GOAWAY sent to a server that had closed")
	}
	if st := tr.Stats(); st.Idle != 0 {
		t.Errorf("idle connections: got %d, want 0", st.Idle)
	}
}

func TestH2ShutdownWaitsForOpenStreams(t *testing.T) {
	h2CheckLeaks(t)
	release := make(chan struct{})
	srv, _ := h2Server(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	tr, recs := h2Transport(t, &Transport{})
	h2Get(t, tr, srv.URL+"/")
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(mustGet(t, srv.URL+"/slow"))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- tr.Shutdown(boundedContext(t)) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Errorf("request open at Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	wantRecord(t, recs.next(t), shutdown.Graceful, reasonShutdown)
}

func TestH2Protocols(t *testing.T) {
	h1only := func() *http.Protocols { p := new(http.Protocols); p.SetHTTP1(true); return p }
	h2only := func() *http.Protocols { p := new(http.Protocols); p.SetHTTP2(true); return p }
	tests := []struct {
		name      string
		protocols *http.Protocols
		want      string
	}{
		{"nil: HTTP/2", nil, "HTTP/2.0"},
		{"HTTP1 only", h1only(), "HTTP/1.1"},
		{"HTTP2 only", h2only(), "HTTP/2.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := h2Server(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Proto)
			}))
			tr, _ := h2Transport(t, &Transport{Protocols: tc.protocols})
			if got := h2Get(t, tr, srv.URL); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("unencrypted HTTP/2", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}))
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
		defer srv.Close()
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr, recs := h2Transport(t, &Transport{Protocols: p})
		if got := h2Get(t, tr, srv.URL); got != "HTTP/2.0" {
			t.Errorf("got %s, want HTTP/2.0", got)
		}
		tr.CloseIdleConnections()
		r := recs.next(t)
		wantRecord(t, r, shutdown.Graceful, reasonCloseIdle)
		if !r.GoAwaySent || !r.FINSent || r.CloseNotifySent {
			t.Errorf("goodbyes: GOAWAY %v, FIN %v, close_notify %v; want GOAWAY and FIN", r.GoAwaySent, r.FINSent, r.CloseNotifySent)
		}
	})
	// Where the server can't speak what the set asks, net/http speaks HTTP/1.1: so does
	// endwell, side by side with it.
	t.Run("fallbacks to HTTP/1.1 as net/http", func(t *testing.T) {
		h2c := func() *http.Protocols { p := new(http.Protocols); p.SetUnencryptedHTTP2(true); return p }
		cert := h2TestCert(t)
		proto := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
		h2srv, _ := h2Server(t, 0, proto)
		plain := httptest.NewServer(proto)
		defer plain.Close()
		// A TLS server that does no ALPN at all: it chooses nothing, whatever is offered.
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert.server.Certificates})
		if err != nil {
			t.Fatal(err)
		}
		noALPN := &http.Server{Handler: proto}
		go noALPN.Serve(ln)
		defer noALPN.Close()
		noALPNURL := "https://" + ln.Addr().String()
		cases := []struct {
			name      string
			protocols *http.Protocols
			url       string
		}{
			{"UnencryptedHTTP2 alone, https:// to an HTTP/2 server", h2c(), h2srv.URL},
			{"HTTP2 alone, http://", h2only(), plain.URL},
			{"HTTP2 alone, a TLS server without ALPN", h2only(), noALPNURL},
			{"empty set, https:// to an HTTP/2 server", new(http.Protocols), h2srv.URL},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				nt := &http.Transport{TLSClientConfig: cert.client.Clone(), Protocols: tc.protocols}
				defer nt.CloseIdleConnections()
				want := h2Get(t, nt, tc.url)
				tr, _ := h2Transport(t, &Transport{Protocols: tc.protocols})
				if got := h2Get(t, tr, tc.url); got != want || got != "HTTP/1.1" {
					t.Errorf("endwell spoke %s, net/http %s; want HTTP/1.1 from both", got, want)
				}
			})
		}
	})
	t.Run("HTTP2 only against an HTTP/1.1 server", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.NotFoundHandler())
		srv.TLS = &tls.Config{Certificates: h2TestCert(t).server.Certificates, NextProtos: []string{"http/1.1"}}
		srv.StartTLS()
		defer srv.Close()
		tr, _ := h2Transport(t, &Transport{Protocols: h2only()})
		_, err := tr.RoundTrip(mustGet(t, srv.URL))
		var de *DialError
		if !errors.As(err, &de) || !errors.Is(err, ErrNotSent) {
			t.Errorf("got %v, want a DialError", err)
		}
	})
}

// TestH2Nghttpd proves the goodbyes against nghttp2's server, the reference HTTP/2 peer:
// nghttpd -v logs every frame it receives and flags the invalid ones.
func TestH2Nghttpd(t *testing.T) {
	bin := h2NeedNghttpd(t)
	h2CheckLeaks(t)
	dir := t.TempDir()
	certFile, keyFile := h2TestCert(t).writeFiles(t, dir)
	docroot := filepath.Join(dir, "www")
	os.Mkdir(docroot, 0o755)
	os.WriteFile(filepath.Join(docroot, "ok"), []byte("ok\n"), 0o644)
	os.WriteFile(filepath.Join(docroot, "large"), bytes.Repeat([]byte("x"), 16<<20), 0o644)
	port := h2FreePort(t)
	p := h2StartProc(t, bin, "-v", "-a", "127.0.0.1", "-d", docroot, fmt.Sprint(port), keyFile, certFile)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p.waitListening(t, addr)
	base := "https://" + addr

	tr, recs := h2Transport(t, &Transport{})
	// Two requests, so that x/net's own GOAWAY would carry last_stream_id=5.
	for range 2 {
		if got := h2Get(t, tr, base+"/ok"); got != "ok\n" {
			t.Fatalf("got %q", got)
		}
	}
	// A body closed early: RST_STREAM(CANCEL), and the connection lives on.
	resp, err := tr.RoundTrip(mustGet(t, base+"/large"))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1000))
	resp.Body.Close()
	p.waitOutput(t, regexp.MustCompile(`recv RST_STREAM[^\n]*\n[^\n]*error_code=CANCEL`))
	h2Get(t, tr, base+"/ok")
	recs.none(t, 20*time.Millisecond)

	tr.CloseIdleConnections()
	r := recs.next(t)
	wantRecord(t, r, shutdown.Graceful, reasonCloseIdle)
	out := p.waitOutput(t, regexp.MustCompile(`recv GOAWAY[^\n]*\n[^\n]*last_stream_id=0`))
	if !r.GoAwaySent {
		t.Errorf("no GOAWAY sent")
	}
	// nghttpd closes as soon as it has read our GOAWAY, without a close_notify of its own:
	// our close_notify is then skipped if its FIN came first (peer_silent), or draws a
	// reset if it crossed nghttpd's close (failed: no FIN can be sent on a reset
	// connection).
	switch r.Outcome {
	case shutdown.Clean, shutdown.PeerSilent, shutdown.Failed:
		t.Logf("outcome %v (err %v)", r.Outcome, r.Err)
	default:
		t.Errorf("outcome: got %v (err %v), want clean, peer_silent or failed", r.Outcome, r.Err)
	}
	if strings.Contains(out, "[INVALID") {
		t.Errorf("nghttpd flagged a frame as invalid:\n%s", out)
	}
	for _, line := range regexp.MustCompile(`(?m)^.*(recv (GOAWAY|RST_STREAM)|last_stream_id|error_code).*$`).FindAllString(out, -1) {
		t.Log(line)
	}
}

// h2NeedNghttpd returns nghttpd's path, or skips the test (fails it under
// ENDWELL_PEERS=require) when it is not installed.
func h2NeedNghttpd(t *testing.T) string {
	for _, p := range []string{"nghttpd", "/usr/sbin/nghttpd", "/usr/bin/nghttpd"} {
		if path, err := execLookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("ENDWELL_PEERS") == "require" {
		t.Fatal("nghttpd not installed (Debian package nghttp2-server), and ENDWELL_PEERS=require")
	}
	t.Skip("nghttpd not installed (Debian package nghttp2-server)")
	return ""
}

func mustGet(t testing.TB, url string) *http.Request {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// h2Get runs a GET and returns its body.
func h2Get(t *testing.T, rt http.RoundTripper, url string) string {
	t.Helper()
	resp, err := rt.RoundTrip(mustGet(t, url))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return string(b)
}

func boundedContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), h2Wait)
	t.Cleanup(cancel)
	return ctx
}

func TestH2ShareDials(t *testing.T) {
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	tests := []struct {
		name string
		tr   *Transport
		key  poolKey
		want bool
	}{
		{"https", &Transport{}, poolKey{scheme: "https", addr: "example.com:443", host: "example.com"}, true},
		{"http", &Transport{}, poolKey{scheme: "http", addr: "example.com:80", host: "example.com"}, false},
		{"http with unencrypted HTTP/2", &Transport{Protocols: h2c}, poolKey{scheme: "http", addr: "example.com:80", host: "example.com"}, true},
		{"https through a proxy", &Transport{}, poolKey{scheme: "https", addr: "example.com:443", host: "example.com", proxy: "http://proxy:3128"}, true},
		{"http through an https proxy", &Transport{}, poolKey{scheme: "http", proxy: "https://proxy:443"}, false},
		{"keep-alives disabled", &Transport{DisableKeepAlives: true}, poolKey{scheme: "https", addr: "example.com:443", host: "example.com"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.tr.init()
			if got := tc.tr.shareDials(tc.key); got != tc.want {
				t.Errorf("shareDials(%q): got %v, want %v", tc.key, got, tc.want)
			}
		})
	}
}

// TestH2GoAwayAtOnce: a new connection whose server sends GOAWAY with its first frames
// takes no stream; the request, never processed, goes once more on another connection. If
// that one refuses it too, the request fails with an error that says it was not sent, and
// no third connection is dialled. (The GOAWAY is seen before the request is sent, or
// after: x/net then reports the stream refused. Both end the same.)
func TestH2GoAwayAtOnce(t *testing.T) {
	for _, refusing := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d refusing", refusing), func(t *testing.T) {
			s := newH2FrameServer(t, func(s *h2FrameServer) { s.goAwayFirst = refusing })
			tr, _ := h2Transport(t, &Transport{})
			resp, err := tr.RoundTrip(mustGet(t, s.url("/x")))
			if refusing == 1 {
				if err != nil {
					t.Fatalf("RoundTrip: %v, want the answer of the second connection", err)
				}
				resp.Body.Close()
			} else if err == nil || !errors.Is(err, ErrNotSent) {
				t.Fatalf("RoundTrip: got %v, want an error that says the request was not sent", err)
			}
			if got := s.numConns(); got != 2 {
				t.Errorf("connections: got %d, want 2 (one more try)", got)
			}
		})
	}
}

// TestH2TimeoutsAtStreamLimit: at the server's MAX_CONCURRENT_STREAMS, requests that time
// out before their response (x/net resets each, and holds its slot until the server's
// answer to a PING) are followed by requests that all succeed, as with net/http: x/net
// never fails a request the pool placed in such a slot ("client conn not usable").
func TestH2TimeoutsAtStreamLimit(t *testing.T) {
	h2CheckLeaks(t)
	for _, limit := range []int{1, 4} {
		srv, _ := h2Server(t, limit, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				select {
				case <-r.Context().Done():
				case <-time.After(h2Wait):
				}
				return
			}
			io.WriteString(w, "ok")
		}))
		tr, _ := h2Transport(t, &Transport{})
		var wg sync.WaitGroup
		errs := make(chan error, limit*20)
		for range limit {
			wg.Go(func() {
				for range 20 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
					req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow", nil)
					if resp, err := tr.RoundTrip(req); err == nil {
						resp.Body.Close()
					}
					cancel()
					resp, err := tr.RoundTrip(mustGet(t, srv.URL+"/fast"))
					if err != nil {
						errs <- err
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		close(errs)
		n := 0
		for err := range errs {
			if n++; n <= 3 {
				t.Errorf("limit %d: request after a timed-out one: %v", limit, err)
			}
		}
		if n > 3 {
			t.Errorf("limit %d: %d requests failed in all", limit, n)
		}
		if err := tr.Shutdown(boundedContext(t)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestResponseHeaderTimeoutAfterUpload: ResponseHeaderTimeout runs from the end of the
// request's writing, its body included, as net/http's: an upload that takes longer than
// the timeout, answered at once after it, succeeds over HTTP/1.1 and HTTP/2; a server that
// never answers fails it, with ErrResponseHeaderTimeout.
func TestResponseHeaderTimeoutAfterUpload(t *testing.T) {
	h2CheckLeaks(t)
	const timeout = 150 * time.Millisecond
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/silent" {
			select {
			case <-r.Context().Done():
			case <-time.After(h2Wait):
			}
			return
		}
		io.WriteString(w, strconv.Itoa(len(b)))
	})
	h1srv := httptest.NewServer(handler)
	t.Cleanup(h1srv.Close)
	h2srv, _ := h2Server(t, 0, handler)
	for _, tc := range []struct {
		name, url string
	}{{"HTTP/1.1", h1srv.URL}, {"HTTP/2", h2srv.URL}} {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := h2Transport(t, &Transport{ResponseHeaderTimeout: timeout})
			upload := func(path string) (*http.Response, error) {
				pr, pw := io.Pipe()
				go func() {
					for range 3 {
						pw.Write([]byte("piece"))
						time.Sleep(timeout)
					}
					pw.Close()
				}()
				ctx, cancel := context.WithTimeout(context.Background(), h2Wait)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "POST", tc.url+path, pr)
				resp, err := tr.RoundTrip(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != "15" {
						return resp, fmt.Errorf("body %q, want 15", b)
					}
				}
				return resp, err
			}
			if _, err := upload("/"); err != nil {
				t.Errorf("an upload of 3×timeout answered at once: %v", err)
			}
			if _, err := upload("/silent"); !errors.Is(err, ErrResponseHeaderTimeout) {
				t.Errorf("a server that never answers: got %v, want ErrResponseHeaderTimeout", err)
			}
			if err := tr.Shutdown(boundedContext(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestH2ShortBodyUnexpectedEOF: an HTTP/2 body cut short (END_STREAM before its
// Content-Length, a truncated gzip stream) fails with io.ErrUnexpectedEOF itself, as
// net/http's HTTP/2 and endwell's HTTP/1.1: not an error that claims the server closed
// the connection.
func TestH2ShortBodyUnexpectedEOF(t *testing.T) {
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write([]byte("hello gzip"))
	zw.Close()
	cases := map[string]http.HandlerFunc{
		"truncated gzip": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(zbuf.Bytes()[:12])
		},
		"short of Content-Length": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("hello"))
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			srv, _ := h2Server(t, 0, h)
			nt := &http.Transport{TLSClientConfig: h2TestCert(t).client, ForceAttemptHTTP2: true}
			defer nt.CloseIdleConnections()
			tr, _ := h2Transport(t, &Transport{})
			for _, rt := range []http.RoundTripper{nt, tr} {
				resp, err := rt.RoundTrip(mustGet(t, srv.URL))
				if err != nil {
					t.Fatal(err)
				}
				if resp.ProtoMajor != 2 {
					t.Fatalf("%T: %s", rt, resp.Proto)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != io.ErrUnexpectedEOF {
					t.Errorf("%T: body error %v (%T), want io.ErrUnexpectedEOF itself", rt, err, err)
				}
			}
		})
	}
}
