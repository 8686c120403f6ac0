package h3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/endwell/endwell/internal/h3"
	"github.com/endwell/endwell/shutdown"
)

// graceful runs c's teardown gracefully, as endwell's engine does, and returns its record.
func graceful(c *h3.Conn, budget time.Duration) *shutdown.Record {
	return shutdown.Run(context.Background(), shutdown.Job{
		Layers: []shutdown.Layer{c.Layer()}, Mode: shutdown.Graceful, Reason: "test", Budget: budget,
	})
}

// abort runs c's teardown as an abort.
func abort(c *h3.Conn) *shutdown.Record {
	return shutdown.Run(context.Background(), shutdown.Job{
		Layers: []shutdown.Layer{c.Layer()}, Mode: shutdown.Abort, Reason: "test",
	})
}

func wantCloseCode(t *testing.T, c *h3.Conn, code uint64, sent bool) {
	t.Helper()
	if gotCode, gotSent := c.CloseCode(); gotCode != code || gotSent != sent {
		t.Errorf("CloseCode() = %#x, %v; want %#x, %v", gotCode, gotSent, code, sent)
	}
}

// wantConnClose checks that the server received exactly one CONNECTION_CLOSE from the
// client, of the application kind, with code.
func wantConnClose(t *testing.T, s *testServer, code uint64) {
	t.Helper()
	got := s.wire.wait(t, "connection_close")
	if !got.App || got.Code != code {
		t.Errorf("the server received %v, want CONNECTION_CLOSE(application, %#x)", got, code)
	}
}

func TestRoundTrip(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{maxStreams: 37})
	// With a tracer of the user's, quic-go's qlog events tell the server's stream limit.
	c := dial(t, s.addr(), &h3.Config{QUIC: &quic.Config{Tracer: newWireLog().tracer}})
	defer abort(c)

	resp, body := get(t, c, s.url("/hello"))
	if resp.Proto != "HTTP/3.0" || resp.ProtoMajor != 3 {
		t.Errorf("Proto = %q (%d), want HTTP/3.0 (3)", resp.Proto, resp.ProtoMajor)
	}
	if body != "hello, HTTP/3.0" {
		t.Errorf("body = %q, want %q", body, "hello, HTTP/3.0")
	}
	if resp.Request == nil || resp.Request.URL.String() != s.url("/hello") {
		t.Errorf("resp.Request is not the request sent")
	}
	if got := c.MaxStreams(); got != 37 {
		t.Errorf("MaxStreams() = %d, want 37 (the server's initial_max_streams_bidi)", got)
	}
	if got := c.InFlight(); got != 0 {
		t.Errorf("InFlight() after the body's end = %d, want 0", got)
	}
	if c.LocalAddr() == nil || c.RemoteAddr().String() != s.addr() {
		t.Errorf("RemoteAddr() = %v, want %s", c.RemoteAddr(), s.addr())
	}
	if _, sent := c.CloseCode(); sent {
		t.Errorf("CloseCode() says a CONNECTION_CLOSE was sent on an open connection")
	}

	// A request in flight is counted until its body ends.
	req, _ := http.NewRequest("GET", s.url("/slow"), nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	<-s.started
	if got := c.InFlight(); got != 1 {
		t.Errorf("InFlight() with a body open = %d, want 1", got)
	}
	s.unblock()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := c.InFlight(); got != 0 {
		t.Errorf("InFlight() after the body's end = %d, want 0", got)
	}
}

func TestMaxStreamsDefault(t *testing.T) {
	checkLeaks(t)
	// Without a tracer, endwell sets none (quic-go's qlog events cost a third of the
	// throughput): the server's limit is not known, and MaxStreams says the default.
	s := startServer(t, serverOptions{maxStreams: 37})
	c := dial(t, s.addr(), nil)
	defer abort(c)
	if got := c.MaxStreams(); got != h3.DefaultMaxStreams {
		t.Errorf("MaxStreams() = %d, want %d (DefaultMaxStreams)", got, h3.DefaultMaxStreams)
	}
}

