package endwell_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"testing/synctest"
	"time"

	"github.com/endwell/endwell"
)

// Concurrency torture (issue #17): many goroutines end the same requests, bodies and
// connections at once. Run it under -race: the race detector is its first assertion. The
// others are invariants, never timings: every call returns (a watchdog fails the test with
// every goroutine's stack), every error is of a kind the scenario lists, every exchange
// releases its connection (Shutdown then finds nothing in use), and no goroutine or file
// descriptor is left (checkLeaks).

// tortureHang bounds every wait of the torture: a call still running after it hangs.
const tortureHang = 10 * time.Second

// tortureKinds are the kinds of errors the torture may see, in the order they are told
// apart: each scenario lists the kinds it allows.
var tortureKinds = []struct {
	name string
	is   func(error) bool
}{
	{"success", func(err error) bool { return err == nil }},
	{"ErrBodyClosed", func(err error) bool { return errors.Is(err, endwell.ErrBodyClosed) }},
	{"context.Canceled", func(err error) bool { return errors.Is(err, context.Canceled) }},
	{"ErrShutdown", func(err error) bool { return errors.Is(err, endwell.ErrShutdown) }},
	{"ErrClosed", func(err error) bool { return errors.Is(err, endwell.ErrClosed) }},
	{"net.ErrClosed", func(err error) bool { return errors.Is(err, net.ErrClosed) }},
}

func tortureKind(err error) string {
	for _, k := range tortureKinds {
		if k.is(err) {
			return k.name
		}
	}
	return "unexpected"
}

// tortureTally counts the outcomes of a scenario's calls by kind, and keeps the first
// unexpected ones.
type tortureTally struct {
	allowed map[string]bool

	mu     sync.Mutex // guards the following
	counts map[string]int
	bad    []string
}

func newTortureTally(allowed ...string) *tortureTally {
	ta := &tortureTally{allowed: make(map[string]bool), counts: make(map[string]int)}
	for _, a := range allowed {
		ta.allowed[a] = true
	}
	return ta
}

// add records what a call (step) returned.
func (ta *tortureTally) add(step string, err error) {
	kind := tortureKind(err)
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.counts[kind]++
	if !ta.allowed[kind] && len(ta.bad) < 10 {
		ta.bad = append(ta.bad, fmt.Sprintf("%s: %v (%T, kind %s)", step, err, err, kind))
	}
}

func (ta *tortureTally) check(t *testing.T) {
	t.Helper()
	ta.mu.Lock()
	defer ta.mu.Unlock()
	kinds := make([]string, 0, len(ta.counts))
	for k := range ta.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var seen []string
	for _, k := range kinds {
		seen = append(seen, fmt.Sprintf("%s=%d", k, ta.counts[k]))
	}
	t.Logf("outcomes: %s", strings.Join(seen, " "))
	allowed := make([]string, 0, len(ta.allowed))
	for k := range ta.allowed {
		allowed = append(allowed, k)
	}
	sort.Strings(allowed)
	for _, b := range ta.bad {
		t.Errorf("%s: want one of %v", b, allowed)
	}
}

// tortureWait waits for wg, or fails the test with every goroutine's stack once
// tortureHang has passed.
func tortureWait(t *testing.T, what string, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(tortureHang):
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: still running after %v: a call hangs. Goroutines:\n%s", what, tortureHang, buf)
	}
}

// tortureRun runs fn(worker) in n goroutines and waits for all of them (tortureWait).
func tortureRun(t *testing.T, what string, n int, fn func(worker int)) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w)
		}()
	}
	tortureWait(t, what, &wg)
}

// tortureFlavor is a server and a transport speaking one protocol to it.
type tortureFlavor struct {
	name  string
	proto int // the responses' ProtoMajor
	tls   bool
}

var tortureFlavors = []tortureFlavor{
	{name: "http1", proto: 1},
	{name: "http1-tls", proto: 1, tls: true},
	{name: "http2-tls", proto: 2, tls: true},
}

// start starts the server with h, closed when the test ends, and returns its URL and a
// transport for it, closed (abort) when the test ends, before the server.
func (f tortureFlavor) start(t *testing.T, h http.Handler) (string, *endwell.Transport) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	// Aborted handshakes are the torture's daily bread: the server need not log them.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tr := &endwell.Transport{MaxDrainTime: 20 * time.Millisecond}
	if f.tls {
		srv.EnableHTTP2 = f.proto == 2
		srv.StartTLS()
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.URL, newTransport(t, tr)
}

