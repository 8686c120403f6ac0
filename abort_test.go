package endwell_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// Issue 4: aborts never send close_notify. Every test here drives an endwell Transport
// against a witness server and asserts, from what the witness saw on the wire, how the
// client ended the connection: a transfer that did not finish ends without close_notify
// (FIN or RST), and a complete one whose connection is not reused ends with close_notify,
// then FIN (curl 8.9's rule). Each also asserts the error the caller sees, that the call
// returns at once, and that no goroutine or file descriptor leaks.

// abortFast bounds calls that must return at once: generous, since test machines are noisy,
// yet far below every budget and timeout at play (seconds).
const abortFast = 500 * time.Millisecond

// abortTest is one test's world: a witness server, a transport pointed at it, leak checks.
type abortTest struct {
	t  *testing.T
	s  *witness.Server
	tr *endwell.Transport
}

// newAbortTest starts a witness with opts and a Transport for it, configured by mod. At
// the end of the test it closes both, then checks that no goroutine and no file
// descriptor was left behind.
func newAbortTest(t *testing.T, opts witness.Options, mod func(*endwell.Transport)) *abortTest {
	t.Helper()
	checkLeaks(t) // first, so that its cleanup runs last
	s := witness.New(opts)
	if err := s.Start(); err != nil {
		t.Fatalf("witness Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	tr := &endwell.Transport{}
	if opts.TLS {
		tr.TLSClientConfig = s.ClientTLSConfig()
	}
	if mod != nil {
		mod(tr)
	}
	t.Cleanup(func() { tr.Close() })
	return &abortTest{t: t, s: s, tr: tr}
}

// get sends a GET for path under ctx (with trace, if not nil) straight to the transport.
func (at *abortTest) get(ctx context.Context, path string, trace *httptrace.ClientTrace) (*http.Response, error) {
	at.t.Helper()
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, at.s.URL()+path, nil)
	if err != nil {
		at.t.Fatal(err)
	}
	return at.tr.RoundTrip(req)
}

// waitConns waits for n connections to end on the witness and returns their reports.
func (at *abortTest) waitConns(n int) []witness.ConnReport {
	at.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reps, err := at.s.WaitConns(ctx, n)
	if err != nil {
		at.t.Fatalf("witness: %d connections ended, want %d: %v; reports: %v", len(reps), n, err, at.s.Reports())
	}
	return reps
}

// wantNoCloseNotify asserts the client hung up without close_notify: FIN or RST.
func wantNoCloseNotify(t *testing.T, r witness.ConnReport) {
	t.Helper()
	if r.CloseNotifyReceived || r.ClientEnd == witness.EndOpen {
		t.Errorf("client ending: got %q, want FIN or RST, no close_notify (%v)", r.ClientEnding(), r)
	}
}

// wantCloseNotifyFIN asserts the client said goodbye: close_notify (over TLS), then FIN.
func wantCloseNotifyFIN(t *testing.T, r witness.ConnReport) {
	t.Helper()
	want := "close_notify+FIN"
	if !r.TLS {
		want = "FIN"
	}
	if got := r.ClientEnding(); got != want {
		t.Errorf("client ending: got %q, want %q (%v)", got, want, r)
	}
}

// wantQuick asserts that a call that must not block took less than abortFast.
func wantQuick(t *testing.T, what string, d time.Duration) {
	t.Helper()
	if d > abortFast {
		t.Errorf("%s took %v, want < %v", what, d, abortFast)
	}
}

// overTLSAndTCP runs f over TLS and over plain TCP.
func overTLSAndTCP(t *testing.T, f func(t *testing.T, useTLS bool)) {
	for _, useTLS := range []bool{true, false} {
		name := "tls"
		if !useTLS {
			name = "tcp"
		}
		t.Run(name, func(t *testing.T) { f(t, useTLS) })
	}
}

// bigBodyHandler is a handler that declares a body of n bytes and writes it all, in pieces,
// until the client goes.
func bigBodyHandler(n int) witness.Handler {
	return func(c *witness.Conn, r *http.Request) witness.Action {
		h := http.Header{"Content-Length": {strconv.Itoa(n)}, "X-Conn-Id": {strconv.FormatInt(c.ID(), 10)}}
		if err := c.WriteHead(http.StatusOK, h); err != nil {
			return witness.CloseFIN
		}
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := c.Write(chunk[:k]); err != nil {
				return witness.CloseFIN
			}
			n -= k
		}
		return witness.KeepAlive
	}
}

