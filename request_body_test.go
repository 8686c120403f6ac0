package endwell_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// TestStreamedBodyGoesOutAsRead: a request body that is not in memory reaches the server
// piece by piece, as the caller gives it, not when a buffer fills or the body ends: a
// duplex exchange, whose body ends only after the server has answered its first piece,
// works as with net/http. Both a chunked body and one of declared length.
func TestStreamedBodyGoesOutAsRead(t *testing.T) {
	for _, cl := range []int64{-1, 8} {
		t.Run(fmt.Sprintf("ContentLength=%d", cl), func(t *testing.T) {
			checkLeaks(t)
			srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
				c.SetDeadline(time.Now().Add(waitFor))
				req, err := http.ReadRequest(r.br)
				if err != nil {
					return
				}
				first := make([]byte, 4)
				if _, err := io.ReadFull(req.Body, first); err != nil || string(first) != "ping" {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong")
				io.Copy(io.Discard, req.Body)
			})
			run := func(rt http.RoundTripper) error {
				ctx := boundedCtx(t)
				pr, pw := io.Pipe()
				answered := make(chan struct{})
				go func() {
					pw.Write([]byte("ping"))
					select {
					case <-answered:
					case <-ctx.Done():
					}
					pw.Write([]byte("more"))
					pw.Close()
				}()
				req := newRequest(t, ctx, "POST", srv.url(), pr)
				req.ContentLength = cl
				resp, err := rt.RoundTrip(req)
				close(answered)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != "pong" {
					return fmt.Errorf("body %q, %v; want pong", b, err)
				}
				return nil
			}
			std := &http.Transport{}
			defer std.CloseIdleConnections()
			if err := run(std); err != nil {
				t.Fatalf("net/http: %v", err)
			}
			if err := run(newTransport(t, &endwell.Transport{})); err != nil {
				t.Fatalf("endwell: %v", err)
			}
		})
	}
}

// TestBodyLengthMustMatch: a body longer or shorter than its declared ContentLength fails
// the request, as with net/http (a longer one is never cut silently to the declared
// length), and a ContentLength with no body at all is refused before any byte is written,
// the connection kept for the next request.
func TestBodyLengthMustMatch(t *testing.T) {
	checkLeaks(t)
	srv := startAnswerServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	tr := newTransport(t, &endwell.Transport{})
	c := &http.Client{Transport: tr}
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	body := func(s string, streamed bool) func() io.ReadCloser {
		return func() io.ReadCloser {
			if streamed {
				return io.NopCloser(io.MultiReader(strings.NewReader(s)))
			}
			return io.NopCloser(strings.NewReader(s))
		}
	}
	tests := []struct {
		name    string
		body    func() io.ReadCloser // nil: none
		wantErr string
	}{
		{"longer than declared", body("hello world", false), "ContentLength=5 with Body length 11"},
		{"shorter than declared", body("hey", false), "ContentLength=5 with Body length 3"},
		{"streamed, longer", body("hello world", true), "ContentLength=5 with Body length 11"},
		{"streamed, longer, in one big Read", body(strings.Repeat("x", 20000), true), "ContentLength=5 with Body length 20000"},
		{"nil body", nil, "Request.ContentLength=5 with nil Body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			do(t, c, newRequest(t, nil, "GET", srv.url()+"/warm", nil))
			accepts := srv.accepts()
			for _, rt := range []http.RoundTripper{std, tr} {
				req := newRequest(t, boundedCtx(t), "POST", srv.url(), nil)
				if tc.body != nil {
					req.Body = tc.body()
				}
				req.ContentLength = 5
				resp, err := rt.RoundTrip(req)
				if err == nil && rt == std && strings.HasPrefix(tc.name, "streamed") {
					// net/http sends the declared bytes of a streamed body before it reads
					// the rest: a quick server's answer may win the race with its error.
					resp.Body.Close()
					continue
				}
				if err == nil {
					resp.Body.Close()
					t.Fatalf("%T: got %s, want an error", rt, resp.Status)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%T: error %q, want it to say %q", rt, err, tc.wantErr)
				}
			}
			if tc.body == nil {
				// Refused before any I/O: endwell's next request reuses the connection.
				do(t, c, newRequest(t, nil, "GET", srv.url()+"/after", nil))
				if got := srv.accepts(); got != accepts+1 { // +1: net/http's own connection
					t.Errorf("connections: %d new, want 1 (net/http's): endwell's was not kept", got-accepts)
				}
			}
		})
	}
}

