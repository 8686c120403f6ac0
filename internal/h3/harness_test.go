package h3_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
	"go.uber.org/goleak"

	"github.com/endwell/endwell/internal/h3"
	"github.com/endwell/endwell/internal/testpeer"
)

// clientTLS returns a client configuration that trusts the test certificate (testpeer's).
func clientTLS(t testing.TB) *tls.Config {
	return testpeer.TestCert(t).ClientConfig()
}

// checkLeaks records the goroutines and file descriptors at the start of a test and
// checks, at its end, that both are back to that baseline.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		goleak.VerifyNone(t, ignore)
		deadline := time.Now().Add(2 * time.Second)
		for {
			after := openFDs(t)
			if after <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("open file descriptors: got %d, want %d (the baseline)", after, before)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// portFree reports whether the UDP port of addr can be bound again, that is whether the
// socket that had it is closed. The probe socket is closed at once.
func portFree(addr net.Addr) bool {
	port := addr.(*net.UDPAddr).Port
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// frame is a frame the test server received, as its qlog recorded it.
type frame struct {
	Kind   string // "connection_close", "stop_sending", "reset_stream"
	App    bool   // CONNECTION_CLOSE of the application kind (0x1d)
	Code   uint64
	Stream int64
	At     time.Time
}

func (f frame) String() string {
	switch f.Kind {
	case "connection_close":
		kind := "transport"
		if f.App {
			kind = "application"
		}
		return fmt.Sprintf("CONNECTION_CLOSE(%s, %#x)", kind, f.Code)
	case "stop_sending":
		return fmt.Sprintf("STOP_SENDING(stream %d, %#x)", f.Stream, f.Code)
	case "reset_stream":
		return fmt.Sprintf("RESET_STREAM(stream %d, %#x)", f.Stream, f.Code)
	}
	return f.Kind
}

// wireLog collects the frames the test server received, from its qlog events. It is a
// qlogwriter.Trace and Recorder, safe for concurrent use.
type wireLog struct {
	mu      sync.Mutex // guards the following
	frames  []frame
	changed chan struct{} // closed and replaced at each new frame
}

func newWireLog() *wireLog { return &wireLog{changed: make(chan struct{})} }

func (w *wireLog) tracer(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return w }
func (w *wireLog) AddProducer() qlogwriter.Recorder                                 { return w }
func (w *wireLog) Close() error                                                     { return nil }

func (w *wireLog) RecordEvent(ev qlogwriter.Event) {
	pr, ok := ev.(qlog.PacketReceived)
	if !ok {
		return
	}
	now := time.Now()
	for _, f := range pr.Frames {
		var got frame
		switch f := f.Frame.(type) {
		case *qlog.ConnectionCloseFrame:
			got = frame{Kind: "connection_close", App: f.IsApplicationError, Code: f.ErrorCode}
		case *qlog.StopSendingFrame:
			got = frame{Kind: "stop_sending", Code: uint64(f.ErrorCode), Stream: int64(f.StreamID)}
		case *qlog.ResetStreamFrame:
			got = frame{Kind: "reset_stream", Code: uint64(f.ErrorCode), Stream: int64(f.StreamID)}
		default:
			continue
		}
		got.At = now
		w.mu.Lock()
		w.frames = append(w.frames, got)
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
}

// all returns the frames received so far of kind; all of them if kind is "".
func (w *wireLog) all(kind string) []frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []frame
	for _, f := range w.frames {
		if kind == "" || f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// wait waits up to 5 seconds for a frame of kind and returns the first.
func (w *wireLog) wait(t *testing.T, kind string) frame {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		w.mu.Lock()
		for _, f := range w.frames {
			if f.Kind == kind {
				w.mu.Unlock()
				return f
			}
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("the server received no %s; it received %v", kind, w.all(""))
		}
	}
}

// testServer is an in-process quic-go HTTP/3 server on 127.0.0.1 whose qlog records the
// frames it received (see wireLog), and which hands the test its QUIC connections.
type testServer struct {
	t     *testing.T
	udp   *net.UDPConn
	tr    *quic.Transport
	ln    *quic.Listener
	srv   *http3.Server
	wire  *wireLog
	conns chan *quic.Conn
	wg    sync.WaitGroup // the accept loop and the ServeQUICConn goroutines

	// release unblocks the handlers of /block and /slow.
	release     chan struct{}
	releaseOnce sync.Once
	// started gets a value when a /block or /slow handler starts.
	started chan string
	// handlerDone gets the error of the request's context when such a handler returns.
	handlerDone chan error
}

type serverOptions struct {
	maxStreams int64 // the server's MaxIncomingStreams; zero means quic-go's default
}

// startServer starts a test server; it is closed at the test's end.
func startServer(t *testing.T, opts serverOptions) *testServer {
	t.Helper()
	cert := testpeer.TestCert(t).Certificate
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		t:           t,
		udp:         udp,
		tr:          &quic.Transport{Conn: udp},
		wire:        newWireLog(),
		conns:       make(chan *quic.Conn, 16),
		release:     make(chan struct{}),
		started:     make(chan string, 16),
		handlerDone: make(chan error, 16),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello, "+r.Proto)
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		// Blocks before the response header until released or cancelled.
		s.started <- r.URL.Path
		select {
		case <-s.release:
			io.WriteString(w, "released")
			s.handlerDone <- nil
		case <-r.Context().Done():
			s.handlerDone <- r.Context().Err()
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		// Sends 16 KiB, then blocks until released or cancelled.
		w.Write(bytes.Repeat([]byte("x"), 16<<10))
		w.(http.Flusher).Flush()
		s.started <- r.URL.Path
		select {
		case <-s.release:
			s.handlerDone <- nil
		case <-r.Context().Done():
			s.handlerDone <- r.Context().Err()
		}
	})
	s.srv = &http3.Server{Handler: mux}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	qconf := &quic.Config{Tracer: s.wire.tracer, MaxIncomingStreams: opts.maxStreams}
	s.ln, err = s.tr.Listen(tlsConf, qconf)
	if err != nil {
		t.Fatal(err)
	}
	s.wg.Go(func() {
		for {
			conn, err := s.ln.Accept(context.Background())
			if err != nil {
				return
			}
			select {
			case s.conns <- conn:
			default:
			}
			s.wg.Go(func() { s.srv.ServeQUICConn(conn) })
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *testServer) addr() string { return s.udp.LocalAddr().String() }

func (s *testServer) url(path string) string { return "https://" + s.addr() + path }

func (s *testServer) unblock() { s.releaseOnce.Do(func() { close(s.release) }) }

// conn returns the server's side of the next accepted connection.
func (s *testServer) conn() *quic.Conn {
	s.t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(5 * time.Second):
		s.t.Fatal("the server accepted no connection")
		return nil
	}
}

func (s *testServer) close() {
	s.unblock()
	s.srv.Close()
	s.ln.Close()
	s.tr.Close()
	s.udp.Close()
	s.wg.Wait()
}

// dial dials the test server (or addr, if not empty) with cfg, whose TLS config is set to
// trust the test certificate if nil.
func dial(t *testing.T, addr string, cfg *h3.Config) *h3.Conn {
	t.Helper()
	if cfg == nil {
		cfg = &h3.Config{}
	}
	if cfg.TLSClientConfig == nil {
		cfg.TLSClientConfig = clientTLS(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h3.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	return c
}

// get sends a GET for url on c and returns the response, its body read and closed.
func get(t *testing.T, c *h3.Conn, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, string(b)
}

// proxy is a UDP relay between a client and the test server that delays every packet
// by a fixed time each way (so that the RTT, and so the PTO, is known), records what
// passes, and can replay a server packet to the client.
type proxy struct {
	front  *net.UDPConn // the client's side
	back   *net.UDPConn // the server's side
	server *net.UDPAddr
	delay  time.Duration
	toSrv  chan delayed
	toCli  chan delayed
	wg     sync.WaitGroup

	mu         sync.Mutex // guards the following
	client     *net.UDPAddr
	fromClient [][]byte
	fromServer [][]byte
	lastSeen   time.Time     // when the last packet passed, either way
	changed    chan struct{} // closed and replaced at each packet from the client
}

type delayed struct {
	b   []byte
	due time.Time
}

func startProxy(t *testing.T, server string, delay time.Duration) *proxy {
	t.Helper()
	saddr, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{
		front: front, back: back, server: saddr, delay: delay,
		toSrv: make(chan delayed, 1024), toCli: make(chan delayed, 1024),
		changed: make(chan struct{}),
	}
	// Readers: one per side, until its socket is closed.
	p.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				close(p.toSrv)
				return
			}
			b := bytes.Clone(buf[:n])
			p.mu.Lock()
			p.client = from
			p.fromClient = append(p.fromClient, b)
			p.lastSeen = time.Now()
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			p.toSrv <- delayed{b, time.Now().Add(p.delay)}
		}
	})
	p.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := back.ReadFromUDP(buf)
			if err != nil {
				close(p.toCli)
				return
			}
			b := bytes.Clone(buf[:n])
			p.mu.Lock()
			p.fromServer = append(p.fromServer, b)
			p.lastSeen = time.Now()
			p.mu.Unlock()
			p.toCli <- delayed{b, time.Now().Add(p.delay)}
		}
	})
	// Writers: one per direction, in order, each packet at its due time.
	p.wg.Go(func() {
		for d := range p.toSrv {
			time.Sleep(time.Until(d.due))
			back.WriteToUDP(d.b, saddr)
		}
	})
	p.wg.Go(func() {
		for d := range p.toCli {
			time.Sleep(time.Until(d.due))
			p.mu.Lock()
			to := p.client
			p.mu.Unlock()
			front.WriteToUDP(d.b, to)
		}
	})
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.front.LocalAddr().String() }

