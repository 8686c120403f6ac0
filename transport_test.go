package endwell_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Open the runtime's network poller before any test counts file descriptors.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
		}
		ln.Close()
	}
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait of these tests.
const waitFor = 5 * time.Second

// checkLeaks records the goroutines and file descriptors open now and, when the test ends,
// after the cleanups registered later (they run first), fails if any new one is left.
func checkLeaks(t *testing.T) {
	t.Helper()
	warmNetpoll()
	ignore := goleak.IgnoreCurrent()
	fds := countFDs()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("leaked goroutines: %v", err)
		}
		if fds < 0 {
			return // not Linux
		}
		deadline := time.Now().Add(waitFor)
		for {
			n := countFDs()
			if n <= fds {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("open file descriptors: got %d, want at most %d", n, fds)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// countFDs returns the number of open file descriptors, or -1 where /proc is missing.
func countFDs() int {
	if runtime.GOOS != "linux" {
		return -1
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// warmNetpoll makes the runtime open the descriptors it keeps for the life of the
// process (the network poller's), so that the first test does not count them as leaked.
var warmNetpoll = sync.OnceFunc(func() {
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
})

// newTransport returns tr, closed (abort) when the test ends.
func newTransport(t *testing.T, tr *endwell.Transport) *endwell.Transport {
	t.Helper()
	t.Cleanup(func() { tr.Close() })
	return tr
}

// startWitness starts a witness server, closed when the test ends.
func startWitness(t *testing.T, opts witness.Options) *witness.Server {
	t.Helper()
	s := witness.New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// boundedCtx returns a context that ends with the test or after waitFor.
func boundedCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// do sends a request and reads its whole body.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newRequest(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// gracefulEnding is how the witness describes a graceful client close.
func gracefulEnding(tls bool) string {
	if tls {
		return "close_notify+FIN"
	}
	return "FIN"
}

// wantWitnessEnds waits until n connections of s ended and checks that each ended as want.
func wantWitnessEnds(t *testing.T, s *witness.Server, n int, want string) []witness.ConnReport {
	t.Helper()
	reps, err := s.WaitConns(boundedCtx(t), n)
	if err != nil {
		t.Fatalf("waiting for %d connections to end: %v (ended: %v)", n, err, reps)
	}
	for _, r := range reps {
		if got := r.ClientEnding(); got != want {
			t.Errorf("connection %v: client ending got %q, want %q", r, got, want)
		}
	}
	return reps
}

// closeTracker is a request body that records its reads and its Close.
type closeTracker struct {
	r      io.Reader
	reads  atomic.Int64 // bytes read
	once   sync.Once
	closed chan struct{}
}

func newCloseTracker(s string) *closeTracker {
	return &closeTracker{r: strings.NewReader(s), closed: make(chan struct{})}
}

func (c *closeTracker) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.reads.Add(int64(n))
	return n, err
}

func (c *closeTracker) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *closeTracker) wantClosed(t *testing.T) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(waitFor):
		t.Errorf("request body closed: got false, want true")
	}
}

func TestZeroTransport(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (url string, tr *endwell.Transport)
	}{
		{"http, zero Transport", func(t *testing.T) (string, *endwell.Transport) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hello")
			}))
			t.Cleanup(srv.Close)
			return srv.URL, new(endwell.Transport)
		}},
		{"https, httptest TLS server", func(t *testing.T) (string, *endwell.Transport) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hello")
			}))
			srv.StartTLS()
			t.Cleanup(srv.Close)
			cfg := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
			return srv.URL, &endwell.Transport{TLSClientConfig: cfg}
		}},
		{"https, witness", func(t *testing.T) (string, *endwell.Transport) {
			s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.Respond(http.StatusOK, nil, "hello")
				return witness.Auto
			}})
			return s.URL(), &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			url, tr := tc.setup(t)
			newTransport(t, tr)
			c := &http.Client{Transport: tr}
			resp, body := do(t, c, newRequest(t, nil, "GET", url+"/", nil))
			if got, want := resp.StatusCode, http.StatusOK; got != want {
				t.Errorf("status: got %v, want %v", got, want)
			}
			if got, want := body, "hello"; got != want {
				t.Errorf("body: got %q, want %q", got, want)
			}
			if got, want := resp.TLS != nil, strings.HasPrefix(url, "https"); got != want {
				t.Errorf("resp.TLS set: got %v, want %v", got, want)
			}
			if err := tr.Shutdown(boundedCtx(t)); err != nil {
				t.Errorf("Shutdown: got %v, want nil", err)
			}
		})
	}
}

