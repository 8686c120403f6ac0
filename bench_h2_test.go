package endwell_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/endwell/endwell"
)

// BenchmarkHTTP2 compares endwell with net/http.Transport (its own HTTP/2), small responses
// over HTTP/2 with TLS, 32 concurrent clients (SetParallelism(16) on 2 cores) over one
// connection, in the same run against the same server: peer=go is net/http's server in
// the benchmark's process, peer=nginx is nginx in its own (it needs nginx, as the interop
// tests do). Compare req/s, cpu-µs/op and allocs/op of the sub-benchmarks.
func BenchmarkHTTP2(b *testing.B) {
	b.Run("peer=go", func(b *testing.B) {
		body := bytes.Repeat([]byte("x"), 128)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
		}))
		srv.EnableHTTP2 = true
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes cut short by the clients' ends
		srv.StartTLS()
		defer srv.Close()
		benchHTTP2Impls(b, srv.Client().Transport.(*http.Transport).TLSClientConfig, srv.URL)
	})
	b.Run("peer=nginx", func(b *testing.B) {
		n := startNginxWith(b, nginxOptions{KeepAlive: "75s", Conns: 1000, HTTP2: true, Workers: 2})
		benchHTTP2Impls(b, &tls.Config{RootCAs: n.cert.pool}, n.url("/ok"))
	})
}

// benchHTTP2Impls runs benchRoundTrips against url over HTTP/2 with each transport.
func benchHTTP2Impls(b *testing.B, cliTLS *tls.Config, url string) {
	for _, impl := range []string{"nethttp", "endwell"} {
		b.Run("impl="+impl, func(b *testing.B) {
			var rt http.RoundTripper
			switch impl {
			case "nethttp":
				t := &http.Transport{TLSClientConfig: cliTLS.Clone(), ForceAttemptHTTP2: true}
				defer t.CloseIdleConnections()
				rt = t
			case "endwell":
				t := &endwell.Transport{TLSClientConfig: cliTLS}
				defer t.Close()
				rt = t
			}
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				b.Fatal(err)
			}
			// One request first, so that both transports run over one connection: left to
			// itself, net/http dials a connection for each of the 32 concurrent first
			// requests (32 connections, more server-side parallelism), where endwell
			// makes them share one dial.
			if resp, err := rt.RoundTrip(req); err != nil {
				b.Fatal(err)
			} else {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			benchRoundTrips(b, rt, url, func(resp *http.Response) error {
				if resp.ProtoMajor != 2 {
					return fmt.Errorf("got %s, want HTTP/2.0", resp.Proto)
				}
				return nil
			})
		})
	}
}