// stallHandler is a handler that reports each request on got, then sends nothing until
// the client goes.
func stallHandler(got chan<- struct{}) witness.Handler {
	return func(c *witness.Conn, r *http.Request) witness.Action {
		select {
		case got <- struct{}{}:
		default:
		}
		select {
		case <-c.ClientDone():
		case <-c.Context().Done():
		}
		return witness.CloseFIN
	}
}

// keepAliveHandler answers 200 "ok\n" and leaves the connection open whatever the request
// said, so that the client is always the one to end it: a witness that closed first
// would make the client's close_notify optional (curl's rule, see shutdown.TLS).
func keepAliveHandler(c *witness.Conn, r *http.Request) witness.Action {
	c.Respond(http.StatusOK, http.Header{"X-Conn-Id": {strconv.FormatInt(c.ID(), 10)}}, "ok\n")
	return witness.KeepAlive
}

// TestAbortBodyCloseLargeRemainder: closing a body whose remainder is over MaxDrainBytes
// aborts at once: no close_notify, and Read after Close says ErrBodyClosed, never EOF.
func TestAbortBodyCloseLargeRemainder(t *testing.T) {
	overTLSAndTCP(t, func(t *testing.T, useTLS bool) {
		at := newAbortTest(t, witness.Options{TLS: useTLS, Handler: bigBodyHandler(10 << 20)}, nil)
		resp, err := at.get(context.Background(), "/big", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatalf("Read: %v", err)
		}
		start := time.Now()
		if err := resp.Body.Close(); err != nil {
			t.Errorf("Close: got %v, want nil", err)
		}
		wantQuick(t, "Body.Close", time.Since(start))
		if n, err := resp.Body.Read(make([]byte, 10)); n != 0 || !errors.Is(err, endwell.ErrBodyClosed) {
			t.Errorf("Read after Close: got %d, %v, want 0, %v", n, err, endwell.ErrBodyClosed)
		}
		wantNoCloseNotify(t, at.waitConns(1)[0])
	})
}

// TestAbortBodyCloseSmallRemainderIsDrained: closing a body whose small remainder arrives
// at once drains it in the background and reuses the connection.
func TestAbortBodyCloseSmallRemainderIsDrained(t *testing.T) {
	body := string(bytes.Repeat([]byte("y"), 64<<10)) // under MaxDrainBytes (256 KiB)
	tests := []struct {
		name    string
		handler witness.Handler
	}{
		{"content-length", func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, nil, body)
			return witness.KeepAlive
		}},
		{"chunked", func(c *witness.Conn, r *http.Request) witness.Action {
			c.RespondChunked(http.StatusOK, nil, []string{body[:1000], body[1000:]}, nil)
			return witness.KeepAlive
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := newAbortTest(t, witness.Options{TLS: true, Handler: tt.handler}, nil)
			put := make(chan error, 1)
			resp, err := at.get(context.Background(), "/1", &httptrace.ClientTrace{
				PutIdleConn: func(err error) { put <- err },
			})
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
				t.Fatalf("Read: %v", err)
			}
			start := time.Now()
			resp.Body.Close()
			wantQuick(t, "Body.Close", time.Since(start))
			if n, err := resp.Body.Read(make([]byte, 10)); n != 0 || !errors.Is(err, endwell.ErrBodyClosed) {
				t.Errorf("Read after Close: got %d, %v, want 0, %v", n, err, endwell.ErrBodyClosed)
			}
			// The drain runs in the background; it hands the connection back when done.
			select {
			case err := <-put:
				if err != nil {
					t.Fatalf("PutIdleConn: got %v, want nil (drained and reused)", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("PutIdleConn: not called within 2s of Close")
			}

			var reused bool
			resp, err = at.get(context.Background(), "/2", &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
			})
			if err != nil {
				t.Fatalf("second RoundTrip: %v", err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("second body: %v", err)
			}
			resp.Body.Close()
			if !reused {
				t.Errorf("second request: GotConnInfo.Reused: got false, want true")
			}
			at.tr.CloseIdleConnections()
			r := at.waitConns(1)[0]
			if r.Requests != 2 {
				t.Errorf("requests on the connection: got %d, want 2", r.Requests)
			}
			if reps := at.s.Reports(); len(reps) != 1 {
				t.Errorf("connections: got %d, want 1: %v", len(reps), reps)
			}
			wantCloseNotifyFIN(t, r)
		})
	}
}