// tortureHandler serves the torture's requests:
//
//	/hold    200, the chunk "hello" at once, then reads the request body until the client
//	         goes away; ?big=1 declares a Content-Length too large to drain
//	/small   200 "ok", after reading the request body
//	/slow    200, eight chunks of 512 bytes, 500µs apart; it stops when the client goes away
func tortureHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// Answer at once: without full duplex, net/http's HTTP/1 server reads up to
		// 256 KiB of the request body before it writes the response's header.
		rc.EnableFullDuplex() // HTTP/2 is always full duplex, and says not supported
		if r.URL.Query().Get("big") != "" {
			w.Header().Set("Content-Length", "1048576")
		}
		io.WriteString(w, "hello")
		rc.Flush()
		io.Copy(io.Discard, r.Body)
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		chunk := strings.Repeat("s", 512)
		rc := http.NewResponseController(w)
		for range 8 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(500 * time.Microsecond):
			}
		}
	})
	return mux
}

// tortureScenario is one way of ending requests concurrently. run returns only once every
// call it made has returned; it may end the transport.
type tortureScenario struct {
	name    string
	allowed []string
	run     func(t *testing.T, f tortureFlavor, url string, tr *endwell.Transport, ta *tortureTally)
	// ends says run ends the transport itself; else the test shuts it down after run,
	// which must succeed: every exchange gave its connection back.
	ends bool
}

var tortureScenarios = []tortureScenario{
	{
		name:    "body closed while read, upload still writing",
		allowed: []string{"success", "ErrBodyClosed"},
		run:     tortureCloseWhileReading,
	},
	{
		name:    "requests racing CloseIdleConnections",
		allowed: []string{"success"},
		run:     tortureCloseIdle,
	},
	{
		name:    "contexts cancelled mid-flight",
		allowed: []string{"success", "context.Canceled"},
		run:     tortureCancel,
	},
	{
		name:    "Shutdown racing a wave, then Close",
		allowed: []string{"success", "ErrShutdown", "ErrClosed", "net.ErrClosed"},
		run:     tortureShutdownWave,
		ends:    true,
	},
}

func TestTorture(t *testing.T) {
	for _, f := range tortureFlavors {
		for _, sc := range tortureScenarios {
			t.Run(f.name+"/"+sc.name, func(t *testing.T) {
				checkLeaks(t)
				url, tr := f.start(t, tortureHandler())
				ta := newTortureTally(sc.allowed...)
				sc.run(t, f, url, tr, ta)
				ta.check(t)
				if !sc.ends {
					ctx, cancel := context.WithTimeout(context.Background(), tortureHang)
					defer cancel()
					if err := tr.Shutdown(ctx); err != nil {
						t.Errorf("Shutdown: got %v, want nil: a connection is still in use (stats %+v)", err, tr.Stats())
					}
				}
				tortureWaitNoConns(t, tr)
			})
		}
	}
}

