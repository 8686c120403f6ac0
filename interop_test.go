package endwell_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// Interop (issue 9): each row of DESIGN.md's contract table, HTTP/1.1 over TLS, checked
// against peers we did not write.
//
// What the peers can tell, found on nginx 1.22.1 and OpenSSL 3.0:
//
//   - openssl s_server prints "DONE" when it reads the client's close_notify, and "ERROR"
//     followed by OpenSSL's reason ("unexpected eof while reading", or a reset) when the
//     client hangs up without one. It is the peer that proves close_notify sent or not.
//   - nginx, built with OpenSSL 3, sets SSL_OP_IGNORE_UNEXPECTED_EOF: on an idle keep-alive
//     connection it logs a client's close_notify+FIN and a bare FIN alike, at info level,
//     "client 127.0.0.1 closed keepalive connection" (its debug log says "peer shutdown SSL
//     cleanly" for both). A reset adds "(104: Connection reset by peer)". A client that hangs
//     up mid-response makes it log "SSL_write() failed (104: Connection reset by peer) while
//     sending response to client" (or "(32: Broken pipe)"), or, when its event loop sees
//     the reset before a write fails, "client prematurely closed connection (104: Connection
//     reset by peer) while sending response to client". So nginx proves that graceful ends
//     are clean (no error, no reset) and that aborts cut the response; s_server proves the
//     close_notify.

// nginxCloseKeepAlive is nginx's line for a client ending an idle connection: close_notify
// and FIN, or a bare FIN; an errno in parentheses follows for a reset.
var nginxCloseKeepAlive = regexp.MustCompile(`\*(\d+) client 127\.0\.0\.1 closed keepalive connection( \(\d+: [^)]*\))?\n`)

// nginxWriteFailed is nginx's line for a client that hung up, with a reset, while it sent
// a response: a write failed, or its event loop saw the reset first (about one run in six).
var nginxWriteFailed = regexp.MustCompile(`\*(\d+) ((SSL_write\(\)|writev\(\)|sendfile\(\)) failed|client prematurely closed connection) \((104|32): [^)]*\) while sending response to client`)

// nginxProblem matches lines that no ending of ours may cause: SSL errors other than the
// write failures of an abort, and anything above info level.
var nginxProblem = regexp.MustCompile(`\[(warn|error|crit|alert|emerg)\]|SSL_(read|shutdown|do_handshake)\(\) failed|bad record|alert`)

