package endwell_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/testpeer"
	"github.com/endwell/endwell/internal/witness"
)

// Issue 18: goodbyes as RFC 8446, section 6.1 asks ("each party MUST send a close_notify
// alert before closing its write side of the connection"), checked from the outside
// against both kinds of servers that end a connection first:
//
//   - a server that half-closes, close_notify then FIN, and keeps reading (the witness;
//     s2n's s2n_shutdown_send and Python's unwrap then shutdown(SHUT_WR) do the same): it
//     waits for our close_notify, and reports whether it came before our FIN;
//   - a server that closes its socket right after its close_notify (nginx, or Go's
//     tls.Conn.Close): our close_notify draws its reset, which the record says, and the
//     ending is still clean, for both goodbyes were said.
//
// And the records say what the peer saw: clean only when both close_notify alerts and
// both FINs were exchanged.

// goodbyeRecord is the story of one endwell.conn.close span.
type goodbyeRecord struct {
	Mode, Reason, Outcome             string
	NotifySent, NotifyReceived        bool
	FINSent, FINReceived, RSTReceived bool
	GoAwaySent                        bool
}

func (r goodbyeRecord) String() string {
	return fmt.Sprintf("%s %s %s notify(sent %v, recv %v) fin(sent %v, recv %v) rst %v goaway %v",
		r.Mode, r.Reason, r.Outcome, r.NotifySent, r.NotifyReceived, r.FINSent, r.FINReceived, r.RSTReceived, r.GoAwaySent)
}

func goodbyeRecordOf(s sdktrace.ReadOnlySpan) goodbyeRecord {
	var r goodbyeRecord
	for _, kv := range s.Attributes() {
		switch kv.Key {
		case "endwell.close.mode":
			r.Mode = kv.Value.AsString()
		case "endwell.close.reason":
			r.Reason = kv.Value.AsString()
		case "endwell.close.outcome":
			r.Outcome = kv.Value.AsString()
		case "endwell.tls.close_notify.sent":
			r.NotifySent = kv.Value.AsBool()
		case "endwell.tls.close_notify.received":
			r.NotifyReceived = kv.Value.AsBool()
		case "endwell.tcp.fin.sent":
			r.FINSent = kv.Value.AsBool()
		case "endwell.tcp.fin.received":
			r.FINReceived = kv.Value.AsBool()
		case "endwell.tcp.rst.received":
			r.RSTReceived = kv.Value.AsBool()
		case "endwell.h2.goaway.sent":
			r.GoAwaySent = kv.Value.AsBool()
		}
	}
	return r
}

// goodbyeClient is a transport that records its teardown spans and the sockets it dials.
type goodbyeClient struct {
	tr    *endwell.Transport
	spans *tracetest.SpanRecorder
	conns *peerConns
}

func newGoodbyeClient(t *testing.T, tr *endwell.Transport) *goodbyeClient {
	t.Helper()
	c := &goodbyeClient{tr: tr, spans: tracetest.NewSpanRecorder(), conns: &peerConns{}}
	tr.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(c.spans))
	if tr.DialContext == nil {
		tr.DialContext = c.conns.dial
	}
	if tr.ShutdownTimeout == 0 {
		tr.ShutdownTimeout = time.Second
	}
	newTransport(t, tr)
	return c
}

// get sends a GET and reads the body to its end.
func (c *goodbyeClient) get(t *testing.T, url string) string {
	t.Helper()
	resp, err := c.tr.RoundTrip(newRequest(t, boundedCtx(t), "GET", url, nil))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return string(b)
}

// wait waits for n teardown records.
func (c *goodbyeClient) wait(t *testing.T, n int) []goodbyeRecord {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var recs []goodbyeRecord
		for _, s := range c.spans.Ended() {
			if s.Name() == "endwell.conn.close" {
				recs = append(recs, goodbyeRecordOf(s))
			}
		}
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("teardown records: got %d within %v, want %d: %v", len(recs), waitFor, n, recs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// wantGoodbye checks a teardown record and that the socket left no CLOSE_WAIT or
// FIN_WAIT2 behind. With anyFIN, the record may say the peer's FIN arrived or not: a peer
// that closes its socket while our goodbye is on its way resets the connection instead.
func (c *goodbyeClient) wantGoodbye(t *testing.T, want goodbyeRecord, anyFIN bool) goodbyeRecord {
	t.Helper()
	r := c.wait(t, 1)[0]
	if anyFIN {
		want.FINReceived = r.FINReceived
	}
	if r != want {
		t.Errorf("record:\n got %v\nwant %v", r, want)
	}
	if r.Outcome == "clean" && !(r.NotifySent && r.NotifyReceived && r.FINSent && r.FINReceived) {
		t.Errorf("record %v: clean, but not every goodbye was said both ways", r)
	}
	peerWaitNoLingering(t, c.conns.list(), true, 500*time.Millisecond)
	return r
}

// Handlers of the half-closing server, the witness: each answers, then ends the
// connection with close_notify and FIN, and reads on until the client's FIN.
var (
	// goodbyeIdleClose answers with keep-alive, then closes the connection once it has been
	// idle for 100ms.
	goodbyeIdleClose witness.Handler = func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, "ok\n")
		idle := time.NewTimer(100 * time.Millisecond)
		defer idle.Stop()
		select {
		case <-idle.C:
		case <-c.ClientDone():
		case <-c.Context().Done():
		}
		return witness.CloseGraceful
	}
	goodbyeConnClose witness.Handler = func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, http.Header{"Connection": {"close"}}, "ok\n")
		return witness.Auto
	}
	goodbyeHTTP10 witness.Handler = func(c *witness.Conn, r *http.Request) witness.Action {
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"))
		return witness.CloseGraceful
	}
	// goodbyeHTTP10UntilClose's body has no length: it ends with the server's goodbye.
	goodbyeHTTP10UntilClose witness.Handler = func(c *witness.Conn, r *http.Request) witness.Action {
		c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nok\n"))
		return witness.CloseGraceful
	}
)