// tortureWaitNoConns waits until tr has no connection left, active, idle or closing, and
// fails the test if one is still there after tortureHang. Eventually, not at once: Close
// does not wait for the dials in progress (pool.Close does not), and a dial that completes
// after it is closed then, with reason "close".
func tortureWaitNoConns(t *testing.T, tr *endwell.Transport) {
	t.Helper()
	deadline := time.Now().Add(tortureHang)
	for {
		s := tr.Stats()
		if s.Active == 0 && s.Idle == 0 && s.Closing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("stats after the end: got %+v, want no connection", s)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tortureRequest makes a request for the test server, from any goroutine: with the
// server's URL, NewRequest cannot fail.
func tortureRequest(ctx context.Context, method, url string, body io.Reader) *http.Request {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		panic(err)
	}
	return req
}

var errUploadAbandoned = errors.New("torture: upload abandoned")

// tortureCloseWhileReading: a POST whose body (an io.Pipe) is still being written; the
// response has begun; one goroutine blocks reading the body while another closes it. The
// blocked Read must return, Close must return, a Read after Close must say the body is
// closed, and the connection must be released once.
func tortureCloseWhileReading(t *testing.T, f tortureFlavor, url string, tr *endwell.Transport, ta *tortureTally) {
	tortureRun(t, "close while reading", 8, func(w int) {
		for i := range 12 {
			path := "/hold"
			if (w+i)%2 == 1 {
				path += "?big=1" // too large to drain: Close aborts, with the lock or not
			}
			pr, pw := io.Pipe()
			producerDone := make(chan struct{})
			// The upload's producer: it writes until the transport closes the body (or
			// the test abandons it), so that the transport's body writer is busy.
			go func() {
				defer close(producerDone)
				chunk := make([]byte, 1<<10)
				for {
					if _, err := pw.Write(chunk); err != nil {
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
			func() {
				defer func() {
					pw.CloseWithError(errUploadAbandoned)
					<-producerDone
				}()
				resp, err := tr.RoundTrip(tortureRequest(context.Background(), http.MethodPost, url+path, pr))
				ta.add("RoundTrip", err)
				if err != nil {
					return
				}
				if resp.ProtoMajor != f.proto {
					ta.add("proto", fmt.Errorf("got %s, want HTTP/%d", resp.Proto, f.proto))
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "hello" {
					ta.add("first Read", fmt.Errorf("got %q, %w, want %q", buf, err, "hello"))
				}
				// The reader: it blocks, the server sending nothing more, until Close.
				readErr := make(chan error, 1)
				reading := make(chan struct{})
				go func() {
					close(reading)
					_, err := resp.Body.Read(make([]byte, 64))
					readErr <- err
				}()
				<-reading
				// Mostly after the Read has blocked, sometimes before it has begun.
				time.Sleep(time.Duration(rand.IntN(400)) * time.Microsecond)
				ta.add("Close", resp.Body.Close())
				select {
				case err := <-readErr:
					if err == nil {
						err = errors.New("got nil, want an error: the server sent nothing more")
					}
					ta.add("blocked Read", err)
				case <-time.After(tortureHang):
					ta.add("blocked Read", errors.New("still blocked after Close"))
					return
				}
				_, err = resp.Body.Read(make([]byte, 64))
				ta.add("Read after Close", err)
				if err == nil {
					ta.add("Read after Close", errors.New("got nil, want ErrBodyClosed"))
				}
			}()
		}
	})
}

// tortureCloseIdle: requests, reused connections, and CloseIdleConnections in a loop.
// CloseIdleConnections touches only idle connections: every request must succeed.
func tortureCloseIdle(t *testing.T, f tortureFlavor, url string, tr *endwell.Transport, ta *tortureTally) {
	stop := make(chan struct{})
	closerDone := make(chan struct{})
	// The closer: CloseIdleConnections as often as it can until the requests are over.
	go func() {
		defer close(closerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			tr.CloseIdleConnections()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
	}()
	tortureRun(t, "requests racing CloseIdleConnections", 8, func(w int) {
		for i := range 20 {
			req := tortureRequest(context.Background(), http.MethodGet, url+"/small", nil)
			if i%2 == 1 {
				req = tortureRequest(context.Background(), http.MethodPost, url+"/small", strings.NewReader("payload"))
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				ta.add("RoundTrip", err)
				continue
			}
			b, err := io.ReadAll(resp.Body)
			if err == nil && string(b) != "ok" {
				err = fmt.Errorf("body: got %q, want %q", b, "ok")
			}
			ta.add("Read", err)
			ta.add("Close", resp.Body.Close())
		}
	})
	close(stop)
	<-closerDone
}

// tortureCancel: requests whose contexts are cancelled after a random small delay, at
// any point: before the connection, while writing, while reading the headers or the body.
func tortureCancel(t *testing.T, f tortureFlavor, url string, tr *endwell.Transport, ta *tortureTally) {
	tortureRun(t, "requests cancelled mid-flight", 8, func(w int) {
		for i := range 12 {
			ctx, cancel := context.WithCancel(context.Background())
			stop := time.AfterFunc(time.Duration(rand.IntN(8000))*time.Microsecond, cancel)
			var body io.Reader
			method := http.MethodGet
			if i%3 == 2 {
				method, body = http.MethodPost, strings.NewReader(strings.Repeat("p", 4<<10))
			}
			resp, err := tr.RoundTrip(tortureRequest(ctx, method, url+"/slow", body))
			ta.add("RoundTrip", err)
			if err == nil {
				n, err := io.Copy(io.Discard, resp.Body)
				if err == nil && n != 8*512 {
					err = fmt.Errorf("body: got %d bytes, want %d", n, 8*512)
				}
				ta.add("Read", err)
				ta.add("Close", resp.Body.Close())
			}
			stop.Stop()
			cancel()
		}
	})
}

// tortureShutdownWave: a wave of requests, Shutdown in the middle of it with a short
// context, then Close while requests may still run. Requests succeed, or fail as ended by
// Shutdown or Close; Shutdown and Close return; nothing is left.
func tortureShutdownWave(t *testing.T, f tortureFlavor, url string, tr *endwell.Transport, ta *tortureTally) {
	start := make(chan struct{})
	answered := make(chan struct{}, 16) // one per requester, at its first answer
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		// A requester of the wave: it starts with the others and stops at its first
		// error (the transport is ending).
		go func() {
			defer wg.Done()
			<-start
			for i := range 4 {
				resp, err := tr.RoundTrip(tortureRequest(context.Background(), http.MethodGet, url+"/slow", nil))
				if i == 0 {
					answered <- struct{}{}
				}
				ta.add("RoundTrip", err)
				if err != nil {
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				ta.add("Read", err)
				ta.add("Close", resp.Body.Close())
				if err != nil {
					return
				}
			}
		}()
	}
	close(start)
	// The wave is in flight: half the requesters have their first answer (or error).
	for range 8 {
		select {
		case <-answered:
		case <-time.After(tortureHang):
			t.Fatal("no answer to the wave's first requests")
		}
	}
	time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rand.IntN(20))*time.Millisecond)
	defer cancel()
	ended := make(chan struct{})
	// The ender: Shutdown, then Close, while the wave runs.
	go func() {
		defer close(ended)
		if err := tr.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			ta.add("Shutdown", err)
		}
		ta.add("Close", tr.Close())
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ended
	}()
	tortureWait(t, "Shutdown racing a wave", &wg)
	// After Close, RoundTrip says so.
	req, err := http.NewRequest(http.MethodGet, url+"/small", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.RoundTrip(req); !errors.Is(err, endwell.ErrClosed) {
		t.Errorf("RoundTrip after Close: got %v, want %v", err, endwell.ErrClosed)
	}
}

// TestH1BodyCloseWhileReading pins down, in a synctest bubble over fake connections, what
// the torture checks by numbers: a response body closed while another goroutine is blocked
// reading it, while the request body is still being written (issue #17). Close takes no
// time at all, the blocked Read returns ErrBodyClosed, so does every later Read, and the
// connection is released exactly once, even when the blocked Read returns data read just
// before the abort and is never called again.
func TestH1BodyCloseWhileReading(t *testing.T) {
	tests := []struct {
		name string
		// concurrent: Close is called while a Read is blocked; else with no Read.
		concurrent bool
		// stall: the blocked Read returns data after the abort (a read that got its
		// bytes just before), and no Read follows.
		stall    bool
		wantRead string // what the blocked Read returns
	}{
		{name: "Close while a Read is blocked", concurrent: true, wantRead: "ErrBodyClosed"},
		{name: "Close while a Read is blocked, which then returns data", concurrent: true, stall: true, wantRead: "more"},
		{name: "Close with no Read, drain off", concurrent: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				stall := &stallGate{release: make(chan struct{})}
				tr := &endwell.Transport{DialContext: earlyAnswerDial(stall), MaxDrainBytes: -1}
				defer tr.Close()

				var puts atomic.Int32
				var putErr atomic.Value
				endwell.SetOnRelease(tr, func(err error) {
					puts.Add(1)
					putErr.Store(fmt.Sprint(err))
				})
				ctx := context.Background()
				pr, pw := io.Pipe()
				stopUpload := make(chan struct{})
				// The upload's producer: one write, then it waits: the transport's body
				// writer is blocked reading the rest for the whole test.
				go func() {
					pw.Write([]byte("upload"))
					<-stopUpload
					pw.CloseWithError(errUploadAbandoned)
				}()
				defer close(stopUpload)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fake.test/", pr)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "hello" {
					t.Fatalf("first Read: got %q, %v, want %q, nil", buf, err, "hello")
				}

				var readRes chan string
				if tc.concurrent {
					stall.armed.Store(tc.stall)
					readRes = make(chan string, 1)
					go func() {
						b := make([]byte, 64)
						n, err := resp.Body.Read(b)
						switch {
						case err == nil:
							readRes <- string(b[:n])
						case errors.Is(err, endwell.ErrBodyClosed):
							readRes <- "ErrBodyClosed"
						default:
							readRes <- fmt.Sprintf("%d, %v", n, err)
						}
					}()
					synctest.Wait() // the Read is blocked on the connection, holding the body
				}
				start := time.Now()
				resp.Body.Close()
				if took := time.Since(start); took != 0 {
					t.Errorf("Close took %v of the bubble's time, want 0: it waited", took)
				}
				if tc.concurrent {
					close(stall.release)
					if got := <-readRes; got != tc.wantRead {
						t.Errorf("blocked Read: got %s, want %s", got, tc.wantRead)
					}
				}
				synctest.Wait()
				if got := puts.Load(); got != 1 {
					t.Errorf("connection released %d times, want 1", got)
				} else if got := putErr.Load(); got == "<nil>" {
					t.Errorf("connection released to the pool (PutIdleConn(nil)), want it ended")
				}
				if _, err := resp.Body.Read(make([]byte, 8)); !errors.Is(err, endwell.ErrBodyClosed) {
					t.Errorf("Read after Close: got %v, want %v", err, endwell.ErrBodyClosed)
				}
				if got := puts.Load(); got != 1 {
					t.Errorf("after a Read after Close, connection released %d times, want 1", got)
				}
				if err := tr.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown: got %v, want nil", err)
				}
			})
		})
	}
}