// TestGracefulClosingPeriod: a graceful close sends CONNECTION_CLOSE(application,
// H3_NO_ERROR), answers a late packet of the peer with it again during the closing period,
// which lasts at least 3×PTO, and releases the socket after it, not before.
func TestGracefulClosingPeriod(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	const oneWay = 25 * time.Millisecond // RTT 50 ms: PTO > 51 ms, 3×PTO > 150 ms
	p := startProxy(t, s.addr(), oneWay)
	c := dial(t, p.addr(), nil)
	get(t, c, s.url("/hello"))
	p.waitQuiet(t, 4*oneWay)

	recCh := make(chan *shutdown.Record, 1)
	start := time.Now()
	go func() { recCh <- graceful(c, 2*time.Second) }()

	<-c.Done() // our CONNECTION_CLOSE is written
	wantConnClose(t, s, h3.CodeNoError)
	_, closePkt := p.clientPackets()
	if portFree(c.LocalAddr()) {
		t.Fatal("the socket was released before the closing period ended")
	}

	// A late packet from the server: quic-go answers the 1st, 2nd, 4th... packet after
	// its close, so a few replays get an answer whatever arrived in between.
	var answer []byte
	for i := 0; i < 4 && answer == nil; i++ {
		answer = p.replayToClient(t, 30*time.Millisecond)
	}
	select {
	case rec := <-recCh:
		t.Fatalf("the teardown ended (%v after %v) before the late packet was answered", rec.Outcome, time.Since(start))
	default:
	}
	if answer == nil {
		t.Fatal("a late packet during the closing period was not answered")
	}
	if !bytes.Equal(answer, closePkt) {
		t.Errorf("the answer to a late packet (%d bytes) is not the CONNECTION_CLOSE packet (%d bytes)", len(answer), len(closePkt))
	}

	rec := <-recCh
	if rec.Outcome == shutdown.TimedOut || rec.Outcome == shutdown.Failed || rec.Err != nil {
		t.Errorf("record: outcome %v, err %v; want neither timed out nor failed", rec.Outcome, rec.Err)
	}
	wantCloseCode(t, c, h3.CodeNoError, true)
	if got, min := c.ClosingPeriod(), 3*(2*oneWay+time.Millisecond); got < min {
		t.Errorf("ClosingPeriod() = %v, want at least 3×PTO > %v", got, min)
	}
	if !portFree(c.LocalAddr()) {
		t.Error("the UDP socket is still bound after the closing period")
	}
	if n := len(s.wire.all("connection_close")); n != 1 {
		// The answers to our replays were not forwarded to the server.
		t.Errorf("the server received %d CONNECTION_CLOSE frames, want 1", n)
	}
}

// TestAbort: an abort sends CONNECTION_CLOSE(application, H3_REQUEST_CANCELLED), one
// packet, and releases the socket at once.
func TestAbort(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	p := startProxy(t, s.addr(), 0)
	c := dial(t, p.addr(), nil)
	get(t, c, s.url("/hello"))
	p.waitQuiet(t, 50*time.Millisecond) // past any delayed ACK (max_ack_delay 25 ms)
	before, _ := p.clientPackets()

	start := time.Now()
	rec := abort(c)
	took := time.Since(start)
	if !portFree(c.LocalAddr()) {
		t.Error("the UDP socket is still bound after Abort returned")
	}
	if took > 100*time.Millisecond {
		t.Errorf("Abort took %v; it must not wait", took)
	}
	if rec.Outcome != shutdown.Aborted {
		t.Errorf("record outcome %v, want aborted", rec.Outcome)
	}
	wantConnClose(t, s, h3.CodeRequestCancelled)
	wantCloseCode(t, c, h3.CodeRequestCancelled, true)
	if got := c.ClosingPeriod(); got > 50*time.Millisecond {
		t.Errorf("ClosingPeriod() = %v, want none (a few µs)", got)
	}
	if after, _ := p.clientPackets(); after != before+1 {
		t.Errorf("the client sent %d packets to abort, want 1 (a rapid close)", after-before)
	}
}

// TestAbortWhileGraceful: the budget's backstop aborts a graceful teardown that waits for
// a request: CONNECTION_CLOSE(H3_REQUEST_CANCELLED) and the socket released at the budget.
func TestAbortWhileGraceful(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	c := dial(t, s.addr(), nil)
	req, _ := http.NewRequest("GET", s.url("/block"), nil)
	errCh := make(chan error, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		errCh <- err
	}()
	<-s.started
	rec := graceful(c, 150*time.Millisecond)
	if rec.Outcome != shutdown.TimedOut || !errors.Is(rec.Err, shutdown.ErrBudget) {
		t.Errorf("record: outcome %v, err %v; want timed_out, the budget", rec.Outcome, rec.Err)
	}
	if rec.Duration > time.Second {
		t.Errorf("the teardown took %v, want about its budget (150ms)", rec.Duration)
	}
	wantConnClose(t, s, h3.CodeRequestCancelled)
	wantCloseCode(t, c, h3.CodeRequestCancelled, true)
	if err := <-errCh; err == nil {
		t.Error("the request in flight succeeded after its connection was aborted")
	}
	if !portFree(c.LocalAddr()) {
		t.Error("the UDP socket is still bound after the teardown")
	}
}

