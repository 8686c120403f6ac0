//lint:file-ignore SA1019 the canaries drive x/net's deprecated ClientConn on purpose: endwell's HTTP/2 runs on it (see h2.go)

package endwell

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http2"
)

// TestH2ConnectionErrorTypedAtOnce: an HTTP/2 connection error comes back as a
// *ProtocolError with its code every time, whichever of x/net's stream error and its close
// of the connection endwell sees first; and the dead connection never goes back to the
// pool: the next request, made at once, gets a new connection and succeeds.
func TestH2ConnectionErrorTypedAtOnce(t *testing.T) {
	for _, proto := range h2Protos {
		t.Run(proto.String(), func(t *testing.T) {
			h2CheckLeaks(t)
			// The first request of each connection gets DATA on stream 0, a connection
			// error (PROTOCOL_ERROR); the second, "ok".
			srv := startHostileServer(t, proto, hsScripts{h2: func(c *hsConn, id uint32, n int) {
				if n%2 == 1 {
					c.write(func(fr *http2.Framer) error { return fr.WriteData(0, false, []byte("x")) })
					c.stall()
					return
				}
				c.respond(id, "ok")
			}})
			tr := &Transport{TLSClientConfig: h2TestCert(t).client, ShutdownTimeout: hostileBudget}
			if proto == protoH2C {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				tr.Protocols = &p
			}
			defer tr.Close()
			const rounds = 20
			for i := range rounds {
				var failed net.Conn
				trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { failed = info.Conn }}
				req := mustGet(t, srv.url("/"))
				_, err := tr.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("round %d: got %T %v, want a *ProtocolError", i, err, err)
				}
				if code, ok := pe.HTTP2Code(); !ok || code != http2.ErrCodeProtocol {
					t.Fatalf("round %d: HTTP2Code: got %v %v, want PROTOCOL_ERROR true", i, code, ok)
				}
				var ce http2.ConnectionError
				if !errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeProtocol {
					t.Errorf("round %d: errors.As to http2.ConnectionError: got %v, want PROTOCOL_ERROR", i, ce)
				}
				// The next request, at once: never handed the dead connection.
				var got []net.Conn
				trace = &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { got = append(got, info.Conn) }}
				req = mustGet(t, srv.url("/next"))
				resp, err := tr.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
				if err != nil {
					t.Fatalf("round %d: the next request: %v", i, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != "ok" {
					t.Fatalf("round %d: the next request: got %q, %v; want ok", i, body, err)
				}
				for _, c := range got {
					if c == failed {
						t.Fatalf("round %d: the next request was handed the connection that had failed", i)
					}
				}
			}
			tr.CloseIdleConnections()
			if open := srv.waitGone(hostileBudget + hostileSlack); len(open) > 0 {
				t.Errorf("%d connection(s) still open after CloseIdleConnections", len(open))
			}
		})
	}
}

// TestH2StreamErrorIsTyped: a server's RST_STREAM comes back as a *StreamError with its
// code, in which errors.As also finds x/net's http2.StreamError; REFUSED_STREAM matches
// ErrNotSent, and NotSent reports it (a request whose body can't be sent again: else it
// is retried, see TestH2RefusedStreamRetried). The connection lives on.
func TestH2StreamErrorIsTyped(t *testing.T) {
	for _, rst := range []http2.ErrCode{http2.ErrCodeInternal, http2.ErrCodeRefusedStream, http2.ErrCodeCancel, http2.ErrCodeProtocol} {
		t.Run(rst.String(), func(t *testing.T) {
			h2CheckLeaks(t)
			srv := startHostileServer(t, protoH2, hsScripts{h2: func(c *hsConn, id uint32, n int) {
				if n == 1 {
					c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, rst) })
					return
				}
				c.respond(id, "ok")
			}})
			tr, recs := h2Transport(t, &Transport{})
			req := mustGet(t, srv.url("/"))
			req.Method = "POST"
			req.Body = io.NopCloser(strings.NewReader("once")) // no GetBody: not sent again
			_, err := tr.RoundTrip(req)
			var se *StreamError
			if !errors.As(err, &se) || se.Code != rst {
				t.Fatalf("got %T %v, want a *StreamError with code %v", err, err, rst)
			}
			var xe http2.StreamError
			if !errors.As(err, &xe) || xe.Code != rst || xe.StreamID != se.StreamID {
				t.Errorf("errors.As to http2.StreamError: got %+v, want stream %d, code %v", xe, se.StreamID, rst)
			}
			if got, want := errors.Is(err, ErrNotSent), rst == http2.ErrCodeRefusedStream; got != want {
				t.Errorf("errors.Is(err, ErrNotSent): got %v, want %v", got, want)
			}
			if got, want := NotSent(err), rst == http2.ErrCodeRefusedStream; got != want {
				t.Errorf("NotSent: got %v, want %v", got, want)
			}
			for h2Get(t, tr, srv.url("/")) != "ok" {
			}
			// PROTOCOL_ERROR: x/net takes no new stream on the connection (golang/go#47635),
			// which ends gracefully; the next request gets another.
			want := 1
			if rst == http2.ErrCodeProtocol {
				want = 2
				// A stream's error, not the connection's: no GOAWAY(PROTOCOL_ERROR).
				wantRecord(t, recs.next(t), shutdown.Graceful, "server_close")
			}
			if n := len(srv.connections()); n != want {
				t.Errorf("server connections: got %d, want %d", n, want)
			}
		})
	}
}

