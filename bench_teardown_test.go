package endwell_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell"
)

// transports returns the two transports compared by the benchmarks, configured alike.
// The certificate of the test servers is valid for 127.0.0.1 only: the servers on other
// loopback addresses are verified under that name.
func transports(cliTLS *tls.Config, keepAlives bool, idlePerHost int) map[string]func() (http.RoundTripper, func()) {
	cliTLS = cliTLS.Clone()
	cliTLS.ServerName = "127.0.0.1"
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
		b.Run(impl, func(b *testing.B) {
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
		b.Run(impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, true, 64)[impl]()
			defer closeFn()
			small, _ := http.NewRequest("GET", srv.url("https"), nil)
			big, _ := http.NewRequest("GET", srv.url("https")+"big", nil)
			var n atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
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
		b.Run(impl, func(b *testing.B) {
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
				b.StopTimer()
				closeFn()
			}
		})
	}
}

// BenchmarkLatencyUnderTeardown: p99 of sequential requests at rest, and while 4 000 idle
// TLS connections of the same transport are being closed (CloseIdleConnections). The
// ratio p99-teardown/p99-rest is the figure of merit.
func BenchmarkLatencyUnderTeardown(b *testing.B) {
	const n, hosts, samples = 4000, 20, 2000
	addrs := spawnServers(b, hosts+1, true)
	_, cliTLS := benchTLS(b)
	target := "https://" + addrs[hosts] + "/"
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run(impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, true, n/hosts)[impl]()
			defer closeFn()
			measure := func() time.Duration {
				lat := make([]time.Duration, 0, samples)
				req, _ := http.NewRequest("GET", target, nil)
				for range samples {
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
				return lat[len(lat)*99/100]
			}
			for range b.N {
				rest := measure()
				openIdle(b, rt, "https", addrs[:hosts], n)
				done := make(chan struct{})
				go func() {
					rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
					close(done)
				}()
				under := measure()
				<-done
				b.ReportMetric(float64(rest.Microseconds()), "p99-rest-µs")
				b.ReportMetric(float64(under.Microseconds()), "p99-teardown-µs")
				b.ReportMetric(float64(under)/float64(rest), "p99-ratio")
			}
		})
	}
}

// BenchmarkIdleMemory: heap and stack per idle TLS connection, client side only (the
// servers run in another process). Reported as bytes/conn.
func BenchmarkIdleMemory(b *testing.B) {
	const n, hosts = 2000, 10
	addrs := spawnServers(b, hosts, true)
	_, cliTLS := benchTLS(b)
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run(impl, func(b *testing.B) {
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

var _ = fmt.Sprint