func TestKeepAliveReuse(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{TLS: useTLS})
			tr := newTransport(t, &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()})
			c := &http.Client{Transport: tr}

			var mu sync.Mutex
			var conns []httptrace.GotConnInfo
			var puts []error
			trace := &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) {
					mu.Lock()
					conns = append(conns, i)
					mu.Unlock()
				},
				PutIdleConn: func(err error) {
					mu.Lock()
					puts = append(puts, err)
					mu.Unlock()
				},
			}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			const n = 3
			for i := range n {
				if i > 0 {
					time.Sleep(5 * time.Millisecond) // some idle time
				}
				_, body := do(t, c, newRequest(t, ctx, "GET", s.URL()+"/"+strconv.Itoa(i), nil))
				if got, want := body, "ok\n"; got != want {
					t.Errorf("request %d: body got %q, want %q", i, got, want)
				}
			}
			mu.Lock()
			if got, want := len(conns), n; got != want {
				t.Fatalf("GotConn calls: got %v, want %v", got, want)
			}
			for i, info := range conns {
				if got, want := info.Reused, i > 0; got != want {
					t.Errorf("request %d: Reused got %v, want %v", i, got, want)
				}
				if got, want := info.WasIdle, i > 0; got != want {
					t.Errorf("request %d: WasIdle got %v, want %v", i, got, want)
				}
				if i > 0 && info.IdleTime <= 0 {
					t.Errorf("request %d: IdleTime got %v, want > 0", i, info.IdleTime)
				}
			}
			if got, want := len(puts), n; got != want {
				t.Errorf("PutIdleConn calls: got %v, want %v", got, want)
			}
			for i, err := range puts {
				if err != nil {
					t.Errorf("PutIdleConn %d: got %v, want nil", i, err)
				}
			}
			mu.Unlock()

			reps := s.Reports()
			if got, want := len(reps), 1; got != want {
				t.Fatalf("server connections: got %v, want %v", got, want)
			}
			if got, want := reps[0].Requests, n; got != want {
				t.Errorf("requests on the connection: got %v, want %v", got, want)
			}
			tr.CloseIdleConnections()
			wantWitnessEnds(t, s, 1, gracefulEnding(useTLS))
		})
	}
}

func TestDisableKeepAlives(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			checkLeaks(t)
			var sawClose atomic.Int32
			s := startWitness(t, witness.Options{TLS: useTLS, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				if r.Close {
					sawClose.Add(1)
				}
				c.Respond(http.StatusOK, nil, "ok")
				// Keep the connection open: the client must be the one that ends it.
				return witness.KeepAlive
			}})
			tr := newTransport(t, &endwell.Transport{TLSClientConfig: s.ClientTLSConfig(), DisableKeepAlives: true})
			c := &http.Client{Transport: tr}
			var puts atomic.Int32
			var putNil atomic.Int32
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				PutIdleConn: func(err error) {
					puts.Add(1)
					if err == nil {
						putNil.Add(1)
					}
				},
			})
			const n = 3
			for range n {
				do(t, c, newRequest(t, ctx, "GET", s.URL()+"/", nil))
			}
			reps := wantWitnessEnds(t, s, n, gracefulEnding(useTLS))
			for _, r := range reps {
				if got, want := r.Requests, 1; got != want {
					t.Errorf("connection %v: requests got %v, want %v", r, got, want)
				}
			}
			if got, want := int(sawClose.Load()), n; got != want {
				t.Errorf("requests with Connection: close: got %v, want %v", got, want)
			}
			// As net/http: the connections are not pooled, so PutIdleConn is not called.
			if got, want := int(puts.Load()), 0; got != want {
				t.Errorf("PutIdleConn calls: got %v, want %v", got, want)
			}
			if got, want := int(putNil.Load()), 0; got != want {
				t.Errorf("PutIdleConn(nil) calls: got %v, want %v", got, want)
			}
		})
	}
}

func TestIdleLimits(t *testing.T) {
	tests := []struct {
		name                string
		maxIdle, maxPerHost int
	}{
		{"MaxIdleConnsPerHost", 0, 1},
		{"MaxIdleConns", 1, 0},
	}
	const burst = 3
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			arrived := make(chan struct{}, burst)
			release := make(chan struct{})
			s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				arrived <- struct{}{}
				select {
				case <-release:
				case <-c.Context().Done():
					return witness.CloseRST
				}
				c.Respond(http.StatusOK, nil, "ok")
				return witness.KeepAlive
			}})
			tr := newTransport(t, &endwell.Transport{
				TLSClientConfig:     s.ClientTLSConfig(),
				MaxIdleConns:        tc.maxIdle,
				MaxIdleConnsPerHost: tc.maxPerHost,
			})
			c := &http.Client{Transport: tr}

			var wg sync.WaitGroup
			errs := make(chan error, burst)
			for range burst {
				wg.Go(func() {
					resp, err := c.Get(s.URL() + "/")
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					errs <- err
				})
			}
			for i := range burst {
				select {
				case <-arrived:
				case <-time.After(waitFor):
					t.Fatalf("requests at the server: got %d, want %d", i, burst)
				}
			}
			close(release)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("request: got %v, want nil", err)
				}
			}
			// All but one connection leave the pool, each gracefully.
			wantWitnessEnds(t, s, burst-1, gracefulEnding(true))
			open := 0
			for _, r := range s.Reports() {
				if !r.Done() {
					open++
				}
			}
			if got, want := open, 1; got != want {
				t.Errorf("connections still open: got %v, want %v", got, want)
			}
		})
	}
}