// earlyAnswerDial dials fake connections, in a synctest bubble, to a server that answers
// each request at once, before reading its body: 200 and a chunked body whose first chunk
// is "hello", then nothing more until the client goes away, reading the request body
// meanwhile. The client's end reads through stall.
func earlyAnswerDial(stall *stallGate) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c2s, s2c := newHalfPipe(), newHalfPipe()
		client := &fakeConn{r: s2c, w: c2s, local: fakeAddr("client"), remote: fakeAddr(addr)}
		server := &fakeConn{r: c2s, w: s2c, local: fakeAddr(addr), remote: fakeAddr("client")}
		// The fake server: one request; it exits when the client's close ends the
		// request body.
		go func() {
			defer server.Close()
			req, err := http.ReadRequest(bufio.NewReader(server))
			if err != nil {
				return
			}
			io.WriteString(server, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			io.Copy(io.Discard, req.Body)
		}()
		return &stallConn{fakeConn: client, gate: stall}, nil
	}
}

// stallGate, once armed, makes the next read of a stallConn wait for release, then return
// the next chunk "more" whether or not the connection was closed meanwhile: a read that got
// its bytes just before an abort.
type stallGate struct {
	armed   atomic.Bool
	release chan struct{}
}

type stallConn struct {
	*fakeConn
	gate *stallGate
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.gate.armed.CompareAndSwap(true, false) {
		<-c.gate.release
		return copy(p, "4\r\nmore\r\n"), nil
	}
	return c.fakeConn.Read(p)
}

