package endwell_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// spawnServers starts fast HTTP/1.1 servers in a child process (this test binary, re-run),
// one per loopback address 127.0.0.2, 127.0.0.3, ...: with thousands of connections, both
// ends in one process would exceed its file descriptor limit. It returns the servers'
// "host:port" addresses. The child exits when the test ends (its stdin closes).
func spawnServers(tb testing.TB, n int, withTLS bool) []string {
	tb.Helper()
	_, sc := startTestChild(tb, "TestServerChild", fmt.Sprintf("ENDWELL_SERVER_CHILD=%d,%v", n, withTLS))
	var addrs []string
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			go func() {
				for sc.Scan() { // the rest of its output, if any, until it ends
				}
			}()
			return addrs
		}
		addrs = append(addrs, line)
	}
	tb.Fatalf("server child ended before it was ready: %v", sc.Err())
	return nil
}

// startTestChild runs this test binary again as a child process that runs only the test
// named test, with env added to its environment, and returns its stdin and its stdout, by
// lines. Its stderr is ours. It ends with the test: its stdin is closed then, and it is
// killed if it has not exited 10 seconds later.
func startTestChild(tb testing.TB, test string, env ...string) (io.WriteCloser, *bufio.Scanner) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return stdin, bufio.NewScanner(stdout)
}

// TestServerChild is the child process of spawnServers; it does nothing in a normal run.
func TestServerChild(t *testing.T) {
	spec := os.Getenv("ENDWELL_SERVER_CHILD")
	if spec == "" {
		t.Skip("only run as spawnServers' child process")
	}
	var n int
	var withTLS bool
	fmt.Sscanf(strings.Replace(spec, ",", " ", 1), "%d %t", &n, &withTLS)
	var srvTLS *tls.Config
	if withTLS {
		srvTLS, _ = benchTLS(t)
	}
	for i := range n {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+i))
		if err != nil {
			t.Fatal(err)
		}
		s := serveFast(ln, srvTLS)
		defer s.close()
		fmt.Println(ln.Addr().String())
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the parent closes it, or dies
}