func TestMaxConnsPerHost(t *testing.T) {
	t.Run("requests wait their turn", func(t *testing.T) {
		checkLeaks(t)
		arrived := make(chan struct{}, 8)
		s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			arrived <- struct{}{}
			select { // a slow handler
			case <-time.After(30 * time.Millisecond):
			case <-c.Context().Done():
				return witness.CloseRST
			}
			c.Respond(http.StatusOK, nil, r.URL.Path)
			return witness.KeepAlive
		}})
		tr := newTransport(t, &endwell.Transport{MaxConnsPerHost: 1})
		c := &http.Client{Transport: tr}
		const n = 4
		var wg sync.WaitGroup
		bodies := make([]string, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				resp, err := c.Get(fmt.Sprintf("%s/%d", s.URL(), i))
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					bodies[i] = string(b)
				}
				errs[i] = err
			})
			if i == 0 {
				select {
				case <-arrived:
				case <-time.After(waitFor):
					t.Fatal("first request never reached the server")
				}
			} else {
				time.Sleep(10 * time.Millisecond) // queue the requests in order
			}
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("request %d: got %v, want nil", i, errs[i])
			} else if got, want := bodies[i], fmt.Sprintf("/%d", i); got != want {
				t.Errorf("request %d: body got %q, want %q", i, got, want)
			}
		}
		reps := s.Reports()
		if got, want := len(reps), 1; got != want {
			t.Fatalf("server connections: got %v, want %v", got, want)
		}
		var want []string
		for i := range n {
			want = append(want, fmt.Sprintf("GET /%d", i))
		}
		if got := reps[0].RequestLines; !equalStrings(got, want) {
			t.Errorf("requests served: got %v, want %v", got, want)
		}
	})

	t.Run("cancelled waiter", func(t *testing.T) {
		checkLeaks(t)
		arrived := make(chan string, 8)
		release := make(chan struct{})
		s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			arrived <- r.URL.Path
			select {
			case <-release:
			case <-c.Context().Done():
				return witness.CloseRST
			}
			c.Respond(http.StatusOK, nil, r.URL.Path)
			return witness.KeepAlive
		}})
		tr := newTransport(t, &endwell.Transport{MaxConnsPerHost: 1})
		c := &http.Client{Transport: tr}
		get := func(ctx context.Context, path string) (string, error) {
			resp, err := c.Do(newRequest(t, ctx, "GET", s.URL()+path, nil))
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		type result struct {
			body string
			err  error
		}
		resA, resB, resC := make(chan result, 1), make(chan result, 1), make(chan result, 1)
		go func() { b, err := get(context.Background(), "/a"); resA <- result{b, err} }()
		select {
		case <-arrived:
		case <-time.After(waitFor):
			t.Fatal("first request never reached the server")
		}
		ctxB, cancelB := context.WithCancel(context.Background())
		defer cancelB()
		go func() { b, err := get(ctxB, "/b"); resB <- result{b, err} }()
		time.Sleep(10 * time.Millisecond)
		go func() { b, err := get(context.Background(), "/c"); resC <- result{b, err} }()
		time.Sleep(20 * time.Millisecond)
		cancelB()
		select {
		case r := <-resB:
			if !errors.Is(r.err, context.Canceled) {
				t.Errorf("cancelled waiter: got %v, want %v", r.err, context.Canceled)
			}
		case <-time.After(time.Second):
			t.Fatal("cancelled waiter still waiting after 1s")
		}
		close(release)
		for _, w := range []struct {
			ch   chan result
			want string
		}{{resA, "/a"}, {resC, "/c"}} {
			select {
			case r := <-w.ch:
				if r.err != nil || r.body != w.want {
					t.Errorf("request %s: got (%q, %v), want (%q, nil)", w.want, r.body, r.err, w.want)
				}
			case <-time.After(waitFor):
				t.Fatalf("request %s never finished", w.want)
			}
		}
		reps := s.Reports()
		if got, want := len(reps), 1; got != want {
			t.Fatalf("server connections: got %v, want %v", got, want)
		}
		if got, want := reps[0].RequestLines, []string{"GET /a", "GET /c"}; !equalStrings(got, want) {
			t.Errorf("requests served: got %v, want %v", got, want)
		}
	})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRequestBodyEarlyResponse(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		if _, err := io.ReadFull(r.Body, make([]byte, 1024)); err != nil {
			return witness.CloseRST
		}
		c.Respond(http.StatusOK, nil, "early")
		return witness.Auto // the rest of the body is discarded
	}})
	tr := newTransport(t, &endwell.Transport{TLSClientConfig: s.ClientTLSConfig()})
	c := &http.Client{Transport: tr}

	pr, pw := io.Pipe()
	gotResp := make(chan struct{})
	writerDone := make(chan struct{})
	// The body's producer: half of the body, then the rest only once the response is in.
	go func() {
		defer close(writerDone)
		if _, err := pw.Write(bytes.Repeat([]byte("a"), 64<<10)); err != nil {
			return
		}
		select {
		case <-gotResp:
		case <-time.After(waitFor):
			pw.CloseWithError(errors.New("no response while the body was being sent"))
			return
		}
		pw.Write(bytes.Repeat([]byte("b"), 256<<10))
		pw.Close()
	}()
	resp, err := c.Do(newRequest(t, nil, "POST", s.URL()+"/", pr))
	if err != nil {
		t.Fatalf("POST: got %v, want nil", err)
	}
	close(gotResp)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "early" {
		t.Errorf("body: got (%q, %v), want (%q, nil)", b, err, "early")
	}
	select {
	case <-writerDone:
	case <-time.After(waitFor):
		t.Fatal("body producer still blocked: the transport neither read nor closed the body")
	}
}

