package endwell_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// Issue 8: go-retryablehttp and http.Client over endwell. The tests drive real retries and
// redirects against a witness server and judge from the wire how each abandoned attempt
// ended: a body too large to drain is aborted without close_notify, a small one is drained
// and its connection reused.

// retryWait bounds every wait of these tests.
const retryWait = 5 * time.Second

// retryWitness starts a TLS witness server with handler h, closed when the test ends.
func retryWitness(t testing.TB, h witness.Handler) *witness.Server {
	t.Helper()
	s := witness.New(witness.Options{TLS: true, Handler: h})
	if err := s.Start(); err != nil {
		t.Fatalf("witness Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// retryTransport returns a Transport that trusts s, closed when the test ends.
func retryTransport(t testing.TB, s *witness.Server) *endwell.Transport {
	tr := &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// retryClient returns a retryablehttp client over tr with the endwell policy wrapping
// next, three attempts, short backoffs and no logging.
func retryClient(tr *endwell.Transport, next retryablehttp.CheckRetry) *retryablehttp.Client {
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: tr}
	rc.CheckRetry = next
	rc.RetryMax = 2
	rc.RetryWaitMin, rc.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	rc.Logger = nil
	return rc
}

// waitAllConns shuts tr down, then waits until every connection the witness accepted has
// ended, and returns their reports in end order.
func waitAllConns(t *testing.T, s *witness.Server, tr *endwell.Transport) []witness.ConnReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	n := len(s.Reports())
	reps, err := s.WaitConns(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d connections to end: %v (ended: %v)", n, err, reps)
	}
	return reps
}

// respondN answers with status and a body of n bytes.
func respondN(c *witness.Conn, status int, h http.Header, n int) witness.Action {
	if err := c.Respond(status, h, strings.Repeat("x", n)); err != nil {
		return witness.CloseFIN // the client went: nothing more to say
	}
	return witness.KeepAlive
}

// ExampleRetryPolicy: go-retryablehttp over an endwell Transport, with endwell's retry
// policy. The server is unavailable for the first two requests; each of those answers is
// small, so the body that retryablehttp drains ends at its EOF and the connection is
// reused: one connection serves all three attempts, then ends with close_notify.
func ExampleRetryPolicy() {
	var n atomic.Int32
	srv := witness.New(witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		if n.Add(1) <= 2 {
			c.Respond(http.StatusServiceUnavailable, nil, "busy, try again\n")
		} else {
			c.Respond(http.StatusOK, nil, "hello\n")
		}
		return witness.KeepAlive
	}})
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer srv.Close()

	t := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig()}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Transport: t}
	rc.CheckRetry = endwell.RetryPolicy(retryablehttp.DefaultRetryPolicy)
	rc.RetryWaitMin, rc.RetryWaitMax = time.Millisecond, 10*time.Millisecond
	rc.Logger = nil

	resp, err := rc.Get(srv.URL())
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s %q\n", resp.Status, body)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.Shutdown(ctx)
	reps, err := srv.WaitConns(ctx, 1)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d requests on connection #%d, ended with %s\n", reps[0].Requests, reps[0].ID, reps[0].ClientEnding())
	// Output:
	// 200 OK "hello\n"
	// 3 requests on connection #1, ended with close_notify+FIN
}

