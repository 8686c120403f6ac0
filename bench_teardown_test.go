package endwell_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/testpeer"
)

// transports returns the two transports compared by the benchmarks, configured alike.
// The certificate of the test servers is valid for 127.0.0.1 only: the servers on other
// loopback addresses are verified under that name.
func transports(cliTLS *tls.Config, keepAlives bool, idlePerHost int) map[string]func() (http.RoundTripper, func()) {
	if cliTLS != nil {
		cliTLS = cliTLS.Clone()
		cliTLS.ServerName = "127.0.0.1"
	}
	return map[string]func() (http.RoundTripper, func()){
		"nethttp": func() (http.RoundTripper, func()) {
			t := &http.Transport{TLSClientConfig: cliTLS, DisableKeepAlives: !keepAlives,
				MaxIdleConnsPerHost: idlePerHost, MaxIdleConns: 0} // 0: no limit
			return t, t.CloseIdleConnections
		},
		"endwell": func() (http.RoundTripper, func()) {
			t := &endwell.Transport{TLSClientConfig: cliTLS, DisableKeepAlives: !keepAlives,
				MaxIdleConnsPerHost: idlePerHost, MaxIdleConns: -1} // -1: no limit
			return t, func() { t.Close() }
		},
	}
}

// BenchmarkChurn: a new connection per request (DisableKeepAlives), 32 concurrent clients.
// endwell closes each gracefully in the background; net/http closes it in line.
func BenchmarkChurn(b *testing.B) {
	srvTLS, cliTLS := benchTLS(b)
	srv := newFastServer(b, srvTLS)
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, false, 64)[impl]()
			defer closeFn()
			benchRoundTrips(b, rt, srv.url("https"))
		})
	}
}

// BenchmarkAbortMix: 32 concurrent clients over keep-alive TLS connections, one request in
// five reads a little of a 1 MiB body and closes it (an abort), the rest are small.
func BenchmarkAbortMix(b *testing.B) {
	srvTLS, cliTLS := benchTLS(b)
	srv := newFastServer(b, srvTLS)
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, true, 64)[impl]()
			defer closeFn()
			small, _ := http.NewRequest("GET", srv.url("https"), nil)
			big, _ := http.NewRequest("GET", srv.url("https")+"big", nil)
			var n atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			defer reportCPU(b, cpu0)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				for pb.Next() {
					abort := n.Add(1)%5 == 0
					req := small
					if abort {
						req = big
					}
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					if abort {
						resp.Body.Read(buf)
					} else {
						io.Copy(io.Discard, resp.Body)
					}
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// openIdle opens n idle connections through rt, spread over addrs, n/len(addrs) each.
func openIdle(tb testing.TB, rt http.RoundTripper, scheme string, addrs []string, n int) {
	tb.Helper()
	per := n / len(addrs)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for _, a := range addrs {
		// Open per connections to a at once: each request holds its response until all
		// of a's are open, so that none is reused.
		resps := make([]*http.Response, per)
		for i := range per {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", scheme+"://"+a+"/", nil)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				resps[i] = resp
			})
		}
		wg.Wait()
		for _, r := range resps {
			if r != nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		}
	}
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
}

// BenchmarkShutdown10k: graceful Shutdown of 10 000 idle TLS connections over 40 loopback
// addresses, against net/http's CloseIdleConnections of as many. One op is one whole close
// of the pool; setup (dialling) is not timed. Run with -benchtime=1x.
func BenchmarkShutdown10k(b *testing.B) {
	const n, hosts = 10000, 40
	addrs := spawnServers(b, hosts, true)
	_, cliTLS := benchTLS(b)
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				rt, closeFn := transports(cliTLS, true, n/hosts)[impl]()
				openIdle(b, rt, "https", addrs, n)
				runtime.GC()
				b.StartTimer()
				start := time.Now()
				switch t := rt.(type) {
				case *endwell.Transport:
					if err := t.Shutdown(context.Background()); err != nil {
						b.Fatal(err)
					}
				case *http.Transport:
					t.CloseIdleConnections()
				}
				b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/shutdown")
				if t, ok := rt.(*endwell.Transport); ok {
					// How they ended: every one should have exchanged goodbyes.
					var clean uint64
					for k, c := range t.Stats().Closes {
						if k.Outcome == "clean" {
							clean += c
						}
					}
					b.ReportMetric(float64(clean)/n, "clean-fraction")
				}
				b.StopTimer()
				closeFn()
			}
		})
	}
}