// TestH2RefusedStreamRetried: a stream the server refuses unprocessed (REFUSED_STREAM) is
// sent again, as net/http's HTTP/2 does: at once, then after 1 s, 2 s... (at most 6 times
// more, within the request's context); a server that refuses twice costs a second.
func TestH2RefusedStreamRetried(t *testing.T) {
	h2CheckLeaks(t)
	srv := startHostileServer(t, protoH2, hsScripts{h2: func(c *hsConn, id uint32, n int) {
		if n <= 2 {
			c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
			return
		}
		c.respond(id, "ok")
	}})
	tr, _ := h2Transport(t, &Transport{})
	start := time.Now()
	if got := h2Get(t, tr, srv.url("/")); got != "ok" {
		t.Fatalf("got %q, want ok", got)
	}
	if d := time.Since(start); d < time.Second || d > 2*time.Second {
		t.Errorf("refused twice, answered after %v, want a second's backoff", d)
	}

	// A request whose context ends during the backoff fails with the context's error.
	refuseAll := startHostileServer(t, protoH2, hsScripts{h2: func(c *hsConn, id uint32, n int) {
		c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", refuseAll.url("/"), nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("refused until the deadline: got %v, want context.DeadlineExceeded", err)
	}
}

// TestSwitchedBodyCloseInterruptsWrite: Close of a switched-protocol body cuts short a
// Write blocked on a server that does not read: the Write returns at once with
// ErrBodyClosed, and the connection is aborted (the other protocol's message was cut).
func TestSwitchedBodyCloseInterruptsWrite(t *testing.T) {
	h2CheckLeaks(t)
	srv := startHostileServer(t, protoH1TLS, hsScripts{noRead: true, h1: func(c *hsConn, req *http.Request, n int) {
		c.writeString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")
	}})
	tr, recs := h2Transport(t, &Transport{ShutdownTimeout: hostileBudget})
	req := mustGet(t, srv.url("/"))
	upgradeTo("x-test")(req)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	rwc := resp.Body.(io.ReadWriteCloser)
	wrote := make(chan error, 1)
	var written atomic.Int64
	// The blocked Write: the server reads nothing after the request, so the socket's
	// buffers fill.
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			n, err := rwc.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				wrote <- err
				return
			}
		}
	}()
	// Blocked: nothing more goes out for 50 ms.
	for last := int64(-1); written.Load() != last; time.Sleep(50 * time.Millisecond) {
		last = written.Load()
	}
	rwc.Close()
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrBodyClosed) {
			t.Errorf("the blocked Write: got %v, want ErrBodyClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("the blocked Write did not return within 1s of Close")
	}
	r := recs.next(t)
	if r.Reason != reasonBodyClosedEarly || r.CloseNotifySent {
		t.Errorf("teardown: got %v %s, close_notify %v; want abort body_closed_early, no close_notify", r.Mode, r.Reason, r.CloseNotifySent)
	}
}