// TestRetryPolicy checks the policy's decisions on crafted responses and errors, as
// http.Client and retryablehttp hand them over.
func TestRetryPolicy(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(live)
	cancel()
	urlErr := func(method string, err error) error {
		// What http.Client returns: Op is the method in its own case, "Get", "Post".
		op := method[:1] + strings.ToLower(method[1:])
		return &url.Error{Op: op, URL: "https://example.com/", Err: err}
	}
	dialErr := &endwell.DialError{Op: "dial", Addr: "127.0.0.1:1", Err: errors.New("connection refused")}
	writtenErr := fmt.Errorf("%w: %w", endwell.ErrServerClosedConn, io.EOF)
	response := func(status int, req *http.Request) *http.Response {
		return &http.Response{StatusCode: status, Status: strconv.Itoa(status), Header: http.Header{}, Request: req}
	}
	request := func(method string, h http.Header) *http.Request {
		if h == nil {
			h = http.Header{}
		}
		u, _ := url.Parse("https://example.com/")
		return &http.Request{Method: method, URL: u, Header: h}
	}
	// redirected returns the request http.Client makes after from was answered 303.
	redirected := func(method string, from *http.Request) *http.Request {
		r := request(method, nil)
		r.Response = response(http.StatusSeeOther, from)
		return r
	}
	always := func(context.Context, *http.Response, error) (bool, error) { return true, nil }

	tests := []struct {
		name    string
		ctx     context.Context
		next    retryablehttp.CheckRetry // nil: DefaultRetryPolicy
		resp    *http.Response
		err     error
		want    bool
		wantErr error
	}{
		{name: "context cancelled", ctx: cancelled, err: urlErr("GET", dialErr), wantErr: context.Canceled},
		{name: "GET dial failure", err: urlErr("GET", dialErr), want: true},
		{name: "POST dial failure", err: urlErr("POST", dialErr), want: true},
		{name: "PATCH not sent, bare error", err: fmt.Errorf("stale: %w", endwell.ErrNotSent), want: true},
		{name: "POST request refused by endwell", err: urlErr("POST", &endwell.RequestError{Reason: "invalid method"})},
		{name: "GET after Shutdown", err: urlErr("GET", endwell.ErrShutdown)},
		{name: "GET after Close", err: urlErr("GET", endwell.ErrClosed)},
		{name: "GET deadline", err: urlErr("GET", context.DeadlineExceeded)},
		{name: "POST deadline", err: urlErr("POST", context.DeadlineExceeded)},
		{name: "GET cancelled", err: urlErr("GET", context.Canceled)},
		{name: "GET written, server closed", err: urlErr("GET", writtenErr), want: true},
		{name: "HEAD written, server closed", err: urlErr("HEAD", writtenErr), want: true},
		{name: "PUT written, server closed", err: urlErr("PUT", writtenErr), want: true},
		{name: "DELETE written, server closed", err: urlErr("DELETE", writtenErr), want: true},
		{name: "OPTIONS written, server closed", err: urlErr("OPTIONS", writtenErr), want: true},
		{name: "TRACE written, server closed", err: urlErr("TRACE", writtenErr), want: true},
		{name: "POST written, server closed", err: urlErr("POST", writtenErr)},
		{name: "PATCH written, server closed", err: urlErr("PATCH", writtenErr)},
		{name: "POST written, server closed, marked idempotent", ctx: endwell.WithIdempotent(live), err: urlErr("POST", writtenErr), want: true},
		{name: "POST written, bare error", err: writtenErr},
		{name: "POST header timeout", err: urlErr("POST", endwell.ErrResponseHeaderTimeout)},
		{name: "GET header timeout", err: urlErr("GET", endwell.ErrResponseHeaderTimeout), want: true},
		{name: "POST malformed response", err: urlErr("POST", &endwell.ProtocolError{Err: errors.New("bad")})},
		{name: "GET malformed response", err: urlErr("GET", &endwell.ProtocolError{Err: errors.New("bad")}), want: true},
		{name: "GET 503", resp: response(503, request("GET", nil)), want: true},
		{name: "GET 200", resp: response(200, request("GET", nil))},
		{name: "GET 200, next says retry", next: always, resp: response(200, request("GET", nil)), want: true},
		{name: "POST 503", resp: response(503, request("POST", nil))},
		{name: "POST 503, next says retry", next: always, resp: response(503, request("POST", nil))},
		{name: "POST 429", resp: response(429, request("POST", nil))},
		{name: "POST 503 with Idempotency-Key", resp: response(503, request("POST", http.Header{"Idempotency-Key": {"k1"}})), want: true},
		{name: "POST 503 marked idempotent", ctx: endwell.WithIdempotent(live), resp: response(503, request("POST", nil)), want: true},
		{name: "POST redirected to GET, 503", resp: response(503, redirected("GET", request("POST", nil)))},
		{name: "PUT redirected to GET, 503", resp: response(503, redirected("GET", request("PUT", nil))), want: true},
		{name: "unknown request, 503", resp: response(503, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = live
			}
			got, err := endwell.RetryPolicy(tt.next)(ctx, tt.resp, tt.err)
			if got != tt.want {
				t.Errorf("retry: got %v, want %v", got, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error: got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestRetryAbandonedAttempts: retryablehttp against a server that answers 503 every time.
// It drains up to 4 KiB of each failed answer and closes the body. A large body can't be
// drained: each attempt's connection is aborted, without close_notify. A small one is read
// to its end: the connection is reused by every attempt, and ends gracefully.
func TestRetryAbandonedAttempts(t *testing.T) {
	tests := []struct {
		name       string
		bodySize   int
		wantConns  int
		wantAborts int
	}{
		{name: "1 MiB body", bodySize: 1 << 20, wantConns: 3, wantAborts: 3},
		{name: "100 byte body", bodySize: 100, wantConns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := retryWitness(t, func(c *witness.Conn, r *http.Request) witness.Action {
				return respondN(c, http.StatusServiceUnavailable, nil, tt.bodySize)
			})
			tr := retryTransport(t, s)
			rc := retryClient(tr, endwell.RetryPolicy(retryablehttp.DefaultRetryPolicy))
			ctx, cancel := context.WithTimeout(context.Background(), retryWait)
			defer cancel()
			req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/busy", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := rc.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("Do: got %v, want an error (giving up)", resp.Status)
			}

			// A connection per attempt when each was aborted, one for all when reused.
			reps := waitAllConns(t, s, tr)
			if got := len(reps); got != tt.wantConns {
				t.Fatalf("connections: got %d, want %d (%v)", got, tt.wantConns, reps)
			}
			requests := 0
			for _, r := range reps {
				requests += r.Requests
			}
			if got, want := requests, rc.RetryMax+1; got != want {
				t.Errorf("requests: got %d, want %d", got, want)
			}
			for _, r := range reps {
				abandoned := tt.wantAborts > 0
				if got, want := r.CloseNotifyReceived, !abandoned; got != want {
					t.Errorf("%v: close_notify received: got %v, want %v", r, got, want)
				}
				if r.ClientEnd == witness.EndOpen {
					t.Errorf("%v: client end: got %v, want FIN or RST", r, r.ClientEnd)
				}
			}
			st := tr.Stats()
			aborts := st.Closes[endwell.CloseKey{Mode: "abort", Reason: "body_closed_early", Outcome: "aborted"}]
			if got, want := aborts, uint64(tt.wantAborts); got != want {
				t.Errorf("body_closed_early aborts: got %d, want %d (closes: %v)", got, want, st.Closes)
			}
		})
	}
}

// TestRetryWrittenRequests: the server reads each request and hangs up without answering.
// The request reached it: endwell's policy sends it again only when it is idempotent. A
// POST is sent once (retryablehttp's own policy would send it three times).
func TestRetryWrittenRequests(t *testing.T) {
	tests := []struct {
		name         string
		method       string
		header       http.Header
		idempotent   bool // the context is marked with WithIdempotent
		policy       retryablehttp.CheckRetry
		wantRequests int
	}{
		{name: "GET", method: http.MethodGet, policy: endwell.RetryPolicy(nil), wantRequests: 3},
		{name: "PUT", method: http.MethodPut, policy: endwell.RetryPolicy(nil), wantRequests: 3},
		{name: "POST", method: http.MethodPost, policy: endwell.RetryPolicy(nil), wantRequests: 1},
		{name: "PATCH", method: http.MethodPatch, policy: endwell.RetryPolicy(nil), wantRequests: 1},
		{name: "POST marked idempotent", method: http.MethodPost, header: http.Header{"Idempotency-Key": {"k1"}}, idempotent: true, policy: endwell.RetryPolicy(nil), wantRequests: 3},
		{name: "POST, retryablehttp's own policy", method: http.MethodPost, policy: retryablehttp.DefaultRetryPolicy, wantRequests: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got atomic.Int32
			s := retryWitness(t, func(c *witness.Conn, r *http.Request) witness.Action {
				got.Add(1)
				c.DiscardBody()
				return witness.CloseFIN
			})
			tr := retryTransport(t, s)
			rc := retryClient(tr, tt.policy)
			ctx, cancel := context.WithTimeout(context.Background(), retryWait)
			defer cancel()
			if tt.idempotent {
				ctx = endwell.WithIdempotent(ctx)
			}
			req, err := retryablehttp.NewRequestWithContext(ctx, tt.method, s.URL(), []byte("payload"))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := rc.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("Do: got %v, want an error", resp.Status)
			}
			if !errors.Is(err, endwell.ErrServerClosedConn) {
				t.Errorf("Do: got %v, want %v", err, endwell.ErrServerClosedConn)
			}
			if errors.Is(err, endwell.ErrNotSent) {
				t.Errorf("Do: got %v matching ErrNotSent, want not", err)
			}
			waitAllConns(t, s, tr)
			if got, want := int(got.Load()), tt.wantRequests; got != want {
				t.Errorf("requests received: got %d, want %d", got, want)
			}
		})
	}
}

// TestRetryPOSTWithoutGetBody: a POST without GetBody, sent on a reused connection that the
// server closes once it has read the request, is not sent again, neither by the transport
// nor by the policy.
func TestRetryPOSTWithoutGetBody(t *testing.T) {
	var posts atomic.Int32
	s := retryWitness(t, func(c *witness.Conn, r *http.Request) witness.Action {
		if r.Method == http.MethodPost {
			posts.Add(1)
			c.DiscardBody()
			return witness.CloseFIN
		}
		c.Respond(http.StatusOK, nil, "ok\n")
		return witness.KeepAlive
	})
	tr := retryTransport(t, s)
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()

	// A first request leaves a connection idle, to be reused by the POST.
	get, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL(), nil)
	resp, err := client.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	body := io.NopCloser(strings.NewReader("payload")) // not a type NewRequest knows: no GetBody
	post, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL(), body)
	if post.GetBody != nil {
		t.Fatal("GetBody: got a function, want nil")
	}
	_, err = client.Do(post)
	if !errors.Is(err, endwell.ErrServerClosedConn) {
		t.Fatalf("POST: got %v, want %v", err, endwell.ErrServerClosedConn)
	}
	if retry, _ := endwell.RetryPolicy(nil)(ctx, nil, err); retry {
		t.Errorf("policy: got retry %v, want %v", retry, false)
	}
	reps := waitAllConns(t, s, tr)
	if got, want := posts.Load(), int32(1); got != want {
		t.Errorf("POSTs received: got %d, want %d", got, want)
	}
	if got, want := len(reps), 1; got != want {
		t.Errorf("connections: got %d, want %d (%v)", got, want, reps)
	}
}