func TestRequestBodyStreaming(t *testing.T) {
	const size = 1 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	sum := sha256.Sum256(data)
	wantSum := hex.EncodeToString(sum[:])
	tests := []struct {
		name          string
		contentLength int64
		trailer       bool
		wantTE        string
		wantCL        string
	}{
		{"known length", size, false, "", strconv.Itoa(size)},
		{"chunked", -1, false, "chunked", "-1"},
		{"chunked with trailer", -1, true, "chunked", "-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				h := sha256.New()
				if _, err := io.Copy(h, r.Body); err != nil {
					return witness.CloseRST
				}
				c.Respond(http.StatusOK, http.Header{
					"X-Te":      {strings.Join(r.TransferEncoding, ",")},
					"X-Cl":      {strconv.FormatInt(r.ContentLength, 10)},
					"X-Trailer": {r.Trailer.Get("X-Sum")},
				}, hex.EncodeToString(h.Sum(nil)))
				return witness.KeepAlive
			}})
			tr := newTransport(t, &endwell.Transport{})
			c := &http.Client{Transport: tr}

			pr, pw := io.Pipe()
			req := newRequest(t, nil, "POST", s.URL()+"/", pr)
			req.ContentLength = tc.contentLength
			if tc.trailer {
				req.Trailer = http.Header{"X-Sum": nil}
			}
			writerDone := make(chan struct{})
			// The body's producer, in small writes.
			go func() {
				defer close(writerDone)
				for p := data; len(p) > 0; p = p[16<<10:] {
					if _, err := pw.Write(p[:16<<10]); err != nil {
						return
					}
				}
				if tc.trailer {
					req.Trailer.Set("X-Sum", wantSum)
				}
				pw.Close()
			}()
			resp, body := do(t, c, req)
			if got, want := body, wantSum; got != want {
				t.Errorf("server's body checksum: got %v, want %v", got, want)
			}
			if got, want := resp.Header.Get("X-Te"), tc.wantTE; got != want {
				t.Errorf("server's Transfer-Encoding: got %q, want %q", got, want)
			}
			if got, want := resp.Header.Get("X-Cl"), tc.wantCL; got != want {
				t.Errorf("server's ContentLength: got %v, want %v", got, want)
			}
			wantTrailer := ""
			if tc.trailer {
				wantTrailer = wantSum
			}
			if got, want := resp.Header.Get("X-Trailer"), wantTrailer; got != want {
				t.Errorf("server's trailer: got %q, want %q", got, want)
			}
			select {
			case <-writerDone:
			case <-time.After(waitFor):
				t.Fatal("body producer still blocked")
			}
		})
	}
}

