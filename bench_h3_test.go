package endwell

import (
	"io"
	"net/http"
	"testing"

	"github.com/quic-go/quic-go/http3"
)

// BenchmarkHTTP3 compares endwell's HTTP/3 (HTTP3.Only) with quic-go's own
// http3.Transport: small responses, 32 concurrent clients (SetParallelism(16) on 2 cores)
// over one QUIC connection each, against the same in-process quic-go server in the same
// run. Compare req/s and allocs/op of impl=quicgo and impl=endwell.
func BenchmarkHTTP3(b *testing.B) {
	s := startH3Server(b)
	url := s.url("/")
	for _, impl := range []string{"quicgo", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			var rt http.RoundTripper
			switch impl {
			case "quicgo":
				t := &http3.Transport{TLSClientConfig: h2TestCert(b).client.Clone()}
				defer t.Close()
				rt = t
			case "endwell":
				t := &Transport{TLSClientConfig: h2TestCert(b).client, HTTP3: &HTTP3Config{Only: true}}
				defer t.Close()
				rt = t
			}
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				b.Fatal(err)
			}
			// One request first, so that both run over one connection.
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 512)
				for pb.Next() {
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					for {
						if _, err := resp.Body.Read(buf); err != nil {
							break
						}
					}
					resp.Body.Close()
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