// TestGracefulWaitsForInFlight: a graceful close takes no new request, lets the one in
// flight finish, then says goodbye.
func TestGracefulWaitsForInFlight(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	c := dial(t, s.addr(), nil)
	req, _ := http.NewRequest("GET", s.url("/block"), nil)
	type result struct {
		body string
		err  error
	}
	resCh := make(chan result, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			resCh <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resCh <- result{string(b), err}
	}()
	<-s.started

	recCh := make(chan *shutdown.Record, 1)
	go func() { recCh <- graceful(c, 5*time.Second) }()
	// The teardown has begun once new requests are refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		req2, _ := http.NewRequest("GET", s.url("/hello"), nil)
		resp2, err := c.RoundTrip(req2)
		if err == nil {
			io.Copy(io.Discard, resp2.Body)
			resp2.Body.Close()
		}
		if errors.Is(err, h3.ErrConnClosing) {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("ErrConnClosing does not unwrap to net.ErrClosed")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new request during a graceful close: got %v, want ErrConnClosing", err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-c.Done():
		t.Fatal("the connection was closed with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	s.unblock()
	res := <-resCh
	if res.err != nil || res.body != "released" {
		t.Errorf("the request in flight: got %q, %v; want %q", res.body, res.err, "released")
	}
	rec := <-recCh
	if rec.Outcome == shutdown.TimedOut || rec.Err != nil {
		t.Errorf("record: outcome %v, err %v", rec.Outcome, rec.Err)
	}
	wantConnClose(t, s, h3.CodeNoError)
	wantCloseCode(t, c, h3.CodeNoError, true)
}

// TestStreamAbort: a body closed before its end, or a cancelled request context, puts
// STOP_SENDING and RESET_STREAM with H3_REQUEST_CANCELLED on the wire; the connection
// serves the next request.
func TestStreamAbort(t *testing.T) {
	tests := []struct {
		name string
		path string
		// abort ends the exchange early, given the response (nil if RoundTrip has not
		// returned) and the request's cancel func.
		abort     func(resp *http.Response, cancel context.CancelFunc)
		wantReset bool // RESET_STREAM besides STOP_SENDING
	}{
		{
			name:      "body closed early",
			path:      "/slow",
			abort:     func(resp *http.Response, _ context.CancelFunc) { resp.Body.Close() },
			wantReset: true,
		},
		{
			name:      "context cancelled while reading the body",
			path:      "/slow",
			abort:     func(_ *http.Response, cancel context.CancelFunc) { cancel() },
			wantReset: true,
		},
		{
			name:      "context cancelled before the response",
			path:      "/block",
			abort:     func(_ *http.Response, cancel context.CancelFunc) { cancel() },
			wantReset: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := startServer(t, serverOptions{})
			hooks := newHookLog()
			c := dial(t, s.addr(), hooks.config())
			defer abort(c)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", s.url(tt.path), nil)
			if tt.path == "/block" {
				errCh := make(chan error, 1)
				go func() {
					_, err := c.RoundTrip(req)
					errCh <- err
				}()
				<-s.started
				tt.abort(nil, cancel)
				if err := <-errCh; !errors.Is(err, context.Canceled) {
					t.Errorf("RoundTrip: got %v, want context.Canceled", err)
				}
			} else {
				resp, err := c.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				<-s.started
				if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
					t.Fatal(err)
				}
				tt.abort(resp, cancel)
				resp.Body.Close()
			}

			stop := s.wire.wait(t, "stop_sending")
			if stop.Code != h3.CodeRequestCancelled || stop.Stream != 0 {
				t.Errorf("the server received %v, want STOP_SENDING(stream 0, 0x10c)", stop)
			}
			if tt.wantReset {
				reset := s.wire.wait(t, "reset_stream")
				if reset.Code != h3.CodeRequestCancelled || reset.Stream != 0 {
					t.Errorf("the server received %v, want RESET_STREAM(stream 0, 0x10c)", reset)
				}
			}
			if err := <-s.handlerDone; !errors.Is(err, context.Canceled) {
				t.Errorf("the handler's context: got %v, want context.Canceled", err)
			}
			waitInFlight(t, c, 0)

			// The connection lives on.
			if _, body := get(t, c, s.url("/hello")); body != "hello, HTTP/3.0" {
				t.Errorf("the next request: body %q", body)
			}
			select {
			case <-c.Done():
				t.Error("the connection was closed by a stream abort")
			default:
			}
			if n := len(s.wire.all("connection_close")); n != 0 {
				t.Errorf("the server received %d CONNECTION_CLOSE frames, want 0", n)
			}
			if calls := hooks.list(); len(calls) != 0 {
				t.Errorf("hooks called: %v, want none", calls)
			}
		})
	}
}

