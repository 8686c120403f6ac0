package endwell_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// childWait bounds the wait for a child process of this test binary to say it is ready, or
// to answer.
const childWait = 2 * time.Minute

var (
	childReady = regexp.MustCompile(`(?m)^ready$`)
	childAddr  = regexp.MustCompile(`(?m)^127\.0\.0\.\d+:\d+$`)
)

// spawnServers starts fast HTTP/1.1 servers in a child process (this test binary, re-run),
// one per loopback address 127.0.0.2, 127.0.0.3, ...: with thousands of connections, both
// ends in one process would exceed its file descriptor limit. With TLS they serve this
// process's certificate (benchTLS). It returns the servers' "host:port" addresses. The
// child exits when the test ends.
func spawnServers(tb testing.TB, n int, withTLS bool) []string {
	tb.Helper()
	env := []string{fmt.Sprintf("ENDWELL_SERVER_CHILD=%d,%v", n, withTLS)}
	if withTLS {
		dir := tb.TempDir()
		testpeer.TestCert(tb).WriteFiles(tb, dir)
		env = append(env, "ENDWELL_SERVER_CHILD_CERT="+dir)
	}
	p := startTestChild(tb, "TestServerChild", env...)
	out, ok := p.WaitOutput(childReady, childWait)
	if !ok {
		tb.Fatalf("server child ended before it was ready: %s", out)
	}
	return childAddr.FindAllString(out, -1)
}

// startTestChild runs this test binary again as a child process that runs only the test
// named test, with env added to its environment. It ends with the test: see testpeer.Start.
func startTestChild(tb testing.TB, test string, env ...string) *testpeer.Proc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	return testpeer.Start(tb, cmd)
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
		dir := os.Getenv("ENDWELL_SERVER_CHILD_CERT")
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		srvTLS = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	}
	for i := range n {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 2+i))
		if err != nil {
			t.Fatal(err)
		}
		serveFast(t, ln, srvTLS)
		fmt.Println(ln.Addr().String())
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin) // until the parent closes it, or dies
}