// BenchmarkLatencyUnderTeardown: p99 of sequential requests at rest, and while 10 000 idle
// TLS connections of the same transport (over 40 loopback addresses) are being closed by
// CloseIdleConnections. The teardown window lasts until every one of those sockets is
// closed: for net/http, until CloseIdleConnections returns (it closes them one after
// another); for endwell, until Stats reports no close in progress. Requests are sampled
// through the whole window (at least minSamples of them), and at rest, with the same
// 10 000 connections idle, before, and again a second after. The ratio p99-teardown/p99-rest is the figure of merit;
// p99.9 and the worst request are reported too (a teardown that stalls everything for
// a moment hides below a p99), and the CPU time the client process used in the window.
// Run with -benchtime=1x.
//
// The requests go to a server in another process than the servers of the connections
// closing: a service closes its idle connections to many backends while it talks to
// another, and a server busy with goodbyes would otherwise delay its own answers (that
// is the server's latency, not the client's). peer=go runs the servers in child processes
// of Go (serveFast); peer=nginx in nginx workers (it needs nginx, as the interop tests
// do), as the issue measured. peer=nginx/closer=process is the floor: the 10 000
// connections belong to another process, which closes them with the same transport, so
// that the requests and the goodbyes share nothing but the machine's cores.
func BenchmarkLatencyUnderTeardown(b *testing.B) {
	const hosts = 40
	b.Run("peer=go", func(b *testing.B) {
		idle := spawnServers(b, hosts, true)
		target := spawnServers(b, 1, true)[0]
		_, cliTLS := benchTLS(b)
		latencyUnderTeardown(b, cliTLS, idle, "https://"+target+"/", "")
	})
	b.Run("peer=nginx", func(b *testing.B) {
		idle := startNginxWith(b, nginxOptions{KeepAlive: "75s", Conns: 11000, Ports: hosts})
		target := startNginxWith(b, nginxOptions{KeepAlive: "75s", Conns: 100})
		pool := idle.cert.pool
		pool.AddCert(target.cert.leaf)
		latencyUnderTeardown(b, &tls.Config{RootCAs: pool}, idle.more, target.url("/ok"), "")
		// The floor: the same, but the 10 000 connections are another process's, which
		// closes them with the same transport. The requests share no run queue, no
		// memory and no lock with the goodbyes, only the machine's cores: what the p99
		// gains here is the machine's doing, beyond any transport's.
		b.Run("closer=process", func(b *testing.B) {
			latencyUnderTeardown(b, &tls.Config{RootCAs: pool}, idle.more, target.url("/ok"), idle.cert.certFile)
		})
	})
}

// latencyUnderTeardown is BenchmarkLatencyUnderTeardown against the servers at idle (the
// connections to close, spread over them) and target (the requests sampled). If
// closerCA is set, the connections are held and closed by a child process (see
// TestCloserChild) that trusts the certificate in that file, and cpu-ms is the child's.
func latencyUnderTeardown(b *testing.B, cliTLS *tls.Config, idle []string, target string, closerCA string) {
	const n, minSamples, maxSamples = 10000, 200, 20000
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, true, n/len(idle))[impl]()
			defer closeFn()
			req, _ := http.NewRequest("GET", target, nil)
			// sample makes requests one after another until done says stop (and at
			// least minSamples are in), and returns their latencies, sorted.
			sample := func(done func() bool) []time.Duration {
				lat := make([]time.Duration, 0, maxSamples)
				for i := 0; i < maxSamples && (i < minSamples || !done()); i++ {
					start := time.Now()
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				return lat
			}
			p99 := func(lat []time.Duration) time.Duration { return lat[len(lat)*99/100] }
			for range b.N {
				var child *closerChild
				if closerCA != "" {
					child = startCloserChild(b, impl, closerCA, idle, n)
				} else {
					openIdle(b, rt, "https", idle, n)
				}
				runtime.GC()
				time.Sleep(200 * time.Millisecond) // let the servers settle
				rest := sample(func() bool { return true })
				var closing atomic.Bool
				closing.Store(true)
				cpu0 := cpuTime()
				var childCPU time.Duration
				start := time.Now()
				go func() {
					if child != nil {
						childCPU = child.closeAll(b)
					} else {
						closeAllIdle(rt)
					}
					closing.Store(false)
				}()
				under := sample(func() bool { return !closing.Load() })
				window := time.Since(start)
				for closing.Load() { // maxSamples reached first
					time.Sleep(time.Millisecond)
				}
				cpu := cpuTime() - cpu0
				if child != nil {
					cpu = childCPU
				}
				// At rest again, a second after: the baseline is the lower of the two p99s,
				// which makes the ratio conservative on a host whose load comes and goes.
				time.Sleep(time.Second)
				if again := sample(func() bool { return true }); p99(again) < p99(rest) {
					rest = again
				}
				b.ReportMetric(float64(p99(rest).Microseconds()), "p99-rest-µs")
				b.ReportMetric(float64(p99(under).Microseconds()), "p99-teardown-µs")
				b.ReportMetric(float64(p99(under))/float64(p99(rest)), "p99-ratio")
				b.ReportMetric(float64(under[len(under)*999/1000].Microseconds()), "p999-teardown-µs")
				b.ReportMetric(float64(under[len(under)-1].Microseconds()), "max-teardown-µs")
				b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms")
				b.ReportMetric(float64(window.Milliseconds()), "window-ms")
				b.ReportMetric(float64(len(under)), "samples")
			}
		})
	}
}