func (p *proxy) close() {
	p.front.Close()
	p.back.Close()
	p.wg.Wait()
}

// waitQuiet waits until no packet passed for d.
func (p *proxy) waitQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		since := time.Since(p.lastSeen)
		p.mu.Unlock()
		if since >= d {
			return
		}
		time.Sleep(d - since)
	}
	t.Fatal("the connection never went quiet")
}

// clientPackets returns how many packets came from the client, and the last one.
func (p *proxy) clientPackets() (int, []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.fromClient) == 0 {
		return 0, nil
	}
	return len(p.fromClient), p.fromClient[len(p.fromClient)-1]
}

// replayToClient sends the server's last packet to the client again, at once, and waits
// up to wait for the client to send a packet; it returns that packet, or nil.
func (p *proxy) replayToClient(t *testing.T, wait time.Duration) []byte {
	t.Helper()
	p.mu.Lock()
	n := len(p.fromClient)
	last := p.fromServer[len(p.fromServer)-1]
	to := p.client
	ch := p.changed
	p.mu.Unlock()
	if _, err := p.front.WriteToUDP(last, to); err != nil {
		t.Fatalf("replaying a server packet: %v", err)
	}
	timeout := time.After(wait)
	for {
		select {
		case <-ch:
		case <-timeout:
			return nil
		}
		p.mu.Lock()
		if len(p.fromClient) > n {
			b := p.fromClient[n]
			p.mu.Unlock()
			return b
		}
		ch = p.changed
		p.mu.Unlock()
	}
}

