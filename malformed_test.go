package endwell_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/testpeer"
)

// rawServer is a loopback TCP server whose connections are served by a function writing
// raw bytes, to play servers that misbehave.
type rawServer struct{ srv *testpeer.Server }

// rawReader reads requests from a raw server's connection.
type rawReader struct{ br *bufio.Reader }

// readRequest reads one request and its whole body.
func (r *rawReader) readRequest() (*http.Request, string, error) {
	req, err := http.ReadRequest(r.br)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(req.Body)
	return req, string(b), err
}

// startRawServer serves each connection with serve, given its accept number (from 1). The
// server and every connection close when the test ends.
func startRawServer(t *testing.T, serve func(n int, c net.Conn, r *rawReader)) *rawServer {
	t.Helper()
	// One connection: it ends when serve returns.
	return &rawServer{testpeer.Serve(t, nil, func(n int, c net.Conn) {
		serve(n, c, &rawReader{bufio.NewReader(c)})
	})}
}

func (s *rawServer) url() string  { return "http://" + s.srv.Addr() }
func (s *rawServer) accepts() int { return s.srv.Accepts() }

func TestMalformedResponses(t *testing.T) {
	tests := []struct {
		name      string
		resp      string
		close     bool // the server closes after resp
		inBody    bool // the error comes from the body's Read
		wantProto bool // the error is a *endwell.ProtocolError
		wantIs    error
		wantText  string // the error says this, as net/http's does
	}{
		{name: "bad status line", resp: "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", wantProto: true},
		{name: "bad status version", resp: "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", wantProto: true},
		{name: "bad header line", resp: "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n", wantProto: true},
		{name: "conflicting Content-Length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", wantProto: true},
		{name: "garbage", resp: "\x00\x01\x02 garbage \xff\r\n\r\n", wantProto: true},
		{name: "headers over MaxResponseHeaderBytes", resp: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("x", 4096) + "\r\nContent-Length: 0\r\n\r\n", wantProto: true},
		{name: "broken chunked framing", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nabc\r\n0\r\n\r\n", inBody: true, wantProto: true},
		{name: "truncated chunked body", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", close: true, inBody: true, wantIs: io.ErrUnexpectedEOF},
		{name: "truncated Content-Length body", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close: true, inBody: true, wantIs: io.ErrUnexpectedEOF},
		{name: "truncated header line", resp: "HTTP/1.1 200 OK\r\nContent-Len", close: true, wantIs: io.ErrUnexpectedEOF, wantText: "net/http: HTTP/1.x transport connection broken: unexpected EOF"},
		{name: "truncated header block", resp: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", close: true, wantIs: io.ErrUnexpectedEOF, wantText: "net/http: HTTP/1.x transport connection broken: unexpected EOF"},
		{name: "closed before any response", close: true, wantIs: endwell.ErrServerClosedConn},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var reusedBad atomic.Bool
			srv := startRawServer(t, func(n int, c net.Conn, r *rawReader) {
				for k := 1; ; k++ {
					if _, _, err := r.readRequest(); err != nil {
						return
					}
					if n > 1 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					if k > 1 {
						reusedBad.Store(true)
						return
					}
					io.WriteString(c, tc.resp)
					if tc.close {
						return
					}
				}
			})
			tr := newTransport(t, &endwell.Transport{MaxResponseHeaderBytes: 1024})
			c := &http.Client{Transport: tr}

			var err error
			resp, err := c.Do(newRequest(t, boundedCtx(t), "GET", srv.url()+"/", nil))
			if err == nil {
				if !tc.inBody {
					t.Errorf("RoundTrip: got %v, want an error", resp.Status)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			} else if tc.inBody {
				t.Errorf("RoundTrip: got %v, want a response whose body fails", err)
			}
			if err == nil {
				t.Fatal("error: got nil, want an error")
			}
			var pe *endwell.ProtocolError
			if got, want := errors.As(err, &pe), tc.wantProto; got != want {
				t.Errorf("error %v is a *ProtocolError: got %v, want %v", err, got, want)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error: got %v, want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error: got %q, want it to say %q", err, tc.wantText)
			}

			// The connection is never reused: the next request dials anew.
			_, body := do(t, c, newRequest(t, boundedCtx(t), "GET", srv.url()+"/", nil))
			if got, want := body, "ok"; got != want {
				t.Errorf("next request: body got %q, want %q", got, want)
			}
			if got, want := srv.accepts(), 2; got != want {
				t.Errorf("connections accepted: got %v, want %v", got, want)
			}
			if reusedBad.Load() {
				t.Error("the connection of the malformed response was reused")
			}
		})
	}
}
