package endwell_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// Interop (issue 9), HTTP/2: the rows of DESIGN.md's contract table that HTTP/2 changes,
// checked against nginx serving h2 over TLS (`listen ... ssl http2`, nginx 1.22's syntax),
// with the transport's default Protocols (ALPN offers h2 and http/1.1; nginx chooses h2).
//
// What nginx 1.22.1 tells of an HTTP/2 connection, found with its debug log (Debian's nginx
// is built --with-debug):
//
//   - A client's GOAWAY: at debug level only, "http2 GOAWAY frame: last sid 0, error 0".
//     nginx checks nothing in it and logs no error: a Last-Stream-ID of 0 is fine. Our
//     close_notify and FIN that follow are "peer shutdown SSL cleanly" (debug), and nginx
//     closes without a close_notify of its own (quiet shutdown, as it does after any read
//     of EOF): our outcome is peer_silent, or clean. At info level, a clean graceful end
//     leaves no line at all; a client that leaves a stream open makes it log "client
//     prematurely closed connection".
//   - Its idle timeout: since nginx 1.19.7 HTTP/2 connections use keepalive_timeout
//     (http2_idle_timeout is obsolete, and only warns). When it fires nginx logs, at debug
//     level, "http2 send GOAWAY frame: last sid N, error 0" (N the last stream it served),
//     then sends close_notify and FIN. Nothing at info level.
//   - RST_STREAM(CANCEL) from us: "http2 RST_STREAM frame, sid:N status:8" (debug), then at
//     info level "client canceled stream N while sending response to client", followed by
//     "client prematurely closed connection while sending response to client": that line
//     is the stream's (nginx runs each stream on a fake connection), not the TCP
//     connection's, which goes on serving streams.

// nginxH2ClientGoAway is nginx's debug line for a GOAWAY it read from the client.
var nginxH2ClientGoAway = regexp.MustCompile(`\*(\d+) http2 GOAWAY frame: last sid (\d+), error (\d+)\n`)

// nginxH2ServerGoAway is nginx's debug line for a GOAWAY it sends.
var nginxH2ServerGoAway = regexp.MustCompile(`\*(\d+) http2 send GOAWAY frame: last sid (\d+), error (\d+)\n`)

// nginxH2Canceled is nginx's info line for a client's RST_STREAM(CANCEL).
var nginxH2Canceled = regexp.MustCompile(`\*(\d+) client canceled stream (\d+) `)

// nginxH2Premature is nginx's info line for a client that went while a stream was open.
var nginxH2Premature = regexp.MustCompile(`\*(\d+) client prematurely closed connection`)

// nginxNotDebug returns the lines of an nginx error log above debug level: in a debug log,
// the words nginxProblem looks for appear in lines that tell of no problem.
func nginxNotDebug(log string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(log, "\n") {
		if !strings.Contains(l, "[debug]") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// nginxAccessConns returns the $connection of each access log line.
func nginxAccessConns(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.Fields(l)[0]
	}
	return out
}

// h2Get runs a GET of url on tr and checks that it went over HTTP/2. The caller reads and
// closes the body.
func h2Get(t *testing.T, tr http.RoundTripper, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.ProtoMajor != 2 {
		resp.Body.Close()
		t.Fatalf("GET %s: got %s, want HTTP/2 (nginx offers h2)", url, resp.Proto)
	}
	return resp
}

// h2ReadAll reads resp's body to EOF and closes it; it returns the number of bytes read.
func h2ReadAll(t *testing.T, resp *http.Response) int64 {
	t.Helper()
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		t.Errorf("reading the body of %s: %v", resp.Request.URL, err)
	}
	return n
}