// TestAbortBodyCloseSlowRemainder: a small remainder that does not arrive within
// MaxDrainTime aborts the connection, without close_notify.
func TestAbortBodyCloseSlowRemainder(t *testing.T) {
	const n = 1000
	at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.WriteHead(http.StatusOK, http.Header{"Content-Length": {strconv.Itoa(n)}})
		c.Drip(bytes.Repeat([]byte("z"), n), 10, 50*time.Millisecond) // 5 s in all
		return witness.CloseFIN
	}}, func(tr *endwell.Transport) { tr.MaxDrainTime = 100 * time.Millisecond })
	put := make(chan error, 1)
	endwell.SetOnRelease(at.tr, func(err error) { put <- err })
	resp, err := at.get(context.Background(), "/slow", nil)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatalf("Read: %v", err)
	}
	start := time.Now()
	resp.Body.Close()
	wantQuick(t, "Body.Close", time.Since(start))
	if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, endwell.ErrBodyClosed) {
		t.Errorf("Read after Close: got %v, want %v", err, endwell.ErrBodyClosed)
	}
	select {
	case err := <-put:
		if err == nil {
			t.Errorf("PutIdleConn: got nil, want an error (not reused)")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("PutIdleConn: not called within 2s of Close")
	}
	r := at.waitConns(1)[0]
	wantNoCloseNotify(t, r)
	if d := r.ClientEndAt.Sub(start); d > 100*time.Millisecond+abortFast {
		t.Errorf("connection ended %v after Close, want about MaxDrainTime (100ms)", d)
	}
}

// TestAbortContext: a request whose context ends, before the headers or during the body,
// fails with the context's error and aborts its connection at once.
func TestAbortContext(t *testing.T) {
	t.Run("canceled before headers", func(t *testing.T) {
		overTLSAndTCP(t, func(t *testing.T, useTLS bool) {
			got := make(chan struct{}, 1)
			at := newAbortTest(t, witness.Options{TLS: useTLS, Handler: stallHandler(got)}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var canceled time.Time
			go func() {
				<-got
				canceled = time.Now()
				cancel()
			}()
			_, err := at.get(ctx, "/stall", nil)
			wantQuick(t, "RoundTrip after cancel", time.Since(canceled))
			if !errors.Is(err, context.Canceled) {
				t.Errorf("RoundTrip: got %v, want %v", err, context.Canceled)
			}
			wantNoCloseNotify(t, at.waitConns(1)[0])
		})
	})

	t.Run("canceled mid-body", func(t *testing.T) {
		at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.WriteHead(http.StatusOK, http.Header{"Content-Length": {"100000"}})
			c.Drip(bytes.Repeat([]byte("d"), 100000), 100, 10*time.Millisecond)
			return witness.CloseFIN
		}}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := at.get(ctx, "/drip", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 200)); err != nil {
			t.Fatalf("Read: %v", err)
		}
		start := time.Now()
		cancel()
		_, err = io.Copy(io.Discard, resp.Body)
		wantQuick(t, "Read after cancel", time.Since(start))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read: got %v, want %v", err, context.Canceled)
		}
		wantNoCloseNotify(t, at.waitConns(1)[0])
	})

	t.Run("deadline", func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		at := newAbortTest(t, witness.Options{TLS: true, Handler: stallHandler(nil)}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		_, err := at.get(ctx, "/stall", nil)
		if d := time.Since(start); d > timeout+abortFast {
			t.Errorf("RoundTrip took %v, want about %v", d, timeout)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RoundTrip: got %v, want %v", err, context.DeadlineExceeded)
		}
		wantNoCloseNotify(t, at.waitConns(1)[0])
	})
}