// TestRedirectAbandonedBody: http.Client reads at most 2 KiB of a redirect's body, and
// none of one declared larger, then closes it. A large redirect body is aborted without
// close_notify and the redirect followed on a new connection; a small one is read to its
// end and its connection reused for the redirect.
func TestRedirectAbandonedBody(t *testing.T) {
	// wantConns maps each connection's requests to whether it was aborted: ended without
	// close_notify. The others end gracefully at Shutdown, with close_notify then FIN.
	abandoned := map[string]bool{"GET /from": true, "GET /to": false}
	reused := map[string]bool{"GET /from, GET /to": false}
	tests := []struct {
		name      string
		bodySize  int
		chunked   bool
		wantConns map[string]bool
	}{
		{name: "1 MiB body", bodySize: 1 << 20, wantConns: abandoned},
		{name: "1 MiB chunked body", bodySize: 1 << 20, chunked: true, wantConns: abandoned},
		{name: "100 byte body", bodySize: 100, wantConns: reused},
		{name: "100 byte chunked body", bodySize: 100, chunked: true, wantConns: reused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := retryWitness(t, func(c *witness.Conn, r *http.Request) witness.Action {
				if r.URL.Path != "/from" {
					c.Respond(http.StatusOK, nil, "arrived\n")
					return witness.KeepAlive
				}
				h := http.Header{"Location": {"/to"}}
				if !tt.chunked {
					return respondN(c, http.StatusFound, h, tt.bodySize)
				}
				chunks := make([]string, 0, tt.bodySize/(16<<10)+1)
				for n := tt.bodySize; n > 0; n -= 16 << 10 {
					chunks = append(chunks, strings.Repeat("x", min(n, 16<<10)))
				}
				if err := c.RespondChunked(http.StatusFound, h, chunks, nil); err != nil {
					return witness.CloseFIN
				}
				return witness.KeepAlive
			})
			tr := retryTransport(t, s)
			client := &http.Client{Transport: tr}
			ctx, cancel := context.WithTimeout(context.Background(), retryWait)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/from", nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "arrived\n" {
				t.Fatalf("body: got %q, %v, want %q", b, err, "arrived\n")
			}

			reps := waitAllConns(t, s, tr)
			if got, want := len(reps), len(tt.wantConns); got != want {
				t.Fatalf("connections: got %d, want %d (%v)", got, want, reps)
			}
			for _, r := range reps {
				lines := strings.Join(r.RequestLines, ", ")
				aborted, ok := tt.wantConns[lines]
				if !ok {
					t.Errorf("%v: requests: got %q, want one of %v", r, lines, tt.wantConns)
					continue
				}
				if got, want := r.CloseNotifyReceived, !aborted; got != want {
					t.Errorf("%v: close_notify received: got %v, want %v", r, got, want)
				}
				if r.ClientEnd == witness.EndOpen {
					t.Errorf("%v: client end: got %v, want FIN or RST", r, r.ClientEnd)
				}
			}
		})
	}
}