// TestGoodbyeHalfClosingServer: a server that ends the connection with close_notify and
// FIN and keeps reading gets our close_notify before our FIN, however it ended it: idle,
// Connection: close, an HTTP/1.0 response; directly or through a proxy's tunnel.
func TestGoodbyeHalfClosingServer(t *testing.T) {
	clean := func(reason string) goodbyeRecord {
		return goodbyeRecord{Mode: "graceful", Reason: reason, Outcome: "clean",
			NotifySent: true, NotifyReceived: true, FINSent: true, FINReceived: true}
	}
	tests := []struct {
		name    string
		handler witness.Handler
		proxy   bool
		want    goodbyeRecord
	}{
		{"idle connection", goodbyeIdleClose, false, clean("peer_closed")},
		{"Connection: close", goodbyeConnClose, false, clean("server_close")},
		{"HTTP/1.0, Content-Length", goodbyeHTTP10, false, clean("server_close")},
		{"HTTP/1.0, body until close", goodbyeHTTP10UntilClose, false, clean("server_close")},
		{"idle connection, proxy tunnel", goodbyeIdleClose, true, clean("peer_closed")},
		{"Connection: close, proxy tunnel", goodbyeConnClose, true, clean("server_close")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{TLS: true, Handler: tt.handler})
			tr := &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()}
			if tt.proxy {
				p := startProxy(t, 0)
				tr.Proxy = http.ProxyURL(p.url(nil))
			}
			c := newGoodbyeClient(t, tr)
			if got := c.get(t, s.URL()+"/"); got != "ok\n" {
				t.Errorf("body: got %q, want %q", got, "ok\n")
			}
			c.wantGoodbye(t, tt.want, false)
			// The server saw our close_notify, then our FIN; it said both too (after our
			// own, when we ended a Connection: close exchange before its goodbye came).
			rep := wantWitnessEnds(t, s, 1, "close_notify+FIN")[0]
			if !rep.ServerSentCloseNotify || !rep.ServerSentFIN {
				t.Errorf("server: got %v, want it to have sent close_notify and FIN", rep)
			}
		})
	}
}

// closingServer is a TLS HTTP/1.1 server in Go that answers the first request of each
// connection with resp and then, after idle (zero: at once), says goodbye as Go's
// tls.Conn.Close does, as nginx does: close_notify, then close. What arrives after, our
// close_notify and FIN, draws its kernel's reset.
type closingServer struct {
	srv  *testpeer.Server
	resp string
	idle time.Duration
}

func startClosingServer(t *testing.T, resp string, idle time.Duration) (*closingServer, *tls.Config) {
	t.Helper()
	srvCfg, cliCfg := benchTLS(t)
	s := &closingServer{resp: resp, idle: idle}
	// One connection: it ends within waitFor, by its deadline at the latest.
	s.srv = testpeer.Serve(t, srvCfg, func(_ int, c net.Conn) { s.serve(c.(*tls.Conn)) })
	return s, cliCfg
}

func (s *closingServer) url() string { return "https://" + s.srv.Addr() + "/" }

// serve answers one request on tc; testpeer closes the TCP connection after.
func (s *closingServer) serve(tc *tls.Conn) {
	tc.SetDeadline(time.Now().Add(waitFor))
	if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
		return
	}
	if _, err := io.WriteString(tc, s.resp); err != nil {
		return
	}
	if s.idle > 0 {
		time.Sleep(s.idle)
	}
	tc.Close() // close_notify, then the socket's close
}

