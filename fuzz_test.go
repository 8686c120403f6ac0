package endwell_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// FuzzResponse serves arbitrary bytes as the server's answer to a GET and checks the
// transport's invariants: no panic; an error, or a well-formed response whose body reads
// to EOF or an error; and nothing left behind once the transport is closed (no connection
// in its stats, no goroutine).
//
// The server is in memory (net.Pipe), so that an execution costs microseconds: it reads
// the request head, writes the bytes, and hangs up.
func FuzzResponse(f *testing.F) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("hello, gzip"))
	zw.Close()
	seeds := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil EOF",
		"HTTP/1.0 200 OK\r\n\r\nHTTP/1.0 body",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n1\r\na\r\n0\r\nX-T: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntruncated",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nraw bytes",
		"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: " + strconv.Itoa(gz.Len()) + "\r\n\r\n" + gz.String(),
		"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", // bytes after the body
		"HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n",
		"HTTP/1.1 2OO OK\r\n\r\n",
		"HTTP/9.9 200 OK\r\n\r\n",
		"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\n\n",
		"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Le",
		"\x16\x03\x01\x00\x05hello", // a TLS record to a plain client
		"",
		"\r\n\r\n",
		"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		before := runtime.NumGoroutine()
		tr := &endwell.Transport{
			DialContext:     pipeDialer(data),
			ShutdownTimeout: 100 * time.Millisecond,
			MaxDrainTime:    10 * time.Millisecond,
		}
		done := make(chan struct{})
		// A watchdog: an execution that hangs is a bug; report the input.
		watchdog := time.AfterFunc(10*time.Second, func() {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic("FuzzResponse: execution hung on " + strconv.Quote(string(data)) + "\n" + string(buf[:n]))
		})
		defer watchdog.Stop()
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://fuzz.test/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				if resp != nil {
					t.Errorf("RoundTrip returned both a response and an error: %v", err)
				}
				return
			}
			if resp.StatusCode < 100 || resp.StatusCode > 999 || resp.Body == nil || resp.Header == nil {
				t.Errorf("malformed response: status %d, body %v, header %v", resp.StatusCode, resp.Body, resp.Header)
			}
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
			if err != nil && errors.Is(err, endwell.ErrBodyClosed) {
				t.Errorf("reading the body: %v before Close", err)
			}
			resp.Body.Close()
		}()
		<-done
		tr.Close()
		// Close returns once the teardowns it knows of are over; one that a concurrent
		// abort (a body drain failing) had just begun may still be finishing: allow it
		// a moment, as the goroutines below.
		deadline := time.Now().Add(2 * time.Second)
		for {
			s := tr.Stats()
			if s.Active+s.Idle+s.Closing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after Close: %d active, %d idle, %d closing connections, want none", s.Active, s.Idle, s.Closing)
			}
			time.Sleep(time.Millisecond)
		}
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutines: got %d, want at most %d as before:\n%s", runtime.NumGoroutine(), before, buf[:n])
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// pipeDialer returns a DialContext whose connections are in-memory pipes to a server that
// reads the request head, writes resp, and hangs up. The server's goroutine exits when the
// client closes its end.
func pipeDialer(resp []byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		client, server := net.Pipe()
		// The server's side of one connection.
		go func() {
			defer server.Close()
			br := bufio.NewReader(server)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 && strings.TrimSpace(string(line)) == "" {
					break
				}
			}
			server.Write(resp)
		}()
		return client, nil
	}
}