func TestRequestBodyAlwaysClosed(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, tr *endwell.Transport) (url string)
		ctx     func() context.Context
		wantErr bool
	}{
		{name: "success", setup: func(t *testing.T, tr *endwell.Transport) string {
			return startWitness(t, witness.Options{}).URL()
		}},
		{name: "unsupported scheme", wantErr: true, setup: func(t *testing.T, tr *endwell.Transport) string {
			return "ftp://127.0.0.1/"
		}},
		{name: "dial refused", wantErr: true, setup: func(t *testing.T, tr *endwell.Transport) string {
			return "http://" + closedAddr(t)
		}},
		{name: "transport closed", wantErr: true, setup: func(t *testing.T, tr *endwell.Transport) string {
			tr.Close()
			return startWitness(t, witness.Options{}).URL()
		}},
		{name: "server hangs up", wantErr: true, setup: func(t *testing.T, tr *endwell.Transport) string {
			return startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				return witness.CloseFIN
			}}).URL()
		}},
		{name: "context cancelled", wantErr: true, setup: func(t *testing.T, tr *endwell.Transport) string {
			return startWitness(t, witness.Options{}).URL()
		}, ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			tr := newTransport(t, &endwell.Transport{})
			url := tc.setup(t, tr)
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			body := newCloseTracker("payload")
			req := newRequest(t, ctx, "POST", url+"/", body)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if got, want := err != nil, tc.wantErr; got != want {
				t.Errorf("RoundTrip error: got %v, want error %v", err, want)
			}
			body.wantClosed(t)
		})
	}
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestExpectContinue(t *testing.T) {
	tests := []struct {
		name        string
		handler     witness.Handler
		timeout     time.Duration // ExpectContinueTimeout
		wantStatus  int
		wantEcho    string // what the server read of the body
		wantGot100  bool
		wantMinTime time.Duration
		wantMaxTime time.Duration
		wantSent    bool // the client read its body
		wantConns   int  // server connections after a second request
	}{
		{
			name: "100 then body",
			handler: func(c *witness.Conn, r *http.Request) witness.Action {
				b, _ := io.ReadAll(r.Body) // sends 100 Continue first
				c.Respond(http.StatusOK, nil, string(b))
				return witness.KeepAlive
			},
			timeout:     waitFor,
			wantStatus:  http.StatusOK,
			wantEcho:    "payload",
			wantGot100:  true,
			wantMaxTime: waitFor / 2,
			wantSent:    true,
			wantConns:   1,
		},
		{
			// As net/http: a final answer without 100 on a connection to be kept sends
			// the body all the same, so that the connection stays in step, and reuses it.
			name: "417 without 100",
			handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.NoContinue()
				c.Respond(http.StatusExpectationFailed, nil, "")
				// Keep the connection: whether to reuse it is the client's call.
				return witness.KeepAlive
			},
			timeout:     waitFor,
			wantStatus:  http.StatusExpectationFailed,
			wantMaxTime: waitFor / 2,
			wantSent:    true,
			wantConns:   1,
		},
		{
			// A final answer that closes the connection: the body is not sent.
			name: "417 without 100, Connection: close",
			handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.NoContinue()
				c.Respond(http.StatusExpectationFailed, http.Header{"Connection": {"close"}}, "")
				return witness.KeepAlive
			},
			timeout:     waitFor,
			wantStatus:  http.StatusExpectationFailed,
			wantMaxTime: waitFor / 2,
			wantConns:   2,
		},
		{
			name: "silent server",
			handler: func(c *witness.Conn, r *http.Request) witness.Action {
				c.NoContinue()
				b, _ := io.ReadAll(r.Body)
				c.Respond(http.StatusOK, nil, string(b))
				return witness.KeepAlive
			},
			timeout:     200 * time.Millisecond,
			wantStatus:  http.StatusOK,
			wantEcho:    "payload",
			wantMinTime: 200 * time.Millisecond,
			wantMaxTime: waitFor / 2,
			wantSent:    true,
			// The body went out after the timeout: the connection is reused, as in
			// net/http.
			wantConns: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{TLS: true, Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				if r.Method == "GET" {
					c.Respond(http.StatusOK, nil, "")
					return witness.KeepAlive
				}
				return tc.handler(c, r)
			}})
			tr := newTransport(t, &endwell.Transport{TLSClientConfig: s.ClientTLSConfig(), ExpectContinueTimeout: tc.timeout})
			c := &http.Client{Transport: tr}
			var wait100, got100 atomic.Bool
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Wait100Continue: func() { wait100.Store(true) },
				Got100Continue:  func() { got100.Store(true) },
			})
			body := newCloseTracker("payload")
			req := newRequest(t, ctx, "POST", s.URL()+"/", body)
			req.ContentLength = int64(len("payload"))
			req.Header.Set("Expect", "100-continue")
			start := time.Now()
			resp, echo := do(t, c, req)
			elapsed := time.Since(start)
			if got, want := resp.StatusCode, tc.wantStatus; got != want {
				t.Errorf("status: got %v, want %v", got, want)
			}
			if got, want := echo, tc.wantEcho; got != want {
				t.Errorf("body the server read: got %q, want %q", got, want)
			}
			if got, want := wait100.Load(), true; got != want {
				t.Errorf("Wait100Continue called: got %v, want %v", got, want)
			}
			if got, want := got100.Load(), tc.wantGot100; got != want {
				t.Errorf("Got100Continue called: got %v, want %v", got, want)
			}
			if elapsed < tc.wantMinTime || elapsed > tc.wantMaxTime {
				t.Errorf("round trip time: got %v, want in [%v, %v]", elapsed, tc.wantMinTime, tc.wantMaxTime)
			}
			body.wantClosed(t)
			if got, want := body.reads.Load() > 0, tc.wantSent; got != want {
				t.Errorf("request body read: got %v, want %v", got, want)
			}
			do(t, c, newRequest(t, nil, "GET", s.URL()+"/", nil))
			if got, want := len(s.Reports()), tc.wantConns; got != want {
				t.Errorf("server connections: got %v, want %v", got, want)
			}
		})
	}
}