// TestAbortResponseHeaderTimeout: ResponseHeaderTimeout fails the request with
// ErrResponseHeaderTimeout, a net.Error that is a timeout, and aborts the connection.
func TestAbortResponseHeaderTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	at := newAbortTest(t, witness.Options{TLS: true, Handler: stallHandler(nil)},
		func(tr *endwell.Transport) { tr.ResponseHeaderTimeout = timeout })
	start := time.Now()
	_, err := at.get(context.Background(), "/stall", nil)
	if d := time.Since(start); d > timeout+abortFast {
		t.Errorf("RoundTrip took %v, want about %v", d, timeout)
	}
	if !errors.Is(err, endwell.ErrResponseHeaderTimeout) {
		t.Errorf("RoundTrip: got %v, want %v", err, endwell.ErrResponseHeaderTimeout)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("RoundTrip: got %v, want a net.Error with Timeout() true", err)
	}
	wantNoCloseNotify(t, at.waitConns(1)[0])
}

// TestAbortWriteError: a server that resets the connection while a large request body is
// being written fails the request at once, and the client writes no close_notify.
func TestAbortWriteError(t *testing.T) {
	at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		io.ReadFull(r.Body, make([]byte, 1<<10))
		return witness.CloseRST
	}}, nil)
	const size = 64 << 20
	req, err := http.NewRequest(http.MethodPost, at.s.URL()+"/upload", io.LimitReader(zeroReader{}, size))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	start := time.Now()
	resp, err := at.tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("RoundTrip: got %v, want an error", resp.Status)
	}
	wantQuick(t, "RoundTrip after the server's reset", time.Since(start))
	var pe *endwell.ProtocolError
	if errors.As(err, &pe) || errors.Is(err, endwell.ErrNotSent) {
		t.Errorf("RoundTrip: got %v, want an I/O error", err)
	}
	t.Logf("RoundTrip: %v", err)
	// Not WaitConns: the witness's reader may be blocked on its full inbox (the handler
	// stopped reading the body), and then its report only becomes final at ConnTimeout.
	// Once the server has reset, nothing more from the client can reach it anyway.
	var r witness.ConnReport
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if reps := at.s.Reports(); len(reps) == 1 && reps[0].ServerSentRST {
			r = reps[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness: got %v, want one connection the server reset", at.s.Reports())
		}
	}
	if r.CloseNotifyReceived {
		t.Errorf("client ending: got %q, want no close_notify (%v)", r.ClientEnding(), r)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestAbortTruncatedResponse: a server that declares Content-Length N and closes after
// fewer bytes, with or without its close_notify, gets no close_notify back: the body's
// Read says io.ErrUnexpectedEOF and the connection is aborted.
func TestAbortTruncatedResponse(t *testing.T) {
	tests := []struct {
		name   string
		tls    bool
		action witness.Action
	}{
		{"tls, server FIN", true, witness.CloseFIN},
		{"tls, server close_notify+FIN", true, witness.CloseGraceful},
		{"tcp, server FIN", false, witness.CloseFIN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := newAbortTest(t, witness.Options{TLS: tt.tls, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.WriteHead(http.StatusOK, http.Header{"Content-Length": {"1000"}})
				c.Write(bytes.Repeat([]byte("t"), 500))
				return tt.action
			}}, nil)
			resp, err := at.get(context.Background(), "/truncated", nil)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			if n != 500 || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Read: got %d bytes, %v, want 500 bytes, %v", n, err, io.ErrUnexpectedEOF)
			}
			resp.Body.Close()
			wantNoCloseNotify(t, at.waitConns(1)[0])
		})
	}
}

