package endwell_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// fastServer is a minimal HTTP/1.1 keep-alive server for benchmarks: it answers every
// request with the same small response, so that the clients' cost dominates. It reads each
// request's header block and ignores bodies (benchmark requests have none).
type fastServer struct {
	srv  *testpeer.Server
	resp []byte // the small response
	big  []byte // the response to /big
}

func newFastServer(tb testing.TB, tlsCfg *tls.Config) *fastServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serveFast(tb, ln, tlsCfg)
}

// serveFast serves ln until the test ends: "/big" gets a 1 MiB body, anything else 128 bytes.
func serveFast(tb testing.TB, ln net.Listener, tlsCfg *tls.Config) *fastServer {
	s := &fastServer{}
	s.resp = append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 128\r\n\r\n"), bytes.Repeat([]byte("x"), 128)...)
	s.big = append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\n\r\n"), bytes.Repeat([]byte("y"), 1<<20)...)
	// One connection's loop: it ends when the client closes or an error occurs.
	s.srv = testpeer.ServeListener(tb, ln, tlsCfg, func(_ int, c net.Conn) {
		defer c.Close() // with TLS, close_notify first
		br := bufio.NewReader(c)
		for {
			big, err := skipHeader(br)
			if err != nil {
				return
			}
			resp := s.resp
			if big {
				resp = s.big
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
	return s
}

// skipHeader reads one request's header block and reports whether it asked for /big.
func skipHeader(br *bufio.Reader) (big bool, err error) {
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if first {
			big = bytes.HasPrefix(line, []byte("GET /big "))
		}
		if len(line) <= 2 {
			return big, nil
		}
	}
}

// reportCPU reports the CPU time the process used since cpu0 per operation: the clients',
// and an in-process server's (the same for both transports); less at the mercy of other
// machines' load on a shared host than the wall clock.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
}

func (s *fastServer) url(scheme string) string { return scheme + "://" + s.srv.Addr() + "/" }

// BenchmarkHTTP1 compares endwell with net/http.Transport: HTTP/1.1 small responses over
// keep-alive connections, 32 concurrent clients, plain and TLS, in the same run against the
// same server. Compare req/s, cpu-µs/op and allocs/op of the sub-benchmarks (benchstat, or
// the README's command).
//
// peer=go is a minimal Go server in the benchmark's own process: its CPU counts in
// cpu-µs/op, the same for both transports, and takes its share of the 2 cores. peer=nginx is
// nginx in processes of its own (two workers, one per core), as the issue measured:
// cpu-µs/op is then the client's alone. It needs nginx, as the interop tests do.
func BenchmarkHTTP1(b *testing.B) {
	b.Run("peer=go", func(b *testing.B) {
		for _, scheme := range []string{"http", "https"} {
			var srvTLS, cliTLS *tls.Config
			if scheme == "https" {
				srvTLS, cliTLS = benchTLS(b)
			}
			srv := newFastServer(b, srvTLS)
			benchHTTP1Impls(b, "scheme="+scheme, cliTLS, srv.url(scheme))
		}
	})
	b.Run("peer=nginx", func(b *testing.B) {
		n := startNginxWith(b, nginxOptions{KeepAlive: "75s", Conns: 1000, Plain: true, Workers: 2})
		benchHTTP1Impls(b, "scheme=http", nil, "http://"+n.plain+"/ok")
		benchHTTP1Impls(b, "scheme=https", &tls.Config{RootCAs: n.cert.pool}, n.url("/ok"))
	})
}

// benchHTTP1Impls runs benchRoundTrips against url with each transport, under name.
func benchHTTP1Impls(b *testing.B, name string, cliTLS *tls.Config, url string) {
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run(name+"/impl="+impl, func(b *testing.B) {
			rt, closeFn := transports(cliTLS, true, 64)[impl]()
			defer closeFn()
			benchRoundTrips(b, rt, url)
		})
	}
}

// benchRoundTrips runs GETs of url through rt from 32 goroutines, reading each body to its
// end. Each response is handed to check, if given, which reports what is wrong with it.
func benchRoundTrips(b *testing.B, rt http.RoundTripper, url string, check ...func(*http.Response) error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16) // 2 cores x 16 = 32 concurrent clients
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	defer func() { reportCPU(b, cpu0) }()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 512)
		for pb.Next() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			for _, c := range check {
				if err := c(resp); err != nil {
					b.Error(err)
				}
			}
			for {
				_, err := resp.Body.Read(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
