package shutdown

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// peerLife bounds everything a test peer does: its socket's deadline.
const peerLife = 5 * time.Second

// peerRaw is the test peer's raw connection: it remembers whether a read met the client's
// FIN or RST, and counts the bytes read. Only the peer's goroutine reads it.
type peerRaw struct {
	net.Conn
	eof, rst bool
	n        int64
}

func (c *peerRaw) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	switch {
	case err == io.EOF:
		c.eof = true
	case errors.Is(err, syscall.ECONNRESET):
		c.rst = true
	}
	return n, err
}

// peerReport is what the test peer saw the client put on the wire.
type peerReport struct {
	// CloseNotify says the client's close_notify arrived.
	CloseNotify bool
	// AppBytes counts the application bytes read before it.
	AppBytes int64
	// End is how the client's TCP ended: "fin", "rst", "open" (the peer stopped reading
	// first) or another read error.
	End string
	// RawAfter counts the raw bytes read from the client after the peer's own goodbye,
	// or after its close_notify arrived.
	RawAfter int64
}

// testPeer is the server side of a loopback connection, scripted by a test.
type testPeer struct {
	t   *testing.T
	tcp *net.TCPConn
	raw *peerRaw
	tls *tls.Conn // nil in plain TCP mode
	rep peerReport
	// release is closed by the test once the client's teardown is over.
	release <-chan struct{}
}

// hold keeps the connection as it is until the test releases the peer (or peerLife ends).
func (p *testPeer) hold() {
	select {
	case <-p.release:
	case <-time.After(peerLife):
		p.t.Errorf("peer: never released")
	}
}

// readUntilClose reads the TLS stream until the client's close_notify, or until its TCP
// ends without one.
func (p *testPeer) readUntilClose() {
	buf := make([]byte, 32<<10)
	for {
		n, err := p.tls.Read(buf)
		p.rep.AppBytes += int64(n)
		if err == nil {
			continue
		}
		switch {
		case err == io.EOF && !p.raw.eof:
			p.rep.CloseNotify = true
		default:
			p.rep.End = p.endOf(err)
		}
		return
	}
}

// watchEnd reads the raw socket until the client's FIN, RST or the peer's deadline,
// counting what arrives. It does nothing if the end was seen already.
func (p *testPeer) watchEnd() {
	if p.rep.End != "" {
		return
	}
	before := p.raw.n
	_, err := io.Copy(io.Discard, p.raw)
	if err == nil {
		err = io.EOF
	}
	p.rep.RawAfter += p.raw.n - before
	p.rep.End = p.endOf(err)
}

func (p *testPeer) endOf(err error) string {
	switch {
	case p.raw.eof:
		return "fin"
	case p.raw.rst:
		return "rst"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "open"
	}
	return err.Error()
}

// closeNotify sends the peer's close_notify.
func (p *testPeer) closeNotify() {
	if err := p.tls.CloseWrite(); err != nil {
		p.t.Errorf("peer: close_notify: %v", err)
	}
}

// fin sends the peer's FIN.
func (p *testPeer) fin() {
	if err := p.tcp.CloseWrite(); err != nil {
		p.t.Errorf("peer: FIN: %v", err)
	}
}

// reset closes the socket with an RST.
func (p *testPeer) reset() {
	p.tcp.SetLinger(0)
	p.tcp.Close()
}

// loopback is a connected pair on 127.0.0.1: the client side as endwell holds it, and
// the test peer running its script in a goroutine.
type loopback struct {
	raw    *Conn // the client's watched TCP connection
	tcp    *net.TCPConn
	tls    *tls.Conn // nil in plain TCP mode
	report chan peerReport
	// releasePeer lets a peer that holds the connection go on.
	releasePeer func()
}

type loopbackOptions struct {
	plain bool // no TLS
	// small gives both sides tiny socket buffers, so that the client's writes soon block
	// on a peer that does not read.
	small bool
}

