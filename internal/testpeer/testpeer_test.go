package testpeer_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
	"go.uber.org/goleak"
)

func TestCertNames(t *testing.T) {
	c := testpeer.TestCert(t)
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if again := testpeer.TestCert(t); again != c {
		t.Errorf("TestCert: got a second certificate, want the process's one")
	}
	certFile, keyFile := c.WriteFiles(t, t.TempDir())
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("the PEM files: %v", err)
	}
}

func TestServe(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c := testpeer.TestCert(t)
	handled := make(chan int, 2)
	s := testpeer.Serve(t, c.ServerConfig("h2"), func(n int, nc net.Conn) {
		handled <- n
		io.WriteString(nc, "hello\n")
		io.Copy(io.Discard, nc) // until the client goes, or Close
	})
	for want := 1; want <= 2; want++ {
		cfg := c.ClientConfig()
		cfg.NextProtos = []string{"h2"}
		tc, err := tls.Dial("tcp", s.Addr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if got, _ := bufio.NewReader(tc).ReadString('\n'); got != "hello\n" {
			t.Errorf("got %q, want hello", got)
		}
		if got := tc.ConnectionState().NegotiatedProtocol; got != "h2" {
			t.Errorf("ALPN: got %q, want h2", got)
		}
		if got := <-handled; got != want {
			t.Errorf("accept number: got %d, want %d", got, want)
		}
	}
	if got := s.Accepts(); got != 2 {
		t.Errorf("Accepts: got %d, want 2", got)
	}
	// Close closes the connections the clients still hold, and waits for their handlers.
	s.Close()
	s.Close()
}

func TestProc(t *testing.T) {
	sh := testpeer.Need(t, "sh", "dash")
	p := testpeer.Start(t, exec.Command(sh, "-c", `echo ready; read line; echo "got $line" >&2; exec sleep 60`))
	if out, ok := p.WaitOutput(regexp.MustCompile(`ready\n`), 5*time.Second); !ok {
		t.Fatalf("no ready: %q", out)
	}
	io.WriteString(p.Stdin, "go\n")
	if out, ok := p.WaitOutput(regexp.MustCompile(`got go\n`), 5*time.Second); !ok {
		t.Fatalf("stderr not captured: %q", out)
	}
	p.ResetOutput()
	if out, ok := p.WaitOutput(regexp.MustCompile(`ready`), 10*time.Millisecond); ok {
		t.Errorf("after ResetOutput: got %q, want nothing", out)
	}
	select {
	case <-p.Exited():
		t.Fatalf("exited early: %v", p.Err())
	default:
	}
}

func TestProcExit(t *testing.T) {
	sh := testpeer.Need(t, "sh", "dash")
	p := testpeer.Start(t, exec.Command(sh, "-c", "exit 3"))
	if out, ok := p.WaitOutput(regexp.MustCompile(`never`), 5*time.Second); ok {
		t.Errorf("got %q", out)
	}
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err: got %v, want exit status 3", err)
	}
}

// fakeTB records what Need does with a missing program. Like testing's, its Skip and Fatalf
// end the goroutine.
type fakeTB struct {
	testing.TB
	skipped, fatal bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skip(...any)           { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true; runtime.Goexit() }

func TestNeed(t *testing.T) {
	for _, tc := range []struct {
		name, env         string
		wantSkip, wantErr bool
	}{
		{"skips", "", true, false},
		{"fails under require", "require", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testpeer.PeersEnv, tc.env)
			f := &fakeTB{TB: t}
			done := make(chan struct{})
			// Need's goroutine: Skip and Fatalf end it.
			go func() {
				defer close(done)
				testpeer.Need(f, "endwell-no-such-program", "nothing")
			}()
			<-done
			if f.skipped != tc.wantSkip || f.fatal != tc.wantErr {
				t.Errorf("skipped %v, failed %v; want %v, %v", f.skipped, f.fatal, tc.wantSkip, tc.wantErr)
			}
		})
	}
}