func waitInFlight(t *testing.T, c *h3.Conn, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.InFlight() != want {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight() = %d, want %d", c.InFlight(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServerGoAway: the server's GOAWAY is reported first (OnGoAway); the connection
// takes no new request and lets the one in flight finish. Then either quic-go closes it
// with H3_NO_ERROR on its own (OnLocalClose) and the layer, run after, waits out the
// closing period and releases the socket; or the owner ran the layer at the GOAWAY, and
// the layer closes it the same way once the request is done.
func TestServerGoAway(t *testing.T) {
	tests := []struct {
		name     string
		inFlight bool // a request is in flight when the GOAWAY arrives
		// teardownAtGoAway: the owner runs the layer as soon as OnGoAway is called,
		// rather than after OnLocalClose.
		teardownAtGoAway bool
		wantHooks        []string
	}{
		{name: "idle", wantHooks: []string{"goaway", "local_close"}},
		{name: "request in flight", inFlight: true, wantHooks: []string{"goaway", "local_close"}},
		{name: "teardown at GOAWAY, request in flight", inFlight: true, teardownAtGoAway: true, wantHooks: []string{"goaway"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := startServer(t, serverOptions{})
			hooks := newHookLog()
			c := dial(t, s.addr(), hooks.config())
			get(t, c, s.url("/hello"))

			var resCh chan string
			if tt.inFlight {
				resCh = make(chan string, 1)
				go func() {
					req, _ := http.NewRequest("GET", s.url("/block"), nil)
					resp, err := c.RoundTrip(req)
					if err != nil {
						resCh <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					resCh <- string(b)
				}()
				<-s.started
			}
			shutdownDone := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				shutdownDone <- s.srv.Shutdown(ctx)
			}()

			hooks.wait(t, "goaway")
			if !c.GoAwayReceived() {
				t.Error("GoAwayReceived() = false after OnGoAway")
			}
			var recCh chan *shutdown.Record
			if tt.teardownAtGoAway {
				recCh = make(chan *shutdown.Record, 1)
				go func() { recCh <- graceful(c, 2*time.Second) }()
			}
			req, _ := http.NewRequest("GET", s.url("/hello"), nil)
			if _, err := c.RoundTrip(req); !errors.Is(err, h3.ErrConnClosing) {
				t.Errorf("a new request after GOAWAY: got %v, want ErrConnClosing", err)
			}
			if tt.inFlight {
				select {
				case <-c.Done():
					t.Error("the connection was closed with a request in flight")
				case <-time.After(20 * time.Millisecond):
				}
				s.unblock()
				if got := <-resCh; got != "released" {
					t.Errorf("the request in flight: got %q, want %q", got, "released")
				}
			}

			var rec *shutdown.Record
			if tt.teardownAtGoAway {
				rec = <-recCh
			} else {
				err := hooks.wait(t, "local_close")
				if ae := appError(t, err); uint64(ae.ErrorCode) != h3.CodeNoError || ae.Remote {
					t.Errorf("OnLocalClose(%v), want our H3_NO_ERROR", err)
				}
				if portFree(c.LocalAddr()) {
					t.Error("the socket was released before the layer ran")
				}
				rec = graceful(c, 2*time.Second)
			}
			if rec.Outcome == shutdown.TimedOut || rec.Err != nil {
				t.Errorf("record: outcome %v, err %v", rec.Outcome, rec.Err)
			}
			if got := hooks.list(); !slices.Equal(got, tt.wantHooks) {
				t.Errorf("hooks called: %v, want %v", got, tt.wantHooks)
			}
			wantConnClose(t, s, h3.CodeNoError)
			wantCloseCode(t, c, h3.CodeNoError, true)
			if c.ClosingPeriod() < 3*time.Millisecond {
				t.Errorf("ClosingPeriod() = %v, want at least 3×PTO (≥ 3 ms)", c.ClosingPeriod())
			}
			if !portFree(c.LocalAddr()) {
				t.Error("the UDP socket is still bound after the teardown")
			}
			if err := <-shutdownDone; err != nil {
				t.Errorf("the server's Shutdown: %v", err)
			}
		})
	}
}

// TestPeerClose: the server's CONNECTION_CLOSE is reported (OnPeerClose, with its code);
// the layer sends nothing back and releases the socket at once.
func TestPeerClose(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	hooks := newHookLog()
	c := dial(t, s.addr(), hooks.config())
	get(t, c, s.url("/hello"))
	sc := s.conn()
	sc.CloseWithError(0x102, "server going away") // H3_INTERNAL_ERROR

	err := hooks.wait(t, "peer_close")
	if ae := appError(t, err); uint64(ae.ErrorCode) != 0x102 || !ae.Remote {
		t.Errorf("OnPeerClose(%v), want the server's 0x102", err)
	}
	if portFree(c.LocalAddr()) {
		t.Error("the socket was released before the layer ran")
	}
	rec := graceful(c, 2*time.Second)
	if rec.Err != nil || rec.Duration > 100*time.Millisecond {
		t.Errorf("record: err %v after %v; want a prompt ending", rec.Err, rec.Duration)
	}
	wantCloseCode(t, c, 0, false)
	if c.ClosingPeriod() != 0 {
		t.Errorf("ClosingPeriod() = %v, want 0 (draining: nothing sent)", c.ClosingPeriod())
	}
	if !portFree(c.LocalAddr()) {
		t.Error("the UDP socket is still bound after the teardown")
	}
	time.Sleep(20 * time.Millisecond) // anything we sent would have arrived by now
	if got := s.wire.all("connection_close"); len(got) != 0 {
		t.Errorf("the server received %v after its own close, want nothing", got)
	}
	if calls := hooks.list(); len(calls) != 1 {
		t.Errorf("hooks called: %v, want [peer_close]", calls)
	}
}

// TestIdleTimeout: QUIC's idle timeout ends a connection silently: it is reported as
// OnPeerClose with a *quic.IdleTimeoutError, and the layer sends nothing.
func TestIdleTimeout(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	hooks := newHookLog()
	cfg := hooks.config()
	cfg.QUIC = &quic.Config{MaxIdleTimeout: 200 * time.Millisecond, KeepAlivePeriod: -1}
	c := dial(t, s.addr(), cfg)
	get(t, c, s.url("/hello"))

	err := hooks.wait(t, "peer_close")
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); !ok {
		t.Errorf("OnPeerClose(%T %v), want a *quic.IdleTimeoutError", err, err)
	}
	graceful(c, 2*time.Second)
	wantCloseCode(t, c, 0, false)
	if got := s.wire.all("connection_close"); len(got) != 0 {
		t.Errorf("the server received %v, want nothing", got)
	}
}

// TestKeepAlive: by default an idle connection is kept alive past the server's idle
// timeout, so that the pool, not a silent QUIC idle timeout, ends it.
func TestKeepAlive(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	hooks := newHookLog()
	cfg := hooks.config()
	// The server's idle timeout is 30 s: offer 300 ms instead, so that the negotiated one
	// is short; keep-alives are sent at half of it.
	cfg.QUIC = &quic.Config{MaxIdleTimeout: 300 * time.Millisecond}
	c := dial(t, s.addr(), cfg)
	get(t, c, s.url("/hello"))
	time.Sleep(time.Second)
	select {
	case <-c.Done():
		t.Fatalf("the idle connection died: %v", hooks.list())
	default:
	}
	get(t, c, s.url("/hello"))
	graceful(c, 2*time.Second)
	wantConnClose(t, s, h3.CodeNoError)
}

// TestDialFailure: a dial that fails (nothing answers; ctx ends) releases its socket and
// goroutines.
func TestDialFailure(t *testing.T) {
	checkLeaks(t)
	// A bound UDP socket that never answers.
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = h3.Dial(ctx, silent.LocalAddr().String(), &h3.Config{TLSClientConfig: clientTLS(t)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial: got %v, want context.DeadlineExceeded", err)
	}
}

// TestDialBadCertificate: a handshake failure is an error from Dial, and nothing leaks.
func TestDialBadCertificate(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := h3.Dial(ctx, s.addr(), nil) // the system roots don't trust the test cert
	if err == nil {
		t.Fatal("Dial succeeded with an untrusted certificate")
	}
}