// TestGracefulEndings: a complete transfer whose connection is not reused ends with
// close_notify, then FIN; over plain TCP, with FIN.
func TestGracefulEndings(t *testing.T) {
	// getAll sends a GET and reads its body to the end.
	getAll := func(t *testing.T, at *abortTest) {
		t.Helper()
		resp, err := at.get(context.Background(), "/", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("Read: %v", err)
		}
		if err := resp.Body.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	t.Run("CloseIdleConnections", func(t *testing.T) {
		overTLSAndTCP(t, func(t *testing.T, useTLS bool) {
			at := newAbortTest(t, witness.Options{TLS: useTLS, Handler: keepAliveHandler}, nil)
			getAll(t, at)
			start := time.Now()
			at.tr.CloseIdleConnections()
			wantQuick(t, "CloseIdleConnections", time.Since(start))
			wantCloseNotifyFIN(t, at.waitConns(1)[0])
		})
	})

	t.Run("server Connection: close", func(t *testing.T) {
		at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, http.Header{"Connection": {"close"}}, "bye\n")
			return witness.KeepAlive // the client closes first
		}}, nil)
		getAll(t, at)
		wantCloseNotifyFIN(t, at.waitConns(1)[0])
	})

	t.Run("DisableKeepAlives", func(t *testing.T) {
		overTLSAndTCP(t, func(t *testing.T, useTLS bool) {
			at := newAbortTest(t, witness.Options{TLS: useTLS, Handler: keepAliveHandler},
				func(tr *endwell.Transport) { tr.DisableKeepAlives = true })
			getAll(t, at)
			wantCloseNotifyFIN(t, at.waitConns(1)[0])
		})
	})

	t.Run("Shutdown with idle connections", func(t *testing.T) {
		// Two requests held until both arrived: two connections.
		var arrived sync.WaitGroup
		arrived.Add(2)
		at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			arrived.Done()
			arrived.Wait()
			return keepAliveHandler(c, r)
		}}, nil)
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for range 2 {
			wg.Go(func() {
				resp, err := at.get(context.Background(), "/", nil)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				errs <- err
			})
		}
		wg.Wait()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("GET: %v", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := at.tr.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: got %v, want nil", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Shutdown took %v, want less than the budget (2s)", d)
		}
		for _, r := range at.waitConns(2) {
			wantCloseNotifyFIN(t, r)
		}
	})

	t.Run("Shutdown with a request in flight", func(t *testing.T) {
		release := make(chan struct{})
		at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			if r.URL.Path != "/inflight" {
				return keepAliveHandler(c, r)
			}
			c.WriteHead(http.StatusOK, http.Header{"Content-Length": {"8"}, "X-Conn-Id": {strconv.FormatInt(c.ID(), 10)}})
			c.Write([]byte("half"))
			select {
			case <-release:
			case <-c.Context().Done():
				return witness.CloseFIN
			}
			c.Write([]byte("done"))
			return witness.KeepAlive
		}}, nil)
		resp, err := at.get(context.Background(), "/inflight", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownErr := make(chan error, 1)
		go func() { shutdownErr <- at.tr.Shutdown(ctx) }()
		// Once Shutdown has begun, new requests fail with ErrShutdown. (Those made before
		// it began dial connections of their own, which it closes gracefully too.)
		for deadline := time.Now().Add(2 * time.Second); ; {
			req, _ := http.NewRequest(http.MethodGet, at.s.URL()+"/late", nil)
			resp, err := at.tr.RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if errors.Is(err, endwell.ErrShutdown) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("RoundTrip during Shutdown: got %v, want %v", err, endwell.ErrShutdown)
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case err := <-shutdownErr:
			t.Fatalf("Shutdown returned %v with a response still in flight", err)
		default:
		}
		close(release)
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "halfdone" {
			t.Errorf("body: got %q, %v, want %q, nil", b, err, "halfdone")
		}
		resp.Body.Close()
		select {
		case err := <-shutdownErr:
			if err != nil {
				t.Errorf("Shutdown: got %v, want nil", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Shutdown did not return after the in-flight response completed")
		}
		for _, r := range at.waitConns(len(at.s.Reports())) {
			if strconv.FormatInt(r.ID, 10) == resp.Header.Get("X-Conn-Id") {
				wantCloseNotifyFIN(t, r)
			}
		}
	})
}

