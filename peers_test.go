package endwell_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// Helpers of the proof suite (issue 9): real peers we did not write (nginx, openssl
// s_server), run with testpeer, and what the kernel says of our sockets (file descriptors,
// TCP states).

// peerCert is the test certificate (testpeer's) in PEM files, and a client configuration's
// root pool that trusts it.
type peerCert struct {
	certFile, keyFile string
	pool              *x509.CertPool
	leaf              *x509.Certificate
}

// writePeerCert writes the test certificate, for 127.0.0.1 and localhost, into dir.
func writePeerCert(t testing.TB, dir string) peerCert {
	t.Helper()
	c := testpeer.TestCert(t)
	pc := peerCert{pool: c.Pool(), leaf: c.Leaf}
	pc.certFile, pc.keyFile = c.WriteFiles(t, dir)
	return pc
}

// nginx is an nginx child process with its own prefix directory, serving TLS HTTP/1.1 (or,
// with nginxOptions.HTTP2, HTTP/2 and HTTP/1.1 by ALPN) on 127.0.0.1:port:
//
//	/ok      200 "ok\n"
//	/large   a static file of largeSize bytes
type nginxPeer struct {
	dir  string
	addr string
	more []string // the other addresses it listens on (nginxOptions.Ports)
	// plain is the address it serves plain HTTP/1.1 on (nginxOptions.Plain), else "".
	plain string
	cert  peerCert
	proc  *testpeer.Proc
}

// nginxLargeSize is the size of /large: far over what a drain may discard.
const nginxLargeSize = 16 << 20

var nginxConf = template.Must(template.New("nginx.conf").Parse(`
{{if .Root}}user root;{{end}}
worker_processes {{if .Workers}}{{.Workers}}{{else}}1{{end}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log {{.LogLevel}};
{{if .Conns}}worker_rlimit_nofile {{.RLimit}};{{end}}
events { worker_connections {{if .Conns}}{{.Conns}}{{else}}256{{end}}; }
http {
	log_format endwell '$connection $connection_requests "$request" $status $bytes_sent';
	{{if .Conns}}access_log off;{{else}}access_log {{.Dir}}/access.log endwell;{{end}}
	{{if .Conns}}keepalive_requests 1000000;{{end}}
	client_body_temp_path {{.Dir}}/tmp/body;
	proxy_temp_path {{.Dir}}/tmp/proxy;
	fastcgi_temp_path {{.Dir}}/tmp/fastcgi;
	uwsgi_temp_path {{.Dir}}/tmp/uwsgi;
	scgi_temp_path {{.Dir}}/tmp/scgi;
	keepalive_timeout {{.KeepAlive}};
	server {
		listen {{.Addr}} ssl{{if .HTTP2}} http2{{end}};
		{{range .More}}listen {{.}} ssl;
		{{end}}{{if .Plain}}listen {{.Plain}};{{end}}
		ssl_certificate {{.Cert}};
		ssl_certificate_key {{.Key}};
		root {{.Dir}}/www;
		location = /ok { return 200 "ok\n"; }
		location = /large { }
	}
}
`))

// nginxOptions configures startNginxWith.
type nginxOptions struct {
	// KeepAlive is keepalive_timeout (nginx syntax: "1s", "75s"). Since nginx 1.19.7 it is
	// HTTP/2's idle timeout too (http2_idle_timeout is obsolete).
	KeepAlive string
	// HTTP2 adds http2 to the listen directive (nginx 1.22's syntax): ALPN offers h2.
	HTTP2 bool
	// Debug sets the error log's level to debug (nginx must be built --with-debug, as
	// Debian's is): nginx then logs every HTTP/2 frame it reads. Else the level is info.
	Debug bool
	// Conns, for benchmarks, sets worker_connections (256 if zero) and, when set, turns
	// the access log off and lifts keepalive_requests.
	Conns int
	// Ports, for benchmarks, is how many more loopback ports to listen on (see more).
	Ports int
	// Plain adds a loopback port that serves plain HTTP/1.1 (see plain).
	Plain bool
	// Workers, for benchmarks, is worker_processes (1 if zero).
	Workers int
}

