package endwell

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell/shutdown"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// h3Server is an in-process HTTP/3 server (quic-go's) on loopback whose qlog records the
// CONNECTION_CLOSE frames it received, and which counts its connections.
type h3Server struct {
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	srv *http3.Server
	wg  sync.WaitGroup

	mu     sync.Mutex // guards the following
	closes []uint64   // the application codes of the CONNECTION_CLOSE frames received
	conns  []*quic.Conn
}

func startH3Server(t testing.TB) *h3Server {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &h3Server{udp: udp, tr: &quic.Transport{Conn: udp}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.Proto)
	})
	mux.HandleFunc("/large", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 1<<20))
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		// Part of a body, then nothing until the client goes away.
		w.Write([]byte("part"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	s.srv = &http3.Server{Handler: mux}
	tlsConf := http3.ConfigureTLSConfig(h2TestCert(t).server.Clone())
	s.ln, err = s.tr.Listen(tlsConf, &quic.Config{Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return s }})
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Go(func() {
		for {
			conn, err := s.ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			s.wg.Go(func() { s.srv.ServeQUICConn(conn) })
		}
	})
	t.Cleanup(func() {
		s.srv.Close()
		s.ln.Close()
		s.tr.Close()
		s.udp.Close() // a quic.Transport does not close the socket it was given
		s.wg.Wait()
	})
	return s
}

func (s *h3Server) AddProducer() qlogwriter.Recorder { return s }
func (s *h3Server) Close() error                     { return nil }
func (s *h3Server) RecordEvent(ev qlogwriter.Event) {
	pr, ok := ev.(qlog.PacketReceived)
	if !ok {
		return
	}
	for _, f := range pr.Frames {
		if cc, ok := f.Frame.(*qlog.ConnectionCloseFrame); ok && cc.IsApplicationError {
			s.mu.Lock()
			s.closes = append(s.closes, cc.ErrorCode)
			s.mu.Unlock()
		}
	}
}

func (s *h3Server) url(path string) string { return "https://" + s.udp.LocalAddr().String() + path }

// waitClose waits for the server to receive a CONNECTION_CLOSE and returns its code.
func (s *h3Server) waitClose(t *testing.T) uint64 {
	t.Helper()
	deadline := time.Now().Add(h2Wait)
	for {
		s.mu.Lock()
		if len(s.closes) > 0 {
			c := s.closes[0]
			s.mu.Unlock()
			return c
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the server received no CONNECTION_CLOSE")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *h3Server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func h3Transport(t *testing.T, tr *Transport) (*Transport, *h2Records) {
	t.Helper()
	if tr.HTTP3 == nil {
		tr.HTTP3 = &HTTP3Config{Only: true}
	}
	return h2Transport(t, tr)
}

func h3Get(t *testing.T, tr *Transport, url string) string {
	t.Helper()
	resp, err := tr.RoundTrip(mustGet(t, url))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	if resp.Proto != "HTTP/3.0" {
		t.Errorf("Proto: got %s, want HTTP/3.0", resp.Proto)
	}
	return string(b)
}

// TestH3GracefulAndAbort: with HTTP3.Only, requests go over one HTTP/3 connection; a
// graceful ending (CloseIdleConnections, Shutdown) sends CONNECTION_CLOSE with H3_NO_ERROR
// and keeps its closing period, recorded clean; Transport.Close sends H3_REQUEST_CANCELLED
// and no closing period.
func TestH3GracefulAndAbort(t *testing.T) {
	ends := []struct {
		name    string
		end     func(tr *Transport)
		mode    shutdown.Mode
		reason  string
		code    uint64
		outcome shutdown.Outcome
		closing bool
	}{
		{"CloseIdleConnections", func(tr *Transport) { tr.CloseIdleConnections() }, shutdown.Graceful, reasonCloseIdle, 0x100, shutdown.Clean, true},
		{"Shutdown", func(tr *Transport) {
			ctx, cancel := context.WithTimeout(context.Background(), h2Wait)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}, shutdown.Graceful, reasonShutdown, 0x100, shutdown.Clean, true},
		{"Close", func(tr *Transport) { tr.Close() }, shutdown.Abort, reasonClose, 0x10c, shutdown.Aborted, false},
	}
	for _, tc := range ends {
		t.Run(tc.name, func(t *testing.T) {
			h2CheckLeaks(t)
			s := startH3Server(t)
			tr, recs := h3Transport(t, &Transport{})
			for range 3 {
				if got := h3Get(t, tr, s.url("/")); got != "hello HTTP/3.0" {
					t.Errorf("body: got %q", got)
				}
			}
			if n := s.numConns(); n != 1 {
				t.Errorf("server connections: got %d, want 1 for three requests", n)
			}
			tc.end(tr)
			r := recs.next(t)
			wantRecord(t, r, tc.mode, tc.reason)
			if r.Outcome != tc.outcome {
				t.Errorf("outcome: got %v, want %v", r.Outcome, tc.outcome)
			}
			if !r.ConnectionCloseSent || r.QUICCloseCode != tc.code {
				t.Errorf("record: CONNECTION_CLOSE sent %v, code %#x; want %#x", r.ConnectionCloseSent, r.QUICCloseCode, tc.code)
			}
			if got := s.waitClose(t); got != tc.code {
				t.Errorf("server received CONNECTION_CLOSE %#x, want %#x", got, tc.code)
			}
			if r.ClosingPeriodOver != tc.closing || tc.closing && r.ClosingPeriod <= 0 {
				t.Errorf("closing period: over %v, %v; want over %v", r.ClosingPeriodOver, r.ClosingPeriod, tc.closing)
			}
		})
	}
}

// TestH3BodyClosedEarlyKeepsConnection: a body closed before its end resets its stream
// only: the next request uses the same connection, and nothing is torn down.
func TestH3BodyClosedEarlyKeepsConnection(t *testing.T) {
	h2CheckLeaks(t)
	s := startH3Server(t)
	tr, recs := h3Transport(t, &Transport{})
	resp, err := tr.RoundTrip(mustGet(t, s.url("/large")))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1000))
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); !errors.Is(err, ErrBodyClosed) {
		t.Errorf("Read after Close: got %v, want ErrBodyClosed", err)
	}
	h3Get(t, tr, s.url("/"))
	recs.none(t, 50*time.Millisecond)
	if n := s.numConns(); n != 1 {
		t.Errorf("server connections: got %d, want 1", n)
	}
}