// TestAbortTransportClose: Close aborts the connections in use, without close_notify,
// and their requests fail with ErrClosed.
func TestAbortTransportClose(t *testing.T) {
	t.Run("before headers", func(t *testing.T) {
		got := make(chan struct{}, 1)
		at := newAbortTest(t, witness.Options{TLS: true, Handler: stallHandler(got)}, nil)
		rtErr := make(chan error, 1)
		go func() {
			resp, err := at.get(context.Background(), "/stall", nil)
			if err == nil {
				resp.Body.Close()
			}
			rtErr <- err
		}()
		<-got
		start := time.Now()
		if err := at.tr.Close(); err != nil {
			t.Errorf("Close: got %v, want nil", err)
		}
		wantQuick(t, "Transport.Close", time.Since(start))
		select {
		case err := <-rtErr:
			wantQuick(t, "RoundTrip after Close", time.Since(start))
			if !errors.Is(err, endwell.ErrClosed) {
				t.Errorf("RoundTrip: got %v, want %v", err, endwell.ErrClosed)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("RoundTrip did not return after Close")
		}
		wantNoCloseNotify(t, at.waitConns(1)[0])
	})

	t.Run("mid-body, with an idle connection", func(t *testing.T) {
		at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			if r.URL.Path == "/idle" {
				return keepAliveHandler(c, r)
			}
			return bigBodyHandler(10<<20)(c, r)
		}}, nil)
		idle, err := at.get(context.Background(), "/idle", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		io.Copy(io.Discard, idle.Body)
		idle.Body.Close()
		// The idle connection is taken by this request: make a second one busy.
		resp, err := at.get(context.Background(), "/big", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatalf("Read: %v", err)
		}
		resp2, err := at.get(context.Background(), "/idle", nil)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		io.Copy(io.Discard, resp2.Body)
		resp2.Body.Close()

		start := time.Now()
		at.tr.Close()
		wantQuick(t, "Transport.Close", time.Since(start))
		if _, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, endwell.ErrClosed) {
			t.Errorf("Read after Close: got %v, want %v", err, endwell.ErrClosed)
		}
		for _, r := range at.waitConns(2) {
			wantNoCloseNotify(t, r)
		}
	})
}