// TestCloseIdleConnectionsStorm: CloseIdleConnections called over and over from many
// goroutines, as retryablehttp does after every failed Do, while other requests come and
// go, leaves a request in flight alone: its response completes and its connection is not
// aborted.
func TestCloseIdleConnectionsStorm(t *testing.T) {
	const bodySize = 256 << 10
	want := bytes.Repeat([]byte("0123456789abcdef"), bodySize/16)
	release := make(chan struct{})
	s := retryWitness(t, func(c *witness.Conn, r *http.Request) witness.Action {
		if r.URL.Path != "/slow" {
			c.Respond(http.StatusOK, nil, "ok\n")
			return witness.KeepAlive
		}
		if err := c.WriteHead(http.StatusOK, http.Header{"Content-Length": {strconv.Itoa(bodySize)}}); err != nil {
			return witness.CloseFIN
		}
		c.Write(want[:bodySize/2])
		select {
		case <-release:
		case <-c.Context().Done():
			return witness.CloseFIN
		}
		c.Write(want[bodySize/2:])
		return witness.KeepAlive
	})
	tr := retryTransport(t, s)
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), retryWait)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/slow", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make([]byte, bodySize)
	if _, err := io.ReadFull(resp.Body, got[:bodySize/2]); err != nil {
		t.Fatalf("first half: %v", err)
	}

	// The storm: closers, and clients whose connections go idle and get closed.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				tr.CloseIdleConnections()
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 20 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/fast", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("fast request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	close(release)

	if _, err := io.ReadFull(resp.Body, got[bodySize/2:]); err != nil {
		t.Fatalf("second half: %v", err)
	}
	if n, err := resp.Body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the body: got %d, %v, want 0, EOF", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("body: got %d bytes differing from the %d sent", len(got), len(want))
	}

	reps := waitAllConns(t, s, tr)
	found := false
	for _, r := range reps {
		if len(r.RequestLines) > 0 && r.RequestLines[0] == "GET /slow" {
			found = true
			if got, want := r.ClientEnding(), "close_notify+FIN"; got != want {
				t.Errorf("%v: client ending: got %q, want %q", r, got, want)
			}
		}
	}
	if !found {
		t.Errorf("the /slow connection: got none, want one (%v)", reps)
	}
	for k, n := range tr.Stats().Closes {
		if k.Mode != "graceful" {
			t.Errorf("closes %v: got %d, want 0", k, n)
		}
	}
}