// TestResponseRequestIsCallers: the response's Request is the caller's own request, also
// after endwell retried it on a new connection (a stale keep-alive connection), as
// net/http's.
func TestResponseRequestIsCallers(t *testing.T) {
	checkLeaks(t)
	srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
		for k := 1; ; k++ {
			c.SetDeadline(time.Now().Add(waitFor))
			if _, _, err := r.readRequest(); err != nil {
				return
			}
			if n == 1 && k == 2 {
				return // the stale connection: closed without an answer
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t, &endwell.Transport{ResponseHeaderTimeout: time.Minute})
	c := &http.Client{Transport: tr}
	do(t, c, newRequest(t, nil, "GET", srv.url()+"/1", nil))
	req := newRequest(t, nil, "GET", srv.url()+"/2", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request != req {
		t.Errorf("resp.Request is %p, want the caller's request %p", resp.Request, req)
	}
	if srv.accepts() != 2 {
		t.Errorf("connections: %d, want 2 (the request was retried)", srv.accepts())
	}
}

// TestStalledBodyClosedOnError: a request body blocked in its Read (a pipe never fed) is
// closed when the request fails (its context ends), as RoundTrip promises: its writer
// goroutine does not wait for the caller's producer.
func TestStalledBodyClosedOnError(t *testing.T) {
	checkLeaks(t)
	srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
		c.SetDeadline(time.Now().Add(waitFor))
		io.Copy(io.Discard, c)
	})
	tr := newTransport(t, &endwell.Transport{})
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(boundedCtx(t), 100*time.Millisecond)
	defer cancel()
	closed := make(chan struct{})
	req := newRequest(t, ctx, "POST", srv.url(), nil)
	req.Body = closeNotifier{pr, closed}
	req.ContentLength = -1
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-closed:
	case <-time.After(waitFor):
		t.Fatal("the request body was not closed after RoundTrip failed")
	}
}

type closeNotifier struct {
	io.Reader
	closed chan struct{}
}

func (c closeNotifier) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	if rc, ok := c.Reader.(io.Closer); ok {
		return rc.Close()
	}
	return nil
}

// TestUnsolicitedBytesNotReused: a server that sends more than its response (bytes after
// the body) leaves the connection out of step: the next request, even at once, goes on a
// new connection and never reads those bytes as its response, as with net/http.
func TestUnsolicitedBytesNotReused(t *testing.T) {
	checkLeaks(t)
	srv := startAnswerServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloJUNKJUNKJUNK")
	c := &http.Client{Transport: newTransport(t, &endwell.Transport{})}
	for i := range 10 {
		resp, body := do(t, c, newRequest(t, nil, "POST", srv.url(), strings.NewReader("x")))
		if resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("request %d: %s %q", i, resp.Status, body)
		}
	}
	if got := srv.accepts(); got != 10 {
		t.Errorf("connections: %d, want 10 (none reused with junk in it)", got)
	}
}

// startAnswerServer starts a raw server that reads each request, its body included, and
// writes answer, for as long as the client keeps its connection.
func startAnswerServer(t *testing.T, answer string) *rawServer {
	t.Helper()
	return startRawServer(t, func(n int, c net.Conn, r *rawReader) {
		for {
			c.SetDeadline(time.Now().Add(waitFor))
			if _, _, err := r.readRequest(); err != nil {
				return
			}
			io.WriteString(c, answer)
		}
	})
}