// h2WaitCloses waits up to d for the transport to have recorded closes, and returns them.
func h2WaitCloses(tr *endwell.Transport, d time.Duration) map[endwell.CloseKey]uint64 {
	deadline := time.Now().Add(d)
	for {
		c := tr.Stats().Closes
		if len(c) > 0 || time.Now().After(deadline) {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestInteropH2NginxMultiplexThenGraceful: concurrent requests share one HTTP/2 connection
// (nginx's access log shows one $connection for all, we dial once, and their streams are
// open at the same time); the graceful end, by CloseIdleConnections or Shutdown, sends
// GOAWAY with Last-Stream-ID 0, which nginx reads as such and answers with no error.
func TestInteropH2NginxMultiplexThenGraceful(t *testing.T) {
	for _, end := range []string{"CloseIdleConnections", "Shutdown"} {
		t.Run(end, func(t *testing.T) {
			checkLeaks(t)
			n := startNginxWith(t, nginxOptions{KeepAlive: "75s", HTTP2: true, Debug: true})
			tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)

			// Streams in parallel: each response's headers are in before any body is
			// read, so all the streams are open at once. nginx sends each up to our
			// stream window (4 MiB) and waits for us.
			const streams = 4
			resps := make([]*http.Response, streams)
			var wg sync.WaitGroup
			for i := range resps {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodGet, n.url("/large"), nil)
					resp, err := tr.RoundTrip(req)
					if err != nil {
						t.Errorf("GET /large #%d: %v", i, err)
						return
					}
					resps[i] = resp
				})
			}
			wg.Wait()
			for _, resp := range resps {
				if resp != nil {
					defer resp.Body.Close()
				}
			}
			if t.Failed() {
				t.FailNow()
			}
			if s := tr.Stats(); s.Active != 1 || s.Idle != 0 {
				t.Errorf("with %d streams open: got %d active and %d idle connections, want 1 active", streams, s.Active, s.Idle)
			}
			for i, resp := range resps {
				if resp.ProtoMajor != 2 {
					t.Fatalf("GET /large #%d: got %s, want HTTP/2", i, resp.Proto)
				}
			}
			for i, resp := range resps {
				wg.Go(func() {
					if got := h2ReadAll(t, resp); got != nginxLargeSize {
						t.Errorf("GET /large #%d: got %d bytes, want %d", i, got, nginxLargeSize)
					}
				})
			}
			wg.Wait()
			// And one more, once they are done.
			resp := h2Get(t, tr, n.url("/ok"))
			h2ReadAll(t, resp)

			lines := n.waitAccessLines(t, streams+1)
			conns := nginxAccessConns(lines)
			for _, c := range conns {
				if c != conns[0] {
					t.Errorf("nginx access log: got %q, want every request on one connection", lines)
					break
				}
			}
			for _, l := range lines {
				if !strings.Contains(l, " HTTP/2.0\" 200 ") {
					t.Errorf("nginx access log: got %q, want HTTP/2.0 and 200", l)
				}
			}
			if got := len(la.list()); got != 1 {
				t.Errorf("connections dialled: got %d, want 1", got)
			}
			if s := tr.Stats(); s.Active != 0 || s.Idle != 1 || len(s.Closes) != 0 {
				t.Errorf("after the requests: got %d active, %d idle, closes %v, want 1 idle and no close", s.Active, s.Idle, s.Closes)
			}

			mark := n.errorLogSize()
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
			// nginx answers our close_notify with its FIN only: peer_silent (or clean).
			closes := h2WaitCloses(tr, 2*time.Second)
			took := time.Since(start)
			// nginx closes the connection once it has read our GOAWAY, close_notify
			// and FIN: "close http connection" is its last word on it.
			closed := regexp.MustCompile(`\*` + conns[0] + ` close http connection`)
			log, ok := n.waitErrorLogFrom(closed, 3*time.Second, mark)
			if !ok {
				t.Fatalf("nginx error log: connection *%s not closed within 3s:\n%s", conns[0], nginxNotDebug(log))
			}
			m := nginxH2ClientGoAway.FindStringSubmatch(log)
			switch {
			case m == nil:
				t.Errorf("nginx error log: no %q: it read no GOAWAY", nginxH2ClientGoAway)
			case m[1] != conns[0] || m[2] != "0" || m[3] != "0":
				t.Errorf("nginx: got %q, want a GOAWAY on connection *%s with last sid 0 and error 0", strings.TrimSpace(m[0]), conns[0])
			}
			info := nginxNotDebug(n.errorLog())
			if p := nginxProblem.FindString(info); p != "" {
				t.Errorf("nginx error log has %q after a graceful end:\n%s", p, info)
			}
			if p := nginxH2Premature.FindString(info); p != "" {
				t.Errorf("nginx error log has %q after a graceful end, with no stream open:\n%s", p, info)
			}
			var graceful uint64
			for k, v := range closes {
				if k.Mode == "graceful" && k.Reason == reason && (k.Outcome == "clean" || k.Outcome == "peer_silent") {
					graceful += v
				}
			}
			if graceful != 1 || len(closes) != 1 {
				t.Errorf("closes: got %v, want one graceful %s, clean or peer_silent", closes, reason)
			}
			peerWaitNoLingering(t, la.list(), true, 500*time.Millisecond)
			t.Logf("%s: nginx logged %q; closes %v, recorded within %v of the call", end, strings.TrimSpace(m[0]), closes, took)
		})
	}
}