// BenchmarkCloseIdleConnections measures CloseIdleConnections, which retryablehttp calls
// after every failed Do, with connections in use and none idle (the common case in a storm
// of failures: the first call closed them), from one goroutine and from many at once; and
// with a few idle connections, which it hands to background closes. In the idle case the
// connections are made again before each call, outside the measure: ns/op is the call's
// own time, in the caller's goroutine (the graceful closes it starts run afterwards).
func BenchmarkCloseIdleConnections(b *testing.B) {
	srv := newFastServer(b, nil)
	url := srv.url("http")
	for _, bc := range []struct {
		active, idle int
		parallel     bool
	}{
		{active: 0}, {active: 64}, {active: 64, parallel: true}, {active: 64, idle: 8},
	} {
		name := fmt.Sprintf("active=%d/idle=%d", bc.active, bc.idle)
		if bc.parallel {
			name += "/parallel"
		}
		b.Run(name, func(b *testing.B) {
			tr := &endwell.Transport{}
			defer tr.Close()
			// Bounds every request, so that a hang fails the benchmark instead.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			open := func(n int) []*http.Response {
				resps := make([]*http.Response, n)
				for i := range resps {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					resp, err := tr.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					resps[i] = resp // its body unread: the connection stays in use
				}
				return resps
			}
			active := open(bc.active)
			defer func() {
				for _, r := range active {
					r.Body.Close()
				}
			}()
			if got := tr.Stats().Active; got != bc.active {
				b.Fatalf("active connections: got %d, want %d", got, bc.active)
			}
			switch {
			case bc.parallel:
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						tr.CloseIdleConnections()
					}
				})
			case bc.idle == 0:
				b.ReportAllocs()
				for b.Loop() {
					tr.CloseIdleConnections()
				}
			default:
				var spent time.Duration
				for b.Loop() {
					for _, r := range open(bc.idle) {
						io.Copy(io.Discard, r.Body)
						r.Body.Close()
					}
					// Let the previous call's background closes end, so that they do not
					// compete with this one for the CPU.
					for deadline := time.Now().Add(time.Second); tr.Stats().Closing > 0 && time.Now().Before(deadline); {
						time.Sleep(20 * time.Microsecond)
					}
					start := time.Now()
					tr.CloseIdleConnections()
					spent += time.Since(start)
				}
				b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N), "ns/op")
			}
			if got := tr.Stats().Active; got != bc.active {
				b.Fatalf("active connections after: got %d, want %d", got, bc.active)
			}
		})
	}
}