func TestInformationalResponses(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Informational(http.StatusEarlyHints, http.Header{"Link": {"</style.css>; rel=preload"}})
		c.Respond(http.StatusOK, nil, "final")
		return witness.KeepAlive
	}})
	tr := newTransport(t, &endwell.Transport{})
	c := &http.Client{Transport: tr}
	var codes []int
	var links []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			codes = append(codes, code)
			links = append(links, h.Get("Link"))
			return nil
		},
	})
	resp, body := do(t, c, newRequest(t, ctx, "GET", s.URL()+"/", nil))
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Errorf("status: got %v, want %v", got, want)
	}
	if got, want := body, "final"; got != want {
		t.Errorf("body: got %q, want %q", got, want)
	}
	if got, want := fmt.Sprint(codes), "[103]"; got != want {
		t.Errorf("1xx codes: got %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(links), "[</style.css>; rel=preload]"; got != want {
		t.Errorf("1xx Link headers: got %v, want %v", got, want)
	}
}

func TestResponseTrailers(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.RespondChunked(http.StatusOK, nil, []string{"hello ", "world"}, http.Header{"X-Checksum": {"abc"}})
		return witness.KeepAlive
	}})
	tr := newTransport(t, &endwell.Transport{})
	c := &http.Client{Transport: tr}
	for i := range 2 { // the second response on the reused connection
		resp, err := c.Get(s.URL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Trailer["X-Checksum"]; !ok {
			t.Errorf("response %d: announced trailer: got %v, want X-Checksum", i, resp.Trailer)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "hello world" {
			t.Errorf("response %d: body got (%q, %v), want (%q, nil)", i, b, err, "hello world")
		}
		if got, want := resp.Trailer.Get("X-Checksum"), "abc"; got != want {
			t.Errorf("response %d: trailer after EOF: got %q, want %q", i, got, want)
		}
	}
	if got, want := len(s.Reports()), 1; got != want {
		t.Errorf("server connections: got %v, want %v", got, want)
	}
}

func TestTransparentGzip(t *testing.T) {
	const plain = "hello, compressed world"
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, plain)
	zw.Close()
	compressed := zb.String()

	tests := []struct {
		name             string
		method           string
		path             string
		header           http.Header
		disable          bool
		wantAE           string // Accept-Encoding the server saw
		wantStatus       int
		wantUncompressed bool
		wantCE           string // Content-Encoding the caller sees
		wantBody         string
	}{
		{name: "transparent", method: "GET", path: "/gzip", wantAE: "gzip", wantStatus: 200, wantUncompressed: true, wantBody: plain},
		{name: "caller's Accept-Encoding", method: "GET", path: "/gzip", header: http.Header{"Accept-Encoding": {"gzip"}},
			wantAE: "gzip", wantStatus: 200, wantCE: "gzip", wantBody: compressed},
		{name: "DisableCompression", method: "GET", path: "/gzip", disable: true, wantStatus: 200, wantCE: "gzip", wantBody: compressed},
		{name: "Range", method: "GET", path: "/plain", header: http.Header{"Range": {"bytes=0-"}}, wantStatus: 200, wantBody: plain},
		{name: "HEAD", method: "HEAD", path: "/gzip", wantStatus: 200, wantCE: "gzip"},
		{name: "204", method: "GET", path: "/204", wantAE: "gzip", wantStatus: 204},
		{name: "304", method: "GET", path: "/304", wantAE: "gzip", wantStatus: 304},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var sawAE atomic.Value
			s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
				if r.URL.Path != "/next" {
					sawAE.Store(r.Header.Get("Accept-Encoding"))
				}
				switch r.URL.Path {
				case "/gzip":
					c.Respond(http.StatusOK, http.Header{"Content-Encoding": {"gzip"}}, compressed)
				case "/204":
					c.Respond(http.StatusNoContent, nil, "")
				case "/304":
					c.Respond(http.StatusNotModified, nil, "")
				default:
					c.Respond(http.StatusOK, nil, plain)
				}
				return witness.KeepAlive
			}})
			tr := newTransport(t, &endwell.Transport{DisableCompression: tc.disable})
			c := &http.Client{Transport: tr}
			req := newRequest(t, nil, tc.method, s.URL()+tc.path, nil)
			for k, vs := range tc.header {
				req.Header[k] = vs
			}
			resp, body := do(t, c, req)
			if got, want := sawAE.Load(), tc.wantAE; got != want {
				t.Errorf("Accept-Encoding at the server: got %q, want %q", got, want)
			}
			if got, want := resp.StatusCode, tc.wantStatus; got != want {
				t.Errorf("status: got %v, want %v", got, want)
			}
			if got, want := resp.Uncompressed, tc.wantUncompressed; got != want {
				t.Errorf("Uncompressed: got %v, want %v", got, want)
			}
			if got, want := resp.Header.Get("Content-Encoding"), tc.wantCE; got != want {
				t.Errorf("Content-Encoding: got %q, want %q", got, want)
			}
			if got, want := body, tc.wantBody; got != want {
				t.Errorf("body: got %q, want %q", got, want)
			}
			if tc.wantUncompressed && resp.ContentLength != -1 {
				t.Errorf("ContentLength: got %v, want -1", resp.ContentLength)
			}
			// The exchange left the connection clean: the next request reuses it.
			var reused atomic.Bool
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(i httptrace.GotConnInfo) { reused.Store(i.Reused) },
			})
			do(t, c, newRequest(t, ctx, "GET", s.URL()+"/next", nil))
			if got, want := reused.Load(), true; got != want {
				t.Errorf("next request reused the connection: got %v, want %v", got, want)
			}
		})
	}
}

