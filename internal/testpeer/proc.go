package testpeer

import (
	"bytes"
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
	"syscall"
	"time"
)

// PeersEnv is the peer policy's variable: a test that needs a program that is not installed
// skips, naming the Debian package to install, unless ENDWELL_PEERS=require (CI), which makes
// it fail.
const PeersEnv = "ENDWELL_PEERS"

// Need returns the path of the program name, from the Debian package pkg, or skips the test
// (fails it, under ENDWELL_PEERS=require) when it is not installed. It looks in PATH, then in
// the sbin directories, which are often missing from a user's PATH (nginx lives there).
func Need(t TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not installed: apt-get install %s", name, pkg)
	if os.Getenv(PeersEnv) == "require" {
		t.Fatalf("%s, and %s=require", msg, PeersEnv)
	}
	t.Skip(msg)
	return ""
}

// How a process is stopped at the end of its test: SIGTERM, then SIGKILL after stopGrace,
// then at most stopGrace more for it to be gone (its output pipes closed: see WaitDelay).
const (
	stopGrace = 3 * time.Second
	waitDelay = 2 * time.Second
)

// Proc is a child process started by [Start]: a peer we did not write (nginx, nghttpd,
// openssl s_server, python3, gtlsserver), or this test binary run again. What it writes to
// its standard output and error is captured together, for the test to wait on and for
// failure messages.
type Proc struct {
	// Cmd is the command, started.
	Cmd *exec.Cmd
	// Stdin is the process's standard input, open until it is stopped; nil if the caller
	// set Cmd.Stdin.
	Stdin io.WriteCloser

	exited chan struct{} // closed once the process has exited and its output is read
	err    error         // what Cmd.Wait returned; set before exited is closed

	mu      sync.Mutex // guards out and changed
	out     bytes.Buffer
	changed chan struct{} // closed, and replaced, when out grows
}

// Start starts cmd with its standard output and error captured (it sets them) and, unless
// cmd.Stdin is set, a pipe as its standard input ([Proc.Stdin]). The process is stopped when
// the test ends: its standard input closed, SIGTERM, SIGKILL 3 seconds later; the test fails
// if it is not gone 3 seconds after that. Any child it left behind (an nginx worker whose
// master was killed) is killed too, and if the test failed its output is logged.
func Start(t TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, exited: make(chan struct{}), changed: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	if cmd.Stdin == nil {
		w, err := cmd.StdinPipe()
		if err != nil {
			t.Fatalf("%s: %v", cmd.Path, err)
		}
		p.Stdin = w
	}
	if cmd.WaitDelay == 0 {
		// Bounds Wait once the process has exited: a child of its own may hold its output.
		cmd.WaitDelay = waitDelay
	}
	if err := cmd.Start(); err != nil {
		if p.Stdin != nil {
			p.Stdin.Close()
		}
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	// Waits for the process, so that exited says when it is gone; it ends when the process
	// does, at the latest when the test's cleanup kills it.
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// Write captures the process's output.
func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.changed)
	p.changed = make(chan struct{})
	return p.out.Write(b)
}

// Output returns what the process wrote so far, standard output and error together.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// ResetOutput forgets the output so far: [Proc.Output] and [Proc.WaitOutput] start from here.
func (p *Proc) ResetOutput() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Reset()
}

// Exited is closed once the process has exited and its output is read.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err returns what waiting for the process returned (nil if it exited with status 0). It is
// valid once [Proc.Exited] is closed.
func (p *Proc) Err() error {
	<-p.exited
	return p.err
}

// WaitOutput waits up to d for the output to match re, and returns the output and whether it
// matched. If the process exits first, it returns at once.
func (p *Proc) WaitOutput(re *regexp.Regexp, d time.Duration) (string, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		p.mu.Lock()
		out, changed := p.out.String(), p.changed
		p.mu.Unlock()
		if re.MatchString(out) {
			return out, true
		}
		select {
		case <-changed:
		case <-p.exited:
			out = p.Output()
			return out, re.MatchString(out)
		case <-timer.C:
			return out, false
		}
	}
}

// WaitListening waits up to d for addr to accept TCP connections, and fails the test if it
// does not, or if the process exits first.
func (p *Proc) WaitListening(t TB, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %s", p.Cmd.Path, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s: %v; output: %s", p.Cmd.Path, addr, err, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends the process, bounded (see Start).
func (p *Proc) stop(t TB) {
	children := childPIDs(p.Cmd.Process.Pid)
	if p.Stdin != nil {
		p.Stdin.Close()
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		p.Cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(stopGrace):
			t.Errorf("%s did not exit within %v", p.Cmd.Path, 2*stopGrace)
		}
	}
	for _, pid := range children {
		if c, err := os.FindProcess(pid); err == nil && c.Signal(syscall.Signal(0)) == nil {
			t.Logf("%s left child %d behind: killing it", p.Cmd.Path, pid)
			c.Kill()
		}
	}
	if t.Failed() {
		out := p.Output()
		if len(out) > 4000 {
			out = "…" + out[len(out)-4000:]
		}
		t.Logf("%s's output:\n%s", p.Cmd.Path, out)
	}
}

// childPIDs lists the processes whose parent is pid (Linux; nil elsewhere).
func childPIDs(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// FreePorts returns n distinct loopback TCP ports that were free a moment ago: each is held
// until all are chosen, so that none comes twice. For a child process told where to listen.
func FreePorts(t TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testpeer: %v", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