// TestAbortRaceCancelAtEOF races a context's cancellation with the end of the body (its
// EOF, or its Close) many times. Whichever wins, a connection whose transfer the client
// saw fail never ends with close_notify, and is never reused.
func TestAbortRaceCancelAtEOF(t *testing.T) {
	tests := []struct {
		name      string
		keepAlive bool
	}{
		{"keep-alive", true},
		{"DisableKeepAlives", false},
	}
	const iterations = 100 // per case
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := string(bytes.Repeat([]byte("r"), 2000))
			at := newAbortTest(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.Respond(http.StatusOK, http.Header{"X-Conn-Id": {strconv.FormatInt(c.ID(), 10)}}, body)
				return witness.KeepAlive
			}}, func(tr *endwell.Transport) { tr.DisableKeepAlives = !tt.keepAlive })

			failed := make(map[string]string) // witness connection ID -> what failed
			for i := range iterations {
				ctx, cancel := context.WithCancel(context.Background())
				put := make(chan error, 1)
				endwell.SetOnRelease(at.tr, func(err error) { put <- err })
				resp, err := at.get(ctx, fmt.Sprintf("/%d", i), nil)
				if err != nil {
					cancel()
					t.Fatalf("iteration %d: RoundTrip: %v", i, err)
				}
				id := resp.Header.Get("X-Conn-Id")
				if why, ok := failed[id]; ok {
					t.Errorf("iteration %d: connection #%s reused after its transfer failed (%s)", i, id, why)
				}
				start := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					<-start
					cancel()
				})
				var readErr error
				wg.Go(func() {
					<-start
					switch i % 3 {
					case 0: // read to EOF, then Close
						_, readErr = io.Copy(io.Discard, resp.Body)
					case 1: // Close early: the drain races the cancellation
						io.ReadFull(resp.Body, make([]byte, 100))
					case 2: // read all but the last byte, then race to EOF
						if _, readErr = io.ReadFull(resp.Body, make([]byte, len(body)-1)); readErr == nil {
							_, readErr = io.Copy(io.Discard, resp.Body)
						}
					}
					resp.Body.Close()
				})
				close(start)
				wg.Wait()
				var putErr error
				select {
				case putErr = <-put:
				case <-time.After(2 * time.Second):
					t.Fatalf("iteration %d: PutIdleConn not called within 2s", i)
				}
				switch {
				case readErr != nil:
					if !errors.Is(readErr, context.Canceled) {
						t.Errorf("iteration %d: Read: got %v, want %v", i, readErr, context.Canceled)
					}
					failed[id] = fmt.Sprintf("iteration %d: Read: %v", i, readErr)
				case tt.keepAlive && putErr != nil:
					// With keep-alives, a connection not handed back was aborted.
					failed[id] = fmt.Sprintf("iteration %d: PutIdleConn: %v", i, putErr)
				}
			}
			at.tr.CloseIdleConnections()
			n := len(at.s.Reports())
			reps := at.waitConns(n)
			aborted := 0
			for _, r := range reps {
				why, ok := failed[strconv.FormatInt(r.ID, 10)]
				if !ok {
					continue
				}
				aborted++
				if r.CloseNotifyReceived || r.ClientEnd == witness.EndOpen {
					t.Errorf("connection #%d (%s): got %q, want FIN or RST, no close_notify", r.ID, why, r.ClientEnding())
				}
			}
			t.Logf("%d iterations, %d connections, %d with a failed transfer", iterations, n, aborted)
		})
	}
}

// TestAbortComparedWithNetHTTP documents what net/http puts on the wire for an early
// Body.Close (close_notify, then RST, as DESIGN.md says: a peer can't tell truncation from
// completion), and asserts endwell's: no close_notify. net/http's side is only logged, as
// it depends on timing.
func TestAbortComparedWithNetHTTP(t *testing.T) {
	earlyClose := func(t *testing.T, rt http.RoundTripper, url string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 1<<10)); err != nil {
			t.Fatalf("Read: %v", err)
		}
		resp.Body.Close()
	}

	t.Run("net/http", func(t *testing.T) {
		at := newAbortTest(t, witness.Options{TLS: true, Handler: bigBodyHandler(10 << 20)}, nil)
		ht := &http.Transport{TLSClientConfig: at.s.ClientTLSConfig()}
		defer ht.CloseIdleConnections()
		earlyClose(t, ht, at.s.URL()+"/big")
		r := at.waitConns(1)[0]
		t.Logf("net/http, early Body.Close: client %s (%v)", r.ClientEnding(), r)
	})

	t.Run("endwell", func(t *testing.T) {
		at := newAbortTest(t, witness.Options{TLS: true, Handler: bigBodyHandler(10 << 20)}, nil)
		earlyClose(t, at.tr, at.s.URL()+"/big")
		r := at.waitConns(1)[0]
		t.Logf("endwell, early Body.Close: client %s (%v)", r.ClientEnding(), r)
		wantNoCloseNotify(t, r)
	})
}