// TestH3ServerGoAway: the server's GOAWAY ends the connection gracefully
// (goaway_received), and the next request goes over a new one.
func TestH3ServerGoAway(t *testing.T) {
	h2CheckLeaks(t)
	s := startH3Server(t)
	tr, recs := h3Transport(t, &Transport{})
	h3Get(t, tr, s.url("/"))
	s.mu.Lock()
	qc := s.conns[0]
	s.mu.Unlock()
	// quic-go's server sends GOAWAY on Shutdown; its own connection then closes when idle.
	go s.srv.Shutdown(context.Background())
	r := recs.next(t)
	wantRecord(t, r, shutdown.Graceful, reasonGoAwayReceived)
	select {
	case <-qc.Context().Done():
	case <-time.After(h2Wait):
		t.Fatal("the server's connection did not end")
	}
}

// TestH3OnlyRefusesProxy: with HTTP3.Only, a request that Proxy sends through a proxy
// fails: QUIC cannot go through one, and endwell does not bypass it.
func TestH3OnlyRefusesProxy(t *testing.T) {
	tr := &Transport{HTTP3: &HTTP3Config{Only: true}, Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: "127.0.0.1:1"})}
	defer tr.Close()
	_, err := tr.RoundTrip(mustGet(t, "https://example.test/"))
	var re *RequestError
	if !errors.As(err, &re) {
		t.Errorf("got %v, want a *RequestError", err)
	}
}

// TestH3ClientTimeoutMessage: http.Client's Timeout names itself in the error of an
// HTTP/3 body read past it, as over HTTP/1.1 and HTTP/2 (TestClientTimeoutMessage).
func TestH3ClientTimeoutMessage(t *testing.T) {
	h2CheckLeaks(t)
	s := startH3Server(t)
	tr, _ := h3Transport(t, &Transport{})
	c := &http.Client{Transport: tr, Timeout: 150 * time.Millisecond}
	for range 4 {
		resp, err := c.Get(s.url("/stall"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "Client.Timeout or context cancellation while reading body"; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("body error %v; want one saying %q", err, want)
		}
	}
}