// TestInteropH2NginxIdleTimeout: nginx's keepalive_timeout, HTTP/2's idle timeout since
// nginx 1.19.7, ends our idle connection with GOAWAY(NO_ERROR), close_notify and FIN; we
// close at once (goaway_received, or peer_closed if its EOF is seen first), our socket
// never sits in CLOSE_WAIT, and the next request dials afresh.
func TestInteropH2NginxIdleTimeout(t *testing.T) {
	checkLeaks(t)
	n := startNginxWith(t, nginxOptions{KeepAlive: "300ms", HTTP2: true, Debug: true})
	tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
	h2ReadAll(t, h2Get(t, tr, n.url("/ok")))
	conns := la.list()
	if len(conns) != 1 {
		t.Fatalf("connections dialled: got %d, want 1", len(conns))
	}
	seen, gone := peerWatchPeerClose(t, conns, 3*time.Second, 100*time.Millisecond)
	t.Logf("our socket: %v, gone %v after it left ESTABLISHED", strings.Join(seen, " -> "), gone)

	log := n.errorLog()
	access := nginxAccessConns(n.waitAccessLines(t, 1))
	m := nginxH2ServerGoAway.FindStringSubmatch(log)
	switch {
	case m == nil:
		t.Errorf("nginx error log: no %q: its idle timeout sent no GOAWAY", nginxH2ServerGoAway)
	case m[1] != access[0] || m[2] != "1" || m[3] != "0":
		t.Errorf("nginx: got %q, want a GOAWAY on connection *%s with last sid 1 and error 0", strings.TrimSpace(m[0]), access[0])
	}
	if p := nginxProblem.FindString(nginxNotDebug(log)); p != "" {
		t.Errorf("nginx error log has %q after its idle timeout:\n%s", p, nginxNotDebug(log))
	}

	// Any outcome but a forced one: whether our GOAWAY and close_notify go out before
	// nginx's EOF is read is a race (see the report of issue 9).
	closes := h2WaitCloses(tr, time.Second)
	var ok bool
	for k := range closes {
		ok = len(closes) == 1 && k.Mode == "graceful" &&
			(k.Reason == "goaway_received" || k.Reason == "peer_closed") && k.Outcome != "timed_out"
	}
	if !ok {
		t.Fatalf("closes: got %v, want one graceful goaway_received or peer_closed, not timed_out", closes)
	}
	if s := tr.Stats(); s.Idle != 0 || s.Closing != 0 {
		t.Errorf("stats after nginx's close: got %d idle, %d closing, want none", s.Idle, s.Closing)
	}
	// The next request dials afresh.
	h2ReadAll(t, h2Get(t, tr, n.url("/ok")))
	if got := len(la.list()); got != 2 {
		t.Errorf("connections dialled: got %d, want 2", got)
	}
	t.Logf("nginx logged %q; closes %v", strings.TrimSpace(m[0]), closes)
}

// TestInteropH2NginxAbort: a body closed early resets its stream (RST_STREAM CANCEL, which
// nginx logs as a cancelled stream) and only it: the connection lives on and serves the
// next request (nginx's access log shows both on one $connection), and nothing closes.
func TestInteropH2NginxAbort(t *testing.T) {
	checkLeaks(t)
	n := startNginxWith(t, nginxOptions{KeepAlive: "75s", HTTP2: true})
	tr, la := newNginxTransport(t, &tls.Config{RootCAs: n.cert.pool}, nil)
	resp := h2Get(t, tr, n.url("/large"))
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading the first 64 KiB: %v", err)
	}
	start := time.Now()
	resp.Body.Close()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Body.Close took %v, want it not to block", d)
	}
	log, ok := n.waitErrorLog(nginxH2Canceled, 3*time.Second)
	if !ok {
		t.Fatalf("nginx error log: no %q within 3s:\n%s", nginxH2Canceled, log)
	}
	if got := h2ReadAll(t, h2Get(t, tr, n.url("/ok"))); got != 3 {
		t.Errorf("GET /ok after the abort: got %d bytes, want 3", got)
	}

	lines := n.waitAccessLines(t, 2)
	conns := nginxAccessConns(lines)
	if conns[0] != conns[1] || !strings.Contains(lines[0], "/large") || !strings.Contains(lines[1], "/ok") {
		t.Errorf("nginx access log: got %q, want /large then /ok on one connection", lines)
	}
	f := strings.Fields(lines[0])
	if sent, _ := strconv.Atoi(f[len(f)-1]); sent >= nginxLargeSize {
		t.Errorf("nginx access log: sent %d bytes, want fewer than %d: %q", sent, nginxLargeSize, lines[0])
	}
	m := nginxH2Canceled.FindStringSubmatch(log)
	if m[1] != conns[0] || m[2] != "1" {
		t.Errorf("nginx: got %q, want stream 1 of connection *%s cancelled", strings.TrimSpace(m[0]), conns[0])
	}
	log = n.errorLog()
	if p := nginxProblem.FindString(log); p != "" {
		t.Errorf("nginx error log has %q after a stream's abort:\n%s", p, log)
	}
	if nginxWriteFailed.MatchString(log) || nginxCloseKeepAlive.MatchString(log) {
		t.Errorf("nginx saw the connection end after a stream's abort:\n%s", log)
	}
	if got := len(la.list()); got != 1 {
		t.Errorf("connections dialled: got %d, want 1", got)
	}
	if s := tr.Stats(); s.Idle != 1 || len(s.Closes) != 0 {
		t.Errorf("after the abort and the next request: got %d idle, closes %v, want 1 idle and no close", s.Idle, s.Closes)
	}
	if socks := peerSocketsOf(la.list()); len(socks) != 1 || socks[0].state != sockEstablished {
		t.Errorf("our socket after the abort: got %v, want it ESTABLISHED", socks)
	}
	t.Logf("nginx logged %q", strings.TrimSpace(m[0]))
}