// TestGoodbyeClosingServer: a server that closes its socket right after its close_notify
// gets ours all the same (we cannot know it stopped reading) and answers it with a reset
// (in place of its FIN, when ours arrived before its close). The record says so, and that
// the ending was not clean, nor a failure of ours: peer_silent.
func TestGoodbyeClosingServer(t *testing.T) {
	tests := []struct {
		name   string
		resp   string
		idle   time.Duration
		reason string
	}{
		{"idle connection", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", 100 * time.Millisecond, "peer_closed"},
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\n", 0, "server_close"},
		{"HTTP/1.0, Content-Length", "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n", 0, "server_close"},
		{"HTTP/1.0, body until close", "HTTP/1.0 200 OK\r\n\r\nok\n", 0, "server_close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			s, cfg := startClosingServer(t, tt.resp, tt.idle)
			c := newGoodbyeClient(t, &endwell.Transport{TLSClientConfig: cfg})
			if got := c.get(t, s.url()); got != "ok\n" {
				t.Errorf("body: got %q, want %q", got, "ok\n")
			}
			c.wantGoodbye(t, goodbyeRecord{Mode: "graceful", Reason: tt.reason, Outcome: "peer_silent",
				NotifySent: true, NotifyReceived: true, FINSent: true, RSTReceived: true}, true)
		})
	}
}

// TestGoodbyeNginx: nginx ends a connection with SSL_shutdown, then close: on an idle
// connection (keepalive_timeout) and after a response it sends with Connection: close
// (keepalive_timeout 0). Our close_notify answers it and draws the reset of its closed
// socket, recorded as such (peer_silent: ours was not read), and nginx logs no error.
func TestGoodbyeNginx(t *testing.T) {
	tests := []struct {
		name, keepAlive, reason string
	}{
		{"idle connection", "300ms", "peer_closed"},
		{"Connection: close", "0", "server_close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			n := startNginx(t, tt.keepAlive)
			c := newGoodbyeClient(t, &endwell.Transport{TLSClientConfig: &tls.Config{RootCAs: n.cert.pool}})
			if got := c.get(t, n.url("/ok")); got != "ok\n" {
				t.Errorf("body: got %q, want %q", got, "ok\n")
			}
			r := c.wantGoodbye(t, goodbyeRecord{Mode: "graceful", Reason: tt.reason, Outcome: "peer_silent",
				NotifySent: true, NotifyReceived: true, FINSent: true, RSTReceived: true}, true)
			if p := nginxProblem.FindString(n.errorLog()); p != "" {
				t.Errorf("nginx error log has %q:\n%s", p, n.errorLog())
			}
			t.Logf("record: %v", r)
		})
	}
}

// TestGoodbyeRecordHeaderError: a server that answers in plaintext inside its TLS session
// makes crypto/tls fail with a tls.RecordHeaderError: the connection is aborted (no
// close_notify) as a protocol error, not as an I/O error.
func TestGoodbyeRecordHeaderError(t *testing.T) {
	checkLeaks(t)
	srvCfg, cliCfg := benchTLS(t)
	// The server: each connection answered in plaintext under its TLS session.
	srv := testpeer.Serve(t, srvCfg, func(_ int, c net.Conn) {
		c.SetDeadline(time.Now().Add(waitFor))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		raw := c.(*tls.Conn).NetConn()
		io.WriteString(raw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
		io.Copy(io.Discard, raw) // until the client goes
	})
	c := newGoodbyeClient(t, &endwell.Transport{TLSClientConfig: cliCfg})
	resp, err := c.tr.RoundTrip(newRequest(t, boundedCtx(t), "GET", "https://"+srv.Addr()+"/", nil))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip: got a response, want the TLS record error")
	}
	var rhe tls.RecordHeaderError
	if !errors.As(err, &rhe) {
		t.Errorf("RoundTrip: got %v (%T), want a tls.RecordHeaderError in its chain", err, err)
	}
	r := c.wait(t, 1)[0]
	if want := (goodbyeRecord{Mode: "abort", Reason: "protocol_error", Outcome: "aborted"}); r != want {
		t.Errorf("record:\n got %v\nwant %v", r, want)
	}
}

// TestGoodbyeRequestBodyStillGoingOut: the server answers in full while the request body is
// still going out (it never ends here). The connection cannot be reused, and our goodbye
// would cut into the body: it is aborted, and the record says why: a body left before its
// end, not server_close (which names a graceful close the server asked for).
func TestGoodbyeRequestBodyStillGoingOut(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, "ok\n")
		return witness.KeepAlive
	}})
	c := newGoodbyeClient(t, &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()})
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("the start of a body that never ends")) // returns once read, or at the Close
	resp, err := c.tr.RoundTrip(newRequest(t, boundedCtx(t), "POST", s.URL()+"/", pr))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok\n" {
		t.Errorf("body: got %q, %v, want %q", b, err, "ok\n")
	}
	resp.Body.Close()
	r := c.wait(t, 1)[0]
	if want := (goodbyeRecord{Mode: "abort", Reason: "body_closed_early", Outcome: "aborted"}); r != want {
		t.Errorf("record:\n got %v\nwant %v", r, want)
	}
	reps, err := s.WaitConns(boundedCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep := reps[0]; rep.CloseNotifyReceived || rep.ClientEnd == witness.EndOpen {
		t.Errorf("server saw %q, want FIN or RST without close_notify", rep.ClientEnding())
	}
}