func TestRetryStaleConnection(t *testing.T) {
	tests := []struct {
		name        string
		req         func(t *testing.T, url string) *http.Request
		wantRetried bool
		wantBody    string
	}{
		{
			name:        "GET is retried",
			req:         func(t *testing.T, url string) *http.Request { return newRequest(t, nil, "GET", url, nil) },
			wantRetried: true,
		},
		{
			name:        "HEAD is retried",
			req:         func(t *testing.T, url string) *http.Request { return newRequest(t, nil, "HEAD", url, nil) },
			wantRetried: true,
		},
		{
			name: "POST without GetBody is not retried",
			req: func(t *testing.T, url string) *http.Request {
				return newRequest(t, nil, "POST", url, io.NopCloser(strings.NewReader("payload")))
			},
		},
		{
			name: "POST with GetBody is not retried: not idempotent",
			req: func(t *testing.T, url string) *http.Request {
				return newRequest(t, nil, "POST", url, strings.NewReader("payload"))
			},
		},
		{
			name: "POST with GetBody and Idempotency-Key is retried",
			req: func(t *testing.T, url string) *http.Request {
				req := newRequest(t, nil, "POST", url, strings.NewReader("payload"))
				req.Header.Set("Idempotency-Key", "k1")
				return req
			},
			wantRetried: true,
			wantBody:    "payload",
		},
		{
			name: "POST with Idempotency-Key without GetBody is not retried",
			req: func(t *testing.T, url string) *http.Request {
				req := newRequest(t, nil, "POST", url, io.NopCloser(strings.NewReader("payload")))
				req.Header.Set("Idempotency-Key", "k1")
				return req
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			// The server answers the first request of each connection, echoing its body;
			// on the first connection it reads the second request, then hangs up.
			srv := startRawServer(t, func(n int, c net.Conn, br *rawReader) {
				for k := 1; ; k++ {
					req, body, err := br.readRequest()
					if err != nil {
						return
					}
					if n == 1 && k == 2 {
						return // closes without answering
					}
					if req.Method == "HEAD" {
						body = ""
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
			tr := newTransport(t, &endwell.Transport{})
			c := &http.Client{Transport: tr}
			do(t, c, newRequest(t, nil, "GET", srv.url()+"/1", nil))

			resp, err := c.Do(tc.req(t, srv.url()+"/2"))
			if tc.wantRetried {
				if err != nil {
					t.Fatalf("retried request: got %v, want nil", err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != tc.wantBody {
					t.Errorf("body: got (%q, %v), want (%q, nil)", b, err, tc.wantBody)
				}
			} else {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request on the stale connection: got %v, want an error", resp.Status)
				}
				if !errors.Is(err, endwell.ErrServerClosedConn) {
					t.Errorf("error: got %v, want %v", err, endwell.ErrServerClosedConn)
				}
			}
			wantAccepts := 1
			if tc.wantRetried {
				wantAccepts = 2
			}
			if got, want := srv.accepts(), wantAccepts; got != want {
				t.Errorf("connections accepted: got %v, want %v", got, want)
			}
		})
	}
}

func TestRoundTripErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (url string, tr *endwell.Transport)
		check func(t *testing.T, err error)
	}{
		{
			name: "dial refused",
			setup: func(t *testing.T) (string, *endwell.Transport) {
				return "http://" + closedAddr(t) + "/", &endwell.Transport{}
			},
			check: func(t *testing.T, err error) {
				// As net/http returns it: the dialer's *net.OpError, bare.
				if op, ok := err.(*net.OpError); !ok || op.Op != "dial" {
					t.Errorf("error: got %T %v, want the dial's *net.OpError", err, err)
				}
				if !endwell.NotSent(err) {
					t.Errorf("NotSent(%v): got false, want true", err)
				}
			},
		},
		{
			name: "untrusted certificate",
			setup: func(t *testing.T) (string, *endwell.Transport) {
				return startWitness(t, witness.Options{TLS: true}).URL() + "/", &endwell.Transport{}
			},
			check: func(t *testing.T, err error) {
				// As net/http returns it: go-retryablehttp's default policy asserts this type
				// to give up at once.
				if _, ok := err.(*tls.CertificateVerificationError); !ok {
					t.Errorf("error: got %T %v, want *tls.CertificateVerificationError", err, err)
				}
			},
		},
		{
			name: "response header timeout",
			setup: func(t *testing.T) (string, *endwell.Transport) {
				s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
					return witness.Hang
				}})
				return s.URL() + "/", &endwell.Transport{ResponseHeaderTimeout: 100 * time.Millisecond}
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, endwell.ErrResponseHeaderTimeout) {
					t.Errorf("error: got %v, want %v", err, endwell.ErrResponseHeaderTimeout)
				}
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("errors.Is(%v, context.DeadlineExceeded): got false, want true, as net/http's", err)
				}
				var ne net.Error
				if got, want := errors.As(err, &ne) && ne.Timeout(), true; got != want {
					t.Errorf("net.Error with Timeout(): got %v, want %v", got, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			url, tr := tc.setup(t)
			newTransport(t, tr)
			resp, err := tr.RoundTrip(newRequest(t, boundedCtx(t), "GET", url, nil))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("RoundTrip: got %v, want an error", resp.Status)
			}
			tc.check(t, err)
		})
	}
}

