package h3_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/h3"
	"github.com/endwell/endwell/internal/testpeer"
)

// ngtcp2 is Debian's ngtcp2 example server (package ngtcp2-server, binary gtlsserver), an
// independent QUIC and HTTP/3 implementation whose debug log shows every frame it
// received.
type ngtcp2 struct {
	addr string
	proc *testpeer.Proc // its output is the log
}

// startNgtcp2 runs the server on a free port of 127.0.0.1, serving a directory with
// /index.html (a few bytes) and /big (4 MiB), and waits until it answers. It skips the test
// if the server is not installed (fails it if ENDWELL_PEERS=require).
func startNgtcp2(t *testing.T) *ngtcp2 {
	t.Helper()
	bin := testpeer.Need(t, "gtlsserver", "ngtcp2-server")
	dir := t.TempDir()
	certFile, keyFile := testpeer.TestCert(t).WriteFiles(t, dir)
	htdocs := dir + "/htdocs"
	if err := os.Mkdir(htdocs, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(htdocs+"/index.html", []byte("hello from ngtcp2\n"), 0o644)
	os.WriteFile(htdocs+"/big", bytes.Repeat([]byte("x"), 4<<20), 0o644)

	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()

	s := &ngtcp2{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.proc = testpeer.Start(t, exec.Command(bin, "-d", htdocs, "--no-quic-dump", "--no-http-dump",
		"127.0.0.1", strconv.Itoa(port), keyFile, certFile))
	// Ready once it completes a handshake: dial until then.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		c, err := h3.Dial(ctx, s.addr, &h3.Config{TLSClientConfig: clientTLS(t)})
		cancel()
		if err == nil {
			// Forget the probe: once its CONNECTION_CLOSE is in the log, the log is
			// the tests' own.
			c.Layer().Abort()
			s.waitLog(t, ngRxClose)
			s.proc.ResetOutput()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ngtcp2 did not answer: %v\n%s", err, s.tail(2000))
		}
	}
	return s
}

func (s *ngtcp2) tail(n int) string {
	b := s.proc.Output()
	if len(b) > n {
		b = "…" + b[len(b)-n:]
	}
	return b
}

// ngtcp2's debug log prints a received frame as, e.g.,
//
//	I00000024 0x11f1… frm rx 9 1RTT CONNECTION_CLOSE(0x1d) error_code=(unknown)(0x100) frame_type=0 reason_len=0 reason=[]
//	I00000024 0x11f1… frm rx 7 1RTT STOP_SENDING(0x05) id=0x0 app_error_code=(unknown)(0x10c)
//
// (0x1d is the application kind of CONNECTION_CLOSE); the code may be printed with a name
// before it, or bare.
var (
	ngRxClose       = regexp.MustCompile(`frm rx \d+ \S+ CONNECTION_CLOSE\((0x1[cd])\) error_code=\S*?(0x[0-9a-f]+)`)
	ngRxStopSending = regexp.MustCompile(`frm rx \d+ \S+ STOP_SENDING\(0x05\) id=0x0 app_error_code=\S*?(0x[0-9a-f]+)`)
)

// waitLog waits up to 5 seconds for re to match the log, and returns its submatches.
func (s *ngtcp2) waitLog(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	out, ok := s.proc.WaitOutput(re, 5*time.Second)
	if !ok {
		t.Fatalf("ngtcp2's log shows no match of %q", re)
	}
	return re.FindStringSubmatch(out)
}

// TestNgtcp2 checks the contract against an independent peer: the CONNECTION_CLOSE code
// of a graceful close and of an abort, and the stream abort of a body closed early, as
// ngtcp2's log shows them received.
func TestNgtcp2(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *ngtcp2, c *h3.Conn)
	}{
		{"graceful", func(t *testing.T, s *ngtcp2, c *h3.Conn) {
			ngGet(t, c, s, "/index.html")
			rec := graceful(c, 2*time.Second)
			if rec.Err != nil {
				t.Errorf("record: outcome %v, err %v", rec.Outcome, rec.Err)
			}
			m := s.waitLog(t, ngRxClose)
			if m[1] != "0x1d" || m[2] != "0x100" {
				t.Errorf("ngtcp2 received CONNECTION_CLOSE(%s) error_code=%s, want (0x1d) error_code=0x100", m[1], m[2])
			}
			wantCloseCode(t, c, h3.CodeNoError, true)
			if c.ClosingPeriod() < 3*time.Millisecond {
				t.Errorf("ClosingPeriod() = %v, want at least 3×PTO", c.ClosingPeriod())
			}
		}},
		{"abort", func(t *testing.T, s *ngtcp2, c *h3.Conn) {
			ngGet(t, c, s, "/index.html")
			abort(c)
			m := s.waitLog(t, ngRxClose)
			if m[1] != "0x1d" || m[2] != "0x10c" {
				t.Errorf("ngtcp2 received CONNECTION_CLOSE(%s) error_code=%s, want (0x1d) error_code=0x10c", m[1], m[2])
			}
		}},
		{"body closed early", func(t *testing.T, s *ngtcp2, c *h3.Conn) {
			req, _ := http.NewRequest("GET", "https://"+s.addr+"/big", nil)
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if m := s.waitLog(t, ngRxStopSending); m[1] != "0x10c" {
				t.Errorf("ngtcp2 received STOP_SENDING app_error_code=%s, want 0x10c", m[1])
			}
			// The connection lives on.
			ngGet(t, c, s, "/index.html")
			graceful(c, 2*time.Second)
			if m := s.waitLog(t, ngRxClose); m[2] != "0x100" {
				t.Errorf("ngtcp2 received CONNECTION_CLOSE error_code=%s, want 0x100", m[2])
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startNgtcp2(t)
			checkLeaks(t)
			c := dial(t, s.addr, nil)
			tt.run(t, s, c)
			abort(c) // a no-op if the test ended it
			if !portFree(c.LocalAddr()) {
				t.Error("the UDP socket is still bound after the teardown")
			}
		})
	}
}

func ngGet(t *testing.T, c *h3.Conn, s *ngtcp2, path string) {
	t.Helper()
	resp, body := get(t, c, "https://"+s.addr+path)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "hello from ngtcp2") {
		t.Fatalf("GET %s: %s %q", path, resp.Status, body)
	}
}