// startNginx starts nginx, serving HTTP/1.1, with keepalive_timeout keepAlive (nginx syntax:
// "1s", "75s").
func startNginx(t testing.TB, keepAlive string) *nginxPeer {
	t.Helper()
	return startNginxWith(t, nginxOptions{KeepAlive: keepAlive})
}

// startNginxWith starts nginx configured by o.
func startNginxWith(t testing.TB, o nginxOptions) *nginxPeer {
	t.Helper()
	bin := testpeer.Need(t, "nginx", "nginx")
	dir := t.TempDir()
	for _, d := range []string{"www", "tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "large"), bytes.Repeat([]byte("x"), nginxLargeSize), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &nginxPeer{dir: dir, cert: writePeerCert(t, dir)}
	extra := 0
	if o.Plain {
		extra = 1
	}
	ports := testpeer.FreePorts(t, 1+o.Ports+extra)
	n.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	if o.Plain {
		n.plain = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[len(ports)-1]))
		ports = ports[:len(ports)-1]
	}
	for _, port := range ports[1:] {
		n.more = append(n.more, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	var conf bytes.Buffer
	level := "info"
	if o.Debug {
		level = "debug"
	}
	err := nginxConf.Execute(&conf, map[string]any{
		"Root": os.Geteuid() == 0, "Dir": dir, "Addr": n.addr, "KeepAlive": o.KeepAlive,
		"Cert": n.cert.certFile, "Key": n.cert.keyFile, "HTTP2": o.HTTP2, "LogLevel": level,
		"Conns": o.Conns, "RLimit": 2*o.Conns + 100, "More": n.more, "Plain": n.plain,
		"Workers": o.Workers,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	n.proc = testpeer.Start(t, exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"))
	// nginx writes its pid file once its listening socket is open: no probe connection,
	// which would show in its logs.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "nginx.pid")); err == nil {
			break
		}
		select {
		case <-n.proc.Exited():
			t.Fatalf("nginx exited: %s%s", n.proc.Output(), n.errorLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx: no pid file after 5s: %s%s", n.proc.Output(), n.errorLog())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// url returns the https URL of path on n.
func (n *nginxPeer) url(path string) string { return "https://" + n.addr + path }

func (n *nginxPeer) readLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, name))
	return string(b)
}

// errorLog returns nginx's error log.
func (n *nginxPeer) errorLog() string { return n.readLog("error.log") }

// accessLog returns nginx's access log: "$connection $connection_requests "$request" $status $bytes_sent".
func (n *nginxPeer) accessLog() string { return n.readLog("access.log") }

// errorLogSize returns the error log's size now: a mark for waitErrorLogFrom.
func (n *nginxPeer) errorLogSize() int64 {
	st, err := os.Stat(filepath.Join(n.dir, "error.log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// errorLogFrom returns the error log from offset on.
func (n *nginxPeer) errorLogFrom(offset int64) string {
	f, err := os.Open(filepath.Join(n.dir, "error.log"))
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<62))
	return string(b)
}

// waitErrorLog waits up to d for the error log to match re and returns the log.
func (n *nginxPeer) waitErrorLog(re *regexp.Regexp, d time.Duration) (string, bool) {
	return n.waitErrorLogFrom(re, d, 0)
}

// waitErrorLogFrom waits up to d for the error log from offset on to match re, and returns
// that part of the log. A debug log grows by megabytes: this reads only what is new.
func (n *nginxPeer) waitErrorLogFrom(re *regexp.Regexp, d time.Duration, offset int64) (string, bool) {
	deadline := time.Now().Add(d)
	for {
		l := n.errorLogFrom(offset)
		if re.MatchString(l) || time.Now().After(deadline) {
			return l, re.MatchString(l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAccessLines waits up to 5 seconds for n lines in the access log and returns them.
func (n *nginxPeer) waitAccessLines(t testing.TB, want int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := strings.TrimSpace(n.accessLog())
		var lines []string
		if l != "" {
			lines = strings.Split(l, "\n")
		}
		if len(lines) >= want {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx access log: got %d lines, want %d: %q", len(lines), want, l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TCP states in /proc/net/tcp, as the kernel numbers them.
const (
	sockEstablished = "01"
	sockFinWait1    = "04"
	sockFinWait2    = "05"
	sockTimeWait    = "06"
	sockClose       = "07"
	sockCloseWait   = "08"
	sockLastAck     = "09"
)

var peerTCPStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
	"05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
	"09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}

// peerSocket is one line of /proc/net/tcp or tcp6.
type peerSocket struct {
	local, remote string // "127.0.0.1:port"
	state         string // "01".."0B"
}

func (s peerSocket) String() string {
	return s.local + "->" + s.remote + " " + peerTCPStates[s.state]
}

// peerSockets lists the sockets in /proc/net/tcp and /proc/net/tcp6 (nil elsewhere).
func peerSockets() []peerSocket {
	var socks []peerSocket
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 4 {
				continue
			}
			socks = append(socks, peerSocket{local: peerProcAddr(fs[1]), remote: peerProcAddr(fs[2]), state: fs[3]})
		}
	}
	return socks
}

// peerProcAddr decodes /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func peerProcAddr(s string) string {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return s
	}
	port, _ := strconv.ParseUint(p, 16, 16)
	b, err := hex.DecodeString(h)
	if err != nil {
		return s
	}
	// The kernel prints the address as 32-bit words in host (little-endian) order.
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	ip := net.IP(b)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10))
}

// peerSocketsOf returns the sockets of conns, each "local->remote" as peerConnKey spells it. A
// local port may serve several remote addresses, so both ends are matched.
func peerSocketsOf(conns []string) []peerSocket {
	want := make(map[string]bool, len(conns))
	for _, c := range conns {
		want[c] = true
	}
	var out []peerSocket
	for _, s := range peerSockets() {
		if want[s.local+"->"+s.remote] {
			out = append(out, s)
		}
	}
	return out
}

// peerConnKey names a connection by both ends, as peerSocketsOf matches it.
func peerConnKey(c net.Conn) string { return c.LocalAddr().String() + "->" + c.RemoteAddr().String() }

// peerLingering returns the sockets of locals still in a state that a well-ended connection
// leaves quickly: CLOSE_WAIT (we never closed after the peer did), FIN_WAIT2 (we wait for a
// peer that never closes), and, when established is true, ESTABLISHED too.
func peerLingering(locals []string, established bool) []peerSocket {
	var out []peerSocket
	for _, s := range peerSocketsOf(locals) {
		switch s.state {
		case sockCloseWait, sockFinWait2:
			out = append(out, s)
		case sockEstablished:
			if established {
				out = append(out, s)
			}
		}
	}
	return out
}

// peerWaitNoLingering waits up to d for peerLingering(locals, established) to be empty; it fails
// the test if it is not.
func peerWaitNoLingering(t testing.TB, locals []string, established bool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l := peerLingering(locals, established)
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("sockets still peerLingering after %v: %v", d, l)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peerWatchPeerClose watches the sockets of conns (one connection, as peerConnKey names it)
// until they are gone or in TIME_WAIT, for up to d, waiting for the peer to close the
// connection: once the peer's FIN has arrived (the socket left ESTABLISHED), ours must be
// closed at once, so the socket may sit at most grace in CLOSE_WAIT or LAST_ACK. It fails
// the test otherwise, and returns the states seen and how long the socket took to go once
// it left ESTABLISHED.
func peerWatchPeerClose(t testing.TB, conns []string, d, grace time.Duration) (seen []string, gone time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var left time.Time
	for {
		socks := peerSocketsOf(conns)
		state := "gone"
		if len(socks) > 0 {
			state = peerTCPStates[socks[0].state]
		}
		if len(seen) == 0 || seen[len(seen)-1] != state {
			seen = append(seen, state)
		}
		if state != "ESTABLISHED" && left.IsZero() {
			left = time.Now()
		}
		if state == "gone" || state == "TIME_WAIT" {
			return seen, time.Since(left)
		}
		if !left.IsZero() && time.Since(left) > grace {
			t.Fatalf("our socket stayed %s for over %v after the peer closed it (states: %v)", state, grace, seen)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the peer did not close the connection within %v (states: %v)", d, seen)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// peerConns records both ends of every connection a transport dials, for the
// /proc/net/tcp checks. Use its dial as the Transport's DialContext.
type peerConns struct {
	mu    sync.Mutex // guards addrs
	addrs []string
}

func (l *peerConns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		l.mu.Lock()
		l.addrs = append(l.addrs, peerConnKey(c))
		l.mu.Unlock()
	}
	return c, err
}

func (l *peerConns) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.addrs...)
}

// sServer is `openssl s_server` serving one TLS connection on 127.0.0.1, in its default
// mode: what the client sends is printed, what the test writes to stdin is sent. So the
// test plays the HTTP server through it, and s_server reports how the client ended the
// TLS session: "DONE" when it read the client's close_notify, "ERROR" and the OpenSSL
// error (unexpected eof while reading, connection reset) when the client hung up without.
type sServer struct {
	addr string
	cert peerCert
	proc *testpeer.Proc // its Stdin is what s_server sends
}

var sServerAccept = regexp.MustCompile(`(?m)^ACCEPT`)

// startSServer starts s_server for one connection.
func startSServer(t testing.TB) *sServer {
	t.Helper()
	bin := testpeer.Need(t, "openssl", "openssl")
	dir := t.TempDir()
	s := &sServer{cert: writePeerCert(t, dir)}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testpeer.FreePorts(t, 1)[0]))
	s.proc = testpeer.Start(t, exec.Command(bin, "s_server", "-accept", s.addr, "-naccept", "1",
		"-cert", s.cert.certFile, "-key", s.cert.keyFile))
	if out, ok := s.proc.WaitOutput(sServerAccept, 5*time.Second); !ok {
		t.Fatalf("openssl s_server: no ACCEPT within 5s: %s", out)
	}
	return s
}

// url returns the https URL of path on s.
func (s *sServer) url(path string) string { return "https://" + s.addr + path }

// answer waits for the request head (an empty line) and sends resp.
func (s *sServer) answer(resp string) error {
	if out, ok := s.proc.WaitOutput(regexp.MustCompile(`\r\n\r\n`), 5*time.Second); !ok {
		return fmt.Errorf("openssl s_server: no request within 5s: %s", out)
	}
	_, err := io.WriteString(s.proc.Stdin, resp)
	return err
}

// ending waits up to 5 seconds for s_server to report the end of the connection and
// returns the lines that tell how: DONE, ERROR and OpenSSL's error lines.
func (s *sServer) ending() (lines []string, done, failed bool) {
	out, _ := s.proc.WaitOutput(regexp.MustCompile(`CONNECTION CLOSED`), 5*time.Second)
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "DONE":
			done = true
		case l == "ERROR":
			failed = true
		case strings.Contains(l, ":error:"):
		default:
			continue
		}
		lines = append(lines, l)
	}
	return lines, done, failed
}

// localAddrs and lingering are the names idle_loopback_test.go uses for peerConns and
// peerLingering.
type localAddrs = peerConns

func lingering(conns []string, established bool) []peerSocket {
	return peerLingering(conns, established)
}
