package endwell_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/testpeer"
)

// Load (issue 9): 10 000 idle connections over 40 loopback hosts, then Shutdown: it must
// end in bounded time and give every file descriptor back.
//
// The server runs in a child process (this test binary, running TestLoadPeerProcess): a
// process can't hold both ends of 10 000 connections under a common RLIMIT_NOFILE of
// 20 000, and raising the hard limit takes a privilege that containers often drop.

const (
	loadHosts    = 40
	loadPerHost  = 250
	loadConns    = loadHosts * loadPerHost
	loadPeerEnv  = "ENDWELL_LOAD_PEER"
	loadResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
)

// TestLoadPeerProcess is the load test's server when run as a child process; otherwise it
// does nothing. It listens on 127.0.0.2 to 127.0.0.(loadHosts+1), prints "ADDR host:port"
// for each, then "READY", and answers every request with loadResponse until its stdin
// closes. Each connection ends when the client's does.
func TestLoadPeerProcess(t *testing.T) {
	if os.Getenv(loadPeerEnv) != "1" {
		t.Skip("the load test's server, run as a child process")
	}
	for i := range loadHosts {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", i+2))
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		testpeer.ServeListener(t, ln, nil, func(_ int, c net.Conn) { loadServe(c) })
		fmt.Println("ADDR", ln.Addr())
	}
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// The load server's lines: an address it listens on, and its last word.
var (
	loadAddr  = regexp.MustCompile(`(?m)^ADDR (\S+)$`)
	loadReady = regexp.MustCompile(`(?m)^(READY|ERROR.*)$`)
)

// loadServe answers each request head on c with loadResponse.
func loadServe(c net.Conn) {
	br := bufio.NewReaderSize(c, 1024)
	for {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if _, err := io.WriteString(c, loadResponse); err != nil {
			return
		}
	}
}

func TestLoadShutdown10k(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: 10 000 connections (skipped in -short)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("load test: 127.0.0.x loopback hosts are Linux's")
	}
	baseFDs := countFDs()
	// The server process.
	p := startTestChild(t, "TestLoadPeerProcess", loadPeerEnv+"=1")
	out, _ := p.WaitOutput(loadReady, childWait)
	var addrs []string
	for _, m := range loadAddr.FindAllStringSubmatch(out, -1) {
		addrs = append(addrs, m[1])
	}
	if len(addrs) != loadHosts {
		t.Fatalf("load server: got %d addresses, want %d", len(addrs), loadHosts)
	}

	tr := &endwell.Transport{
		MaxIdleConns:        -1,        // no limit
		MaxIdleConnsPerHost: loadConns, // every connection of a host may be idle (-1: none)
		IdleConnTimeout:     -1,
	}
	defer tr.Close()

	// Every request holds its connection (its body unread) until all have their
	// response: then all 10 000 connections exist at once, and go idle together.
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	var got sync.WaitGroup
	got.Add(loadConns)
	release := make(chan struct{})
	for i := range loadConns {
		wg.Add(1)
		// One client of the load.
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, "http://"+addrs[i%loadHosts]+"/", nil)
			resp, err := tr.RoundTrip(req)
			got.Done()
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			<-release
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	got.Wait()
	close(release)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed, the first with: %v", n, loadConns, firstErr.Load())
	}
	setup := time.Since(start)
	st := tr.Stats()
	fds := countFDs()
	if st.Idle != loadConns {
		t.Errorf("idle connections: got %d, want %d", st.Idle, loadConns)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d connections over %d hosts in %v; %d idle, %d fds open (%d before), heap %d MiB, %d goroutines",
		loadConns, loadHosts, setup.Round(time.Millisecond), st.Idle, fds, baseFDs, ms.HeapInuse>>20, runtime.NumGoroutine())

	// Shutdown: every connection closes gracefully, all at once, under one budget.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start = time.Now()
	err := tr.Shutdown(ctx)
	took := time.Since(start)
	if err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// Bounded: each close is a FIN, and the peer's FIN in answer; the budget (2 s)
	// bounds the slowest. 10 s is far above what it takes (about a second under -race).
	if took > 10*time.Second {
		t.Errorf("Shutdown took %v, want under 10s", took)
	}
	closes := tr.Stats().Closes
	var graceful uint64
	for k, n := range closes {
		if k.Mode == "graceful" && k.Reason == "shutdown" {
			graceful += n
		}
	}
	if graceful != loadConns {
		t.Errorf("graceful shutdown closes: got %d, want %d (%v)", graceful, loadConns, closes)
	}
	// Every fd back, at once: Shutdown returned after every socket was closed.
	after := countFDs()
	if after > baseFDs+5 { // the server's pipes and the test runtime's own
		t.Errorf("open fds after Shutdown: got %d, want about %d as before", after, baseFDs)
	}
	t.Logf("Shutdown of %d connections took %v; closes %v; fds %d -> %d -> %d", loadConns, took.Round(time.Millisecond), closes, baseFDs, fds, after)
}