// TestH1RequestBodyError: the request body's Read fails while the response is awaited.
// RoundTrip returns that error, not the connection's error that the abort it caused made
// the response's read see; and it needs no wait for the body writer to find it.
func TestH1RequestBodyError(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(srv.Close)
	tr := newTransport(t, &endwell.Transport{})
	errBroken := errors.New("request body broken")
	body := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(errBroken))
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.RoundTrip(req); err != errBroken {
		t.Errorf("RoundTrip: got %v (%T), want the body's own error, %v", err, err, errBroken)
	}
}

// TestH1CloseRacingFinalRead: a body's Close from another goroutine that crosses the Read
// that met the body's end must not abort the connection: that Read gave it back to the
// pool, and another request may be using it. The PutIdleConn hook, which runs in the
// final Read once the connection is back (under the body's lock), holds the window open
// until a waiting request has the connection and the Close has run.
func TestH1CloseRacingFinalRead(t *testing.T) {
	for _, f := range tortureFlavors[:2] {
		t.Run(f.name, func(t *testing.T) {
			checkLeaks(t)
			mux := http.NewServeMux()
			mux.HandleFunc("/a", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
			mux.HandleFunc("/c", func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(50 * time.Millisecond)
				io.WriteString(w, "c-ok")
			})
			url, tr := f.start(t, mux)
			tr.MaxConnsPerHost = 1

			var resp *http.Response
			cGot := make(chan struct{})
			var once sync.Once
			trace := &httptrace.ClientTrace{PutIdleConn: func(error) {
				once.Do(func() {
					select {
					case <-cGot:
					case <-time.After(5 * time.Second):
						t.Error("the waiting request never got the connection")
					}
					closed := make(chan struct{})
					go func() { resp.Body.Close(); close(closed) }()
					<-closed
				})
			}}
			reqA, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url+"/a", nil)
			var err error
			if resp, err = tr.RoundTrip(reqA); err != nil {
				t.Fatal(err)
			}
			cErr := make(chan error, 1)
			go func() {
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					GotConn: func(httptrace.GotConnInfo) { close(cGot) },
				})
				reqC, _ := http.NewRequestWithContext(ctx, "GET", url+"/c", nil)
				r, err := tr.RoundTrip(reqC)
				if err == nil {
					var b []byte
					b, err = io.ReadAll(r.Body)
					r.Body.Close()
					if err == nil && string(b) != "c-ok" {
						err = fmt.Errorf("body %q", b)
					}
				}
				cErr <- err
			}()
			time.Sleep(20 * time.Millisecond) // the second request waits for the connection
			if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "hello" {
				t.Fatalf("first body: %q, %v", b, err)
			}
			if err := <-cErr; err != nil {
				t.Errorf("the request that took the connection failed: %v (closes %v)", err, tr.Stats().Closes)
			}
		})
	}
}