// newLoopback connects a client to a test peer running script after the handshake. The
// peer's socket is closed once script returns; its report is read with wantReport.
func newLoopback(t *testing.T, opts loopbackOptions, script func(p *testPeer)) *loopback {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lb := &loopback{report: make(chan peerReport, 1)}
	release := make(chan struct{})
	lb.releasePeer = sync.OnceFunc(func() { close(release) })
	peerDone := make(chan struct{})
	ready := make(chan struct{})
	// Closes the client's socket and lets the peer finish, so that it never outlives the test.
	t.Cleanup(func() {
		lb.releasePeer()
		if lb.tcp != nil {
			lb.tcp.Close()
		}
		select {
		case <-peerDone:
		case <-time.After(peerLife + time.Second):
			t.Errorf("peer: still running")
		}
	})
	accepted := make(chan error, 1)
	// The peer's goroutine: accepts one connection, runs the script, reports, closes. Every
	// read and write of its socket ends by peerLife at the latest.
	go func() {
		defer close(peerDone)
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		tcp := c.(*net.TCPConn)
		defer tcp.Close()
		tcp.SetDeadline(time.Now().Add(peerLife))
		if opts.small {
			tcp.SetReadBuffer(4 << 10)
			tcp.SetWriteBuffer(4 << 10)
		}
		p := &testPeer{t: t, tcp: tcp, raw: &peerRaw{Conn: tcp}, release: release}
		if !opts.plain {
			p.tls = tls.Server(p.raw, testServerConfig(t))
			if err := p.tls.Handshake(); err != nil {
				accepted <- err
				return
			}
		}
		accepted <- nil
		// Wait for the client's dial to complete: a script that resets at once could
		// otherwise fail the dial.
		select {
		case <-ready:
		case <-release:
			select {
			case <-ready: // the test may have released the peer already
			default:
				return // newLoopback failed
			}
		}
		script(p)
		lb.report <- p.rep
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), peerLife)
	if err != nil {
		t.Fatal(err)
	}
	lb.tcp = c.(*net.TCPConn)
	if opts.small {
		lb.tcp.SetReadBuffer(4 << 10)
		lb.tcp.SetWriteBuffer(4 << 10)
	}
	lb.raw = Watch(lb.tcp)
	if !opts.plain {
		lb.tls = tls.Client(lb.raw, testClientConfig(t))
		lb.tcp.SetDeadline(time.Now().Add(peerLife))
		if err := lb.tls.Handshake(); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		lb.tcp.SetDeadline(time.Time{})
	}
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("peer: %v", err)
		}
	case <-time.After(peerLife):
		t.Fatal("peer: no handshake")
	}
	close(ready)
	return lb
}

// job is the connection's stack: TLS over TCP, or TCP alone.
func (lb *loopback) job(mode Mode, budget time.Duration) Job {
	tcp := &TCP{Conn: lb.raw}
	if lb.tls == nil {
		return Job{Layers: []Layer{tcp}, Mode: mode, Budget: budget}
	}
	tcp.Drain = lb.tls
	return Job{Layers: []Layer{&TLS{Conn: lb.tls, Raw: lb.raw}, tcp}, Mode: mode, Budget: budget}
}

// wantReport waits for the peer's report, within peerLife and a second.
func (lb *loopback) wantReport(t *testing.T) peerReport {
	t.Helper()
	select {
	case r := <-lb.report:
		lb.releasePeer()
		return r
	case <-time.After(peerLife + time.Second):
		t.Fatal("peer: no report")
	}
	return peerReport{}
}

// countFDs returns how many file descriptors the process has open, or -1 where that
// cannot be told.
func countFDs(t *testing.T) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return -1
	}
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(es)
}

// checkFDs fails the test if it ends with more file descriptors open than it began with.
// Linux only. Call it first, before the test opens anything.
func checkFDs(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Log("file descriptors not counted: Linux only")
		return
	}
	// Warm up the network poller and the resolver of addresses, which open descriptors
	// once per process and keep them.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	before := countFDs(t)
	t.Cleanup(func() {
		// Closing is synchronous, but give the peers' goroutines a moment to return.
		var got int
		for range 100 {
			if got = countFDs(t); got <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("open file descriptors: got %v, want %v", got, before)
	})
}

// needPeek skips the test where Conn.PeerClosed cannot look at the receive queue.
func needPeek(t *testing.T) {
	t.Helper()
	switch runtime.GOOS {
	case "windows", "plan9", "js", "wasip1":
		t.Skipf("Conn.PeerClosed cannot peek on %s", runtime.GOOS)
	}
}