// hookLog records the hooks' calls, in order.
type hookLog struct {
	mu     sync.Mutex // guards calls
	calls  []string
	errs   []error
	called chan string
}

func newHookLog() *hookLog { return &hookLog{called: make(chan string, 16)} }

func (h *hookLog) config() *h3.Config {
	return &h3.Config{
		OnGoAway:     func() { h.add("goaway", nil) },
		OnPeerClose:  func(err error) { h.add("peer_close", err) },
		OnLocalClose: func(err error) { h.add("local_close", err) },
	}
}

func (h *hookLog) add(name string, err error) {
	h.mu.Lock()
	h.calls = append(h.calls, name)
	h.errs = append(h.errs, err)
	h.mu.Unlock()
	h.called <- name
}

// wait waits for the hook name to be called, and returns its error.
func (h *hookLog) wait(t *testing.T, name string) error {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		for i, c := range h.calls {
			if c == name {
				err := h.errs[i]
				h.mu.Unlock()
				return err
			}
		}
		h.mu.Unlock()
		select {
		case <-h.called:
		case <-timeout:
			t.Fatalf("%s was not called; calls: %v", name, h.list())
		}
	}
}

func (h *hookLog) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

// appError returns err as a *quic.ApplicationError, or fails the test.
func appError(t *testing.T, err error) *quic.ApplicationError {
	t.Helper()
	ae, ok := errors.AsType[*quic.ApplicationError](err)
	if !ok {
		t.Fatalf("got error %T %v, want a *quic.ApplicationError", err, err)
	}
	return ae
}
