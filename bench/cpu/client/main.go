// Command client makes GET requests to one URL through net/http, endwell or fasthttp, for
// bench/cpu/run: -n requests one after another (the instruction count under callgrind is
// the cost of the requests), or -c goroutines for -d (the requests per second).
//
// Every request reads its body to the end and closes it. The three clients get the same
// TLS configuration (InsecureSkipVerify: the server's certificate is a throwaway
// self-signed one, and connections are kept alive, so verification happens once per
// connection and does not count). -proto h1tls offers HTTP/1.1 alone in ALPN; -proto h2
// offers h2 and HTTP/1.1, and the first response must be HTTP/2.
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/endwell/endwell"
	"github.com/valyala/fasthttp"
)

func main() {
	impl := flag.String("impl", "endwell", "client: nethttp, endwell or fasthttp")
	proto := flag.String("proto", "h1", "protocol: h1 (http://), h1tls (https://, HTTP/1.1 only) or h2 (https://, HTTP/2)")
	n := flag.Int("n", 1000, "sequential requests (when -c is 0)")
	rawURL := flag.String("url", "", "URL to GET; its scheme must match -proto")
	conc := flag.Int("c", 0, "throughput mode: goroutines requesting concurrently for -d")
	dur := flag.Duration("d", 5*time.Second, "throughput mode: how long")
	memprofile := flag.String("memprofile", "", "with -allocs: write a heap profile of every allocation of the measured requests to this file")
	cpuprofile := flag.String("cpuprofile", "", "throughput mode: write a CPU profile of the run to this file")
	allocs := flag.Bool("allocs", false, "print the heap allocations per request of -n RoundTrip calls (the transport alone, no http.Client; nethttp and endwell)")
	flag.Parse()

	if *rawURL == "" {
		fail("-url is required")
	}
	wantTLS := *proto != "h1"
	if strings.HasPrefix(*rawURL, "https://") != wantTLS {
		fail("-url %s does not fit -proto %s", *rawURL, *proto)
	}
	if *allocs {
		if *impl == "fasthttp" {
			fail("-allocs is for nethttp and endwell")
		}
		allocsPerRoundTrip(stdTransport(*impl, *proto), *proto, *rawURL, *n, *memprofile)
		return
	}
	var get func(buf []byte) error
	switch *impl {
	case "nethttp", "endwell":
		get = stdGetter(*impl, *proto, *rawURL)
	case "fasthttp":
		if *proto == "h2" {
			fail("fasthttp has no HTTP/2")
		}
		get = fastGetter(*proto, *rawURL)
	default:
		fail("unknown -impl %q", *impl)
	}

	// The first request checks the protocol (stdGetter); it is part of -n.
	buf := make([]byte, 0, 512)
	if err := get(buf); err != nil {
		fail("first request: %v", err)
	}
	if *conc > 0 {
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				fail("cpuprofile: %v", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				fail("cpuprofile: %v", err)
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		throughput(get, *conc, *dur)
		return
	}
	for i := 1; i < *n; i++ {
		if err := get(buf); err != nil {
			fail("request %d: %v", i, err)
		}
	}
}

var tlsConfig = &tls.Config{InsecureSkipVerify: true}

var wantBody = []byte("hello world\n")

// A getter (func(buf []byte) error) makes one request, reads its body into buf, whose
// capacity is the caller's reusable buffer (the client's own allocations stay out of the
// count), and checks it.

// stdGetter returns a getter through an http.Client over net/http's Transport or endwell's,
// configured alike. Its first call checks that the response came over the wanted protocol.
func stdGetter(impl, proto, url string) func(buf []byte) error {
	return getter(&http.Client{Transport: stdTransport(impl, proto)}, proto, url)
}

// stdTransport returns net/http's Transport or endwell's, configured alike for proto.
func stdTransport(impl, proto string) http.RoundTripper {
	var protos http.Protocols
	protos.SetHTTP1(true)
	if proto == "h2" {
		protos.SetHTTP2(true)
	}
	var rt http.RoundTripper
	switch impl {
	case "nethttp":
		t := &http.Transport{
			TLSClientConfig:     tlsConfig,
			ForceAttemptHTTP2:   proto == "h2",
			Protocols:           &protos,
			MaxIdleConnsPerHost: 64, // net/http's default of 2 would redial under -c 32
		}
		if proto != "h2" {
			t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		rt = t
	case "endwell":
		t := &endwell.Transport{
			TLSClientConfig:     tlsConfig,
			ForceAttemptHTTP2:   proto == "h2",
			Protocols:           &protos,
			MaxIdleConnsPerHost: 64,
		}
		if proto != "h2" {
			t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		rt = t
	}
	return rt
}

// getter returns a getter through client. Its first call checks that the response came
// over the wanted protocol.
func getter(client *http.Client, proto, url string) func(buf []byte) error {
	wantMajor := 1
	if proto == "h2" {
		wantMajor = 2
	}
	var checked atomic.Bool
	return func(buf []byte) error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		if !checked.Load() {
			defer checked.Store(true)
			if resp.ProtoMajor != wantMajor {
				resp.Body.Close()
				return fmt.Errorf("got HTTP/%d.%d, want HTTP/%d", resp.ProtoMajor, resp.ProtoMinor, wantMajor)
			}
			if (resp.TLS != nil) != (proto != "h1") {
				resp.Body.Close()
				return fmt.Errorf("got TLS %v, want TLS %v", resp.TLS != nil, proto != "h1")
			}
		}
		b, err := readAll(resp.Body, buf[:0])
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(b, wantBody) {
			return fmt.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, wantBody)
		}
		return nil
	}
}

// readAll is io.ReadAll into b, which does not grow for a 12-byte body.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// fastGetter returns a getter through fasthttp's Client (which keeps a HostClient per host),
// with the same TLS configuration. fasthttp speaks HTTP/1.1 only, and offers no ALPN.
func fastGetter(proto, url string) func(buf []byte) error {
	c := &fasthttp.Client{TLSConfig: tlsConfig, MaxConnsPerHost: 512}
	return func([]byte) error {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		if err := c.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != fasthttp.StatusOK || !bytes.Equal(resp.Body(), wantBody) {
			return fmt.Errorf("got %d %q, want 200 %q", resp.StatusCode(), resp.Body(), wantBody)
		}
		return nil
	}
}

// allocsPerRoundTrip prints the heap allocations (runtime.MemStats.Mallocs, every goroutine's:
// the transport's own goroutines count) per request of n sequential calls of rt.RoundTrip
// with one request, as the root's benchmarks make them, after 100 to warm up. Each body is
// read to its end and closed.
func allocsPerRoundTrip(rt http.RoundTripper, proto, url string, n int, memprofile string) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		fail("%v", err)
	}
	wantMajor := 1
	if proto == "h2" {
		wantMajor = 2
	}
	buf := make([]byte, 512)
	do := func() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			fail("%v", err)
		}
		if resp.ProtoMajor != wantMajor {
			fail("got HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantMajor)
		}
		for {
			_, err := resp.Body.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				fail("%v", err)
			}
		}
		resp.Body.Close()
	}
	for range 100 {
		do()
	}
	var m0, m1 runtime.MemStats
	if memprofile != "" {
		runtime.MemProfileRate = 1
	}
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range n {
		do()
	}
	runtime.ReadMemStats(&m1)
	if memprofile != "" {
		runtime.GC() // the profile shows allocations as of the last GC
		f, err := os.Create(memprofile)
		if err != nil {
			fail("%v", err)
		}
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			fail("%v", err)
		}
		f.Close()
	}
	fmt.Printf("%.2f allocs/op %.0f B/op\n", float64(m1.Mallocs-m0.Mallocs)/float64(n), float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n))
}

// throughput runs conc goroutines calling get for d and prints the requests per second,
// then the process's CPU time (user and system, from getrusage) per request in
// microseconds: what one request costs the client under load, which moves less than the
// rate when the machine's other tenants (or the server) take a share of the cores.
func throughput(get func(buf []byte) error, conc int, d time.Duration) {
	var ru0, ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		fail("getrusage: %v", err)
	}
	var count atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		// A client: requests one after another until stop.
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 512)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := get(buf); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				count.Add(1)
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		fail("getrusage: %v", err)
	}
	if p := firstErr.Load(); p != nil {
		fail("throughput: %v", *p)
	}
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	n := count.Load()
	fmt.Printf("%.0f %.2f\n", float64(n)/elapsed.Seconds(), float64(cpu.Microseconds())/float64(max(n, 1)))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "client: "+format+"\n", args...)
	os.Exit(1)
}