// newNginxTransport returns a transport that trusts n and records its connections' ends.
func newNginxTransport(t *testing.T, pool *tls.Config, mod func(*endwell.Transport)) (*endwell.Transport, *peerConns) {
	la := &peerConns{}
	tr := &endwell.Transport{TLSClientConfig: pool, DialContext: la.dial, ShutdownTimeout: time.Second}
	if mod != nil {
		mod(tr)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, la
}

func interopGet(t *testing.T, tr http.RoundTripper, url string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return string(b)
}

// interopWaitClose waits up to d for the transport to count a close of key, and returns it.
func interopWaitClose(t *testing.T, tr *endwell.Transport, key endwell.CloseKey, d time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		s := tr.Stats()
		if n := s.Closes[key]; n > 0 || time.Now().After(deadline) {
			if n == 0 {
				t.Errorf("closes %v: got none in %v, want 1; closes: %v", key, d, s.Closes)
			}
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInteropNginxKeepAliveThenGraceful: two requests share one connection (nginx's access
// log shows one $connection with $connection_requests 1 then 2); the graceful end, by
// CloseIdleConnections or Shutdown, is the clean end nginx logs for an idle connection, with
// no error and no reset.
func TestInteropNginxKeepAliveThenGraceful(t *testing.T) {
	for _, end := range []string{"CloseIdleConnections", "Shutdown"} {
		t.Run(end, func(t *testing.T) {
			checkLeaks(t)
			n := startNginx(t, "75s")
			tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
			for range 2 {
				if got := interopGet(t, tr, n.url("/ok")); got != "ok\n" {
					t.Fatalf("body: got %q, want %q", got, "ok\n")
				}
			}
			lines := n.waitAccessLines(t, 2)
			f0, f1 := strings.Fields(lines[0]), strings.Fields(lines[1])
			if f0[0] != f1[0] || f0[1] != "1" || f1[1] != "2" {
				t.Errorf("nginx access log: got %q, want both requests on one connection, numbered 1 and 2", lines)
			}
			if got := len(la.list()); got != 1 {
				t.Errorf("connections dialled: got %d, want 1", got)
			}

			start := time.Now()
			reason := "close_idle"
			if end == "Shutdown" {
				reason = "shutdown"
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				if err := tr.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			} else {
				tr.CloseIdleConnections()
			}
			log, ok := n.waitErrorLog(nginxCloseKeepAlive, 3*time.Second)
			if !ok {
				t.Fatalf("nginx error log: no %q within 3s:\n%s", nginxCloseKeepAlive, log)
			}
			m := nginxCloseKeepAlive.FindStringSubmatch(log)
			if m[1] != f0[0] || m[2] != "" {
				t.Errorf("nginx: got %q, want connection *%s closed by the client without a reset", m[0], f0[0])
			}
			if p := nginxProblem.FindString(log); p != "" {
				t.Errorf("nginx error log has %q after a graceful end:\n%s", p, log)
			}
			// nginx answers close_notify with its FIN only (no close_notify of its own):
			// the outcome is clean or peer_silent, never forced. nginx logs the close as
			// it reads our FIN, before endwell has read its own and counted the close.
			for deadline := time.Now().Add(3 * time.Second); tr.Stats().Closing > 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			s := tr.Stats()
			var graceful uint64
			for k, v := range s.Closes {
				if k.Mode == "graceful" && k.Reason == reason && (k.Outcome == "clean" || k.Outcome == "peer_silent") {
					graceful += v
				}
			}
			if graceful != 1 || len(s.Closes) != 1 {
				t.Errorf("closes: got %v, want one graceful %s, clean or peer_silent", s.Closes, reason)
			}
			peerWaitNoLingering(t, la.list(), true, 500*time.Millisecond)
			t.Logf("%s: nginx logged %q; %v after the call", end, strings.TrimSpace(m[0]), time.Since(start))
		})
	}
}

// TestInteropNginxIdleTimeout: nginx's keepalive_timeout closes our idle connection; we
// notice at once (peer_closed) and our socket never sits in CLOSE_WAIT.
func TestInteropNginxIdleTimeout(t *testing.T) {
	checkLeaks(t)
	n := startNginx(t, "300ms")
	tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
	interopGet(t, tr, n.url("/ok"))
	conns := la.list()
	if len(conns) != 1 {
		t.Fatalf("connections dialled: got %d, want 1", len(conns))
	}
	// Watch our socket from ESTABLISHED until it is gone: once nginx's FIN has arrived
	// (the socket left ESTABLISHED), it must be closed at once. The socket then vanishes
	// (nginx closed first and holds the TIME_WAIT), after at most a moment in CLOSE_WAIT
	// or LAST_ACK.
	seen, gone := peerWatchPeerClose(t, conns, 3*time.Second, 100*time.Millisecond)
	t.Logf("our socket: %v, gone %v after it left ESTABLISHED", strings.Join(seen, " -> "), gone)
	// nginx closes with close_notify then FIN. The recorded outcome varies from run to
	// run, "clean" or "failed" (seen with the idle code of the day; see the report of
	// issue 9): the socket is closed at once all the same (checked above), so any
	// outcome but a forced one passes.
	deadline := time.Now().Add(time.Second)
	for {
		var outcomes []string
		for k := range tr.Stats().Closes {
			if k.Mode == "graceful" && k.Reason == "peer_closed" {
				outcomes = append(outcomes, k.Outcome)
			}
		}
		if len(outcomes) == 1 && outcomes[0] != "timed_out" {
			t.Logf("peer_closed outcome: %s", outcomes[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closes: got %v, want one graceful peer_closed, not timed_out", tr.Stats().Closes)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := tr.Stats(); s.Idle != 0 || s.Closing != 0 {
		t.Errorf("stats after nginx's close: got %d idle, %d closing, want none", s.Idle, s.Closing)
	}
	// The next request dials afresh.
	interopGet(t, tr, n.url("/ok"))
	if got := len(la.list()); got != 2 {
		t.Errorf("connections dialled: got %d, want 2", got)
	}
}

// TestInteropNginxAbort: a body closed early cuts nginx's response short: nginx logs the
// failed write of a client that hung up, its access log shows a truncated transfer, and we
// record an abort.
func TestInteropNginxAbort(t *testing.T) {
	checkLeaks(t)
	n := startNginx(t, "75s")
	tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
	req, _ := http.NewRequest(http.MethodGet, n.url("/large"), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the first 64 KiB: %v", err)
	}
	start := time.Now()
	resp.Body.Close()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Body.Close took %v, want it not to block", d)
	}
	log, ok := n.waitErrorLog(nginxWriteFailed, 3*time.Second)
	if !ok {
		t.Fatalf("nginx error log: no %q within 3s:\n%s", nginxWriteFailed, log)
	}
	if nginxCloseKeepAlive.MatchString(log) {
		t.Errorf("nginx saw an idle-connection close after an abort:\n%s", log)
	}
	lines := n.waitAccessLines(t, 1)
	f := strings.Fields(lines[0])
	if sent, _ := strconv.Atoi(f[len(f)-1]); sent >= nginxLargeSize {
		t.Errorf("nginx access log: sent %d bytes, want fewer than %d: %q", sent, nginxLargeSize, lines[0])
	}
	interopWaitClose(t, tr, endwell.CloseKey{Mode: "abort", Reason: "body_closed_early", Outcome: "aborted"}, time.Second)
	peerWaitNoLingering(t, la.list(), true, 500*time.Millisecond)
	t.Logf("nginx logged %q", nginxWriteFailed.FindString(log))
}

// TestInteropOpenSSL: s_server prints DONE for each graceful end of ours (it read our
// close_notify) and ERROR, without DONE, for each abort.
func TestInteropOpenSSL(t *testing.T) {
	const okResp = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
	const longResp = "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial"
	tests := []struct {
		name    string
		resp    string                                       // what s_server sends once the request is in; "" for nothing
		mod     func(*endwell.Transport)                     // transport configuration
		ctx     func() (context.Context, context.CancelFunc) // the request's context; nil for Background
		then    func(t *testing.T, tr *endwell.Transport, resp *http.Response, err error)
		wantErr error // the error RoundTrip returns, matched with errors.Is; nil for success
		// keepBody leaves the response body to then; otherwise it is read (to EOF for a
		// graceful row, 3 bytes then Close for an abort) before then runs.
		keepBody bool
		want     endwell.CloseKey
	}{
		{
			name: "close_idle", resp: okResp,
			then: func(t *testing.T, tr *endwell.Transport, resp *http.Response, err error) {
				tr.CloseIdleConnections()
			},
			want: endwell.CloseKey{Mode: "graceful", Reason: "close_idle"},
		},
		{
			name: "shutdown", resp: okResp,
			then: func(t *testing.T, tr *endwell.Transport, resp *http.Response, err error) {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				if err := tr.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			},
			want: endwell.CloseKey{Mode: "graceful", Reason: "shutdown"},
		},
		{
			name: "idle_timeout", resp: okResp,
			mod:  func(tr *endwell.Transport) { tr.IdleConnTimeout = 50 * time.Millisecond },
			want: endwell.CloseKey{Mode: "graceful", Reason: "idle_timeout"},
		},
		{
			name: "server_close", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n",
			want: endwell.CloseKey{Mode: "graceful", Reason: "server_close"},
		},
		{
			name: "keepalives_disabled", resp: okResp,
			mod:  func(tr *endwell.Transport) { tr.DisableKeepAlives = true },
			want: endwell.CloseKey{Mode: "graceful", Reason: "keepalives_disabled"},
		},
		{
			name: "body_closed_early", resp: longResp,
			want: endwell.CloseKey{Mode: "abort", Reason: "body_closed_early", Outcome: "aborted"},
		},
		{
			name: "context_canceled", resp: "",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(200*time.Millisecond, cancel)
				return ctx, cancel
			},
			wantErr: context.Canceled,
			want:    endwell.CloseKey{Mode: "abort", Reason: "context_canceled", Outcome: "aborted"},
		},
		{
			name: "response_header_timeout", resp: "",
			mod:     func(tr *endwell.Transport) { tr.ResponseHeaderTimeout = 200 * time.Millisecond },
			wantErr: endwell.ErrResponseHeaderTimeout,
			want:    endwell.CloseKey{Mode: "abort", Reason: "timeout", Outcome: "aborted"},
		},
		{
			name: "protocol_error", resp: "HTTP/1.1 2OO OK\r\n\r\n",
			want: endwell.CloseKey{Mode: "abort", Reason: "protocol_error", Outcome: "aborted"},
		},
		{
			name: "transport_close", resp: longResp, keepBody: true,
			then: func(t *testing.T, tr *endwell.Transport, resp *http.Response, err error) {
				tr.Close()
				if _, err := io.ReadAll(resp.Body); !errors.Is(err, endwell.ErrClosed) {
					t.Errorf("reading the body after Close: got %v, want ErrClosed", err)
				}
			},
			want: endwell.CloseKey{Mode: "abort", Reason: "close", Outcome: "aborted"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := startSServer(t)
			la := &peerConns{}
			tr := &endwell.Transport{
				TLSClientConfig: &tls.Config{RootCAs: s.cert.pool},
				DialContext:     la.dial,
				ShutdownTimeout: time.Second,
			}
			if tt.mod != nil {
				tt.mod(tr)
			}
			t.Cleanup(func() { tr.Close() })
			ctx := context.Background()
			if tt.ctx != nil {
				var cancel context.CancelFunc
				ctx, cancel = tt.ctx()
				defer cancel()
			}
			answered := make(chan error, 1)
			go func() { // plays the server through s_server's stdin
				if tt.resp == "" {
					answered <- nil
					return
				}
				answered <- s.answer(tt.resp)
			}()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url("/"), nil)
			resp, err := tr.RoundTrip(req)
			if aerr := <-answered; aerr != nil {
				t.Fatal(aerr)
			}
			var pe *endwell.ProtocolError
			switch {
			case tt.want.Reason == "protocol_error":
				if !errors.As(err, &pe) {
					t.Fatalf("RoundTrip: got %v, want a *ProtocolError", err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("RoundTrip: got %v, want %v", err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("RoundTrip: %v", err)
			}
			if resp != nil && !tt.keepBody {
				if tt.want.Mode == "abort" {
					io.ReadFull(resp.Body, make([]byte, 3))
				} else if _, err := io.ReadAll(resp.Body); err != nil {
					t.Fatalf("reading the body: %v", err)
				}
				resp.Body.Close()
			}
			if tt.then != nil {
				tt.then(t, tr, resp, err)
				if resp != nil {
					resp.Body.Close()
				}
			}
			lines, done, failed := s.ending()
			wantDone := tt.want.Mode == "graceful"
			if done != wantDone || failed == wantDone {
				t.Errorf("openssl s_server printed %q: got DONE %v, ERROR %v, want DONE %v, ERROR %v", lines, done, failed, wantDone, !wantDone)
			}
			if tt.want.Outcome == "" {
				// s_server answers our close_notify with its own (clean) or closes at
				// once (peer_silent), depending on timing: both are fine.
				deadline := time.Now().Add(2 * time.Second)
				for {
					st := tr.Stats()
					found := false
					for k := range st.Closes {
						if k.Mode == tt.want.Mode && k.Reason == tt.want.Reason && (k.Outcome == "clean" || k.Outcome == "peer_silent") {
							found = true
						}
					}
					if found {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("closes: got %v, want %s %s, clean or peer_silent", st.Closes, tt.want.Mode, tt.want.Reason)
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			} else {
				interopWaitClose(t, tr, tt.want, 2*time.Second)
			}
			peerWaitNoLingering(t, la.list(), true, 500*time.Millisecond)
			t.Logf("s_server: %q", lines)
		})
	}
}
