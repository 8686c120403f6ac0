package shutdown

import (
	"crypto/tls"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// opensslServer is one `openssl s_server` serving one connection on 127.0.0.1. Its
// standard input is kept open until the test ends: s_server takes EOF on its stdin for a
// reason to close.
type opensslServer struct {
	addr string
	proc *testpeer.Proc
}

func (s *opensslServer) output() string { return s.proc.Output() }

var acceptLine = regexp.MustCompile(`ACCEPT (127\.0\.0\.1:\d+)`)

// startOpenSSL starts `openssl s_server` on a free loopback port with the test
// certificate, for one connection. It skips the test if openssl is not installed, unless
// ENDWELL_PEERS=require.
func startOpenSSL(t *testing.T) *opensslServer {
	t.Helper()
	bin := testpeer.Need(t, "openssl", "openssl")
	certFile, keyFile := writeTestCert(t)
	s := &opensslServer{proc: testpeer.Start(t, exec.Command(bin, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-cert", certFile, "-key", keyFile))}
	out, ok := s.proc.WaitOutput(acceptLine, 5*time.Second)
	if !ok {
		select {
		case <-s.proc.Exited():
			t.Fatalf("openssl s_server exited: %s", out)
		default:
			t.Fatalf("openssl s_server: no ACCEPT line after 5s: %s", out)
		}
	}
	s.addr = acceptLine.FindStringSubmatch(out)[1]
	return s
}

// waitOutput waits up to 5 s for s_server to print want, and returns its output so far.
func (s *opensslServer) waitOutput(want string) (string, bool) {
	return s.proc.WaitOutput(regexp.MustCompile(regexp.QuoteMeta(want)), 5*time.Second)
}

// TestOpenSSLPeer tears down connections to `openssl s_server`: it prints DONE when it reads
// our close_notify, and an error or a bare shutdown, without DONE, when we abort.
func TestOpenSSLPeer(t *testing.T) {
	checkFDs(t)
	tests := []struct {
		name     string
		mode     Mode
		wantDone bool
	}{
		{"graceful: close_notify reaches openssl", Graceful, true},
		{"abort: no close_notify", Abort, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startOpenSSL(t)
			c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw := Watch(c)
			tc := tls.Client(raw, testClientConfig(t))
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake: %v; openssl said: %s", err, s.output())
			}
			// Some bytes for s_server to print, so that we know it is reading.
			if _, err := tc.Write([]byte("hello\n")); err != nil {
				t.Fatal(err)
			}
			if _, ok := s.waitOutput("hello"); !ok {
				t.Fatalf("openssl never printed our bytes: %s", s.output())
			}
			c.SetDeadline(time.Time{})
			start := time.Now()
			r := Run(t.Context(), Job{
				Layers: []Layer{&TLS{Conn: tc, Raw: raw}, &TCP{Conn: raw, Drain: tc}},
				Mode:   tt.mode,
				Budget: time.Second,
			})
			elapsed := time.Since(start)
			out, closed := s.waitOutput("CONNECTION CLOSED")
			t.Logf("record: %v, err %v, events %v, took %v; openssl said: %q", r.Outcome, r.Err, steps(r), elapsed, closingLines(out))
			if !closed {
				t.Errorf("openssl never closed the connection")
			}
			if got := strings.Contains(out, "DONE"); got != tt.wantDone {
				t.Errorf("openssl printed DONE: got %v, want %v", got, tt.wantDone)
			}
			if r.CloseNotifySent != tt.wantDone {
				t.Errorf("close_notify sent: got %v, want %v", r.CloseNotifySent, tt.wantDone)
			}
			switch tt.mode {
			case Graceful:
				// s_server closes after our close_notify; whether it answers with its own
				// depends on its version: Clean or PeerSilent, promptly.
				if r.Outcome != Clean && r.Outcome != PeerSilent {
					t.Errorf("outcome: got %v, want %v or %v", r.Outcome, Clean, PeerSilent)
				}
				if !r.FINReceived {
					t.Errorf("FIN received: got false, want true")
				}
				if elapsed >= time.Second {
					t.Errorf("elapsed: got %v, want less than the budget", elapsed)
				}
			case Abort:
				if !strings.Contains(out, "ERROR") && !strings.Contains(out, "shutting down SSL") {
					t.Errorf("openssl: got %q, want ERROR or its shutdown message", out)
				}
				if r.Outcome != Aborted {
					t.Errorf("outcome: got %v, want %v", r.Outcome, Aborted)
				}
			}
		})
	}
}

// closingLines returns the lines of s_server's output that tell how the connection ended.
func closingLines(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		for _, w := range []string{"DONE", "ERROR", "error", "shutting down", "CONNECTION CLOSED"} {
			if strings.Contains(line, w) {
				lines = append(lines, strings.TrimSpace(line))
				break
			}
		}
	}
	return lines
}