// closeAllIdle closes rt's idle connections and returns once they are all closed: for
// net/http, when CloseIdleConnections returns (it closes them one after another); for
// endwell, when Stats reports no close in progress.
func closeAllIdle(rt http.RoundTripper) {
	switch t := rt.(type) {
	case *endwell.Transport:
		t.CloseIdleConnections()
		for t.Stats().Closing > 0 {
			time.Sleep(time.Millisecond)
		}
	case *http.Transport:
		t.CloseIdleConnections()
	}
}

// closerChild is a child process (TestCloserChild) holding idle connections for
// BenchmarkLatencyUnderTeardown's closer=process.
type closerChild struct{ proc *testpeer.Proc }

// closerClosed is the child's answer once it closed its connections: the CPU time that took.
var closerClosed = regexp.MustCompile(`(?m)^closed (\d+)$`)

// startCloserChild starts a child that opens n idle connections over impl to the servers
// at addrs, trusting the certificate in caFile, and returns once they are open. The child
// ends with the benchmark.
func startCloserChild(b *testing.B, impl, caFile string, addrs []string, n int) *closerChild {
	b.Helper()
	p := startTestChild(b, "TestCloserChild",
		fmt.Sprintf("ENDWELL_CLOSER_CHILD=%s;%s;%d;%s", impl, caFile, n, strings.Join(addrs, ",")))
	if out, ok := p.WaitOutput(childReady, childWait); !ok {
		b.Fatalf("closer child: got %q, want ready", out)
	}
	return &closerChild{proc: p}
}

// closeAll has the child close its connections, and returns the CPU time that took it.
func (c *closerChild) closeAll(b *testing.B) time.Duration {
	if _, err := io.WriteString(c.proc.Stdin, "close\n"); err != nil {
		b.Error(err)
		return 0
	}
	out, ok := c.proc.WaitOutput(closerClosed, childWait)
	if !ok {
		b.Errorf("closer child: got %q, want closed <ns>", out)
		return 0
	}
	ns, _ := strconv.ParseInt(closerClosed.FindStringSubmatch(out)[1], 10, 64)
	return time.Duration(ns)
}

// TestCloserChild is the child process of startCloserChild; it does nothing in a normal
// run. It opens the idle connections, says ready, closes them all when told to, says
// "closed" and the CPU time that took, and exits when its stdin closes.
func TestCloserChild(t *testing.T) {
	spec := os.Getenv("ENDWELL_CLOSER_CHILD")
	if spec == "" {
		t.Skip("only run as startCloserChild's child process")
	}
	parts := strings.SplitN(spec, ";", 4)
	if len(parts) != 4 {
		t.Fatalf("ENDWELL_CLOSER_CHILD=%q", spec)
	}
	impl, caFile, addrs := parts[0], parts[1], strings.Split(parts[3], ",")
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	rt, closeFn := transports(&tls.Config{RootCAs: pool}, true, n/len(addrs))[impl]()
	defer closeFn()
	openIdle(t, rt, "https", addrs, n)
	runtime.GC()
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return // the parent is gone
	}
	cpu0 := cpuTime()
	closeAllIdle(rt)
	fmt.Println("closed", (cpuTime() - cpu0).Nanoseconds())
	io.Copy(io.Discard, in) // until the parent closes it, or dies
}

// BenchmarkIdleMemory: heap and stack per idle TLS connection, client side only (the
// servers run in another process). Reported as bytes/conn.
func BenchmarkIdleMemory(b *testing.B) {
	const n, hosts = 2000, 10
	addrs := spawnServers(b, hosts, true)
	_, cliTLS := benchTLS(b)
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			for range b.N {
				rt, closeFn := transports(cliTLS, true, n/hosts)[impl]()
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				openIdle(b, rt, "https", addrs, n)
				time.Sleep(100 * time.Millisecond) // let idle goroutines settle
				runtime.GC()
				runtime.ReadMemStats(&after)
				used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
				b.ReportMetric(float64(used)/n, "bytes/conn")
				closeFn()
			}
		})
	}
}

// cpuTime returns the CPU time, user and system, the process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