func TestRoundTripAfterEnd(t *testing.T) {
	tests := []struct {
		name string
		end  func(tr *endwell.Transport)
		want error
	}{
		{"Close", func(tr *endwell.Transport) { tr.Close() }, endwell.ErrClosed},
		{"Shutdown", func(tr *endwell.Transport) { tr.Shutdown(context.Background()) }, endwell.ErrShutdown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			s := startWitness(t, witness.Options{})
			tr := newTransport(t, &endwell.Transport{})
			do(t, &http.Client{Transport: tr}, newRequest(t, nil, "GET", s.URL()+"/", nil))
			tc.end(tr)
			resp, err := tr.RoundTrip(newRequest(t, nil, "GET", s.URL()+"/", nil))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error: got %v, want %v", err, tc.want)
			}
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("errors.Is(%v, net.ErrClosed): got false, want true", err)
			}
			if got, want := len(s.Reports()), 1; got != want {
				t.Errorf("server connections: got %v, want %v", got, want)
			}
		})
	}
}

func TestInvalidRequest(t *testing.T) {
	valid := func() *http.Request {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
		return req
	}
	tests := []struct {
		name string
		req  func() *http.Request
	}{
		{"nil URL", func() *http.Request { r := valid(); r.URL = nil; return r }},
		{"nil Header", func() *http.Request { r := valid(); r.Header = nil; return r }},
		{"unsupported scheme", func() *http.Request { r := valid(); r.URL.Scheme = "ftp"; return r }},
		{"no host", func() *http.Request { r := valid(); r.URL.Host = ""; return r }},
		{"invalid method", func() *http.Request { r := valid(); r.Method = "GE T"; return r }},
		{"invalid header name", func() *http.Request { r := valid(); r.Header["Bad Name"] = []string{"x"}; return r }},
		{"invalid header value", func() *http.Request { r := valid(); r.Header.Set("X-Bad", "a\r\nb"); return r }},
	}
	tr := newTransport(t, &endwell.Transport{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tr.RoundTrip(tc.req())
			if err == nil {
				resp.Body.Close()
			}
			var re *endwell.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error: got %T %v, want *endwell.RequestError", err, err)
			}
			if !errors.Is(err, endwell.ErrNotSent) {
				t.Errorf("errors.Is(%v, ErrNotSent): got false, want true", err)
			}
		})
	}
}
