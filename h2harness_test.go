package endwell

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
	"github.com/endwell/endwell/shutdown"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 tests' harness: a TLS certificate, a frame-level HTTP/2 server that logs every
// frame it receives and how the client ended each connection, and leak checks.

// h2Wait bounds every wait of the HTTP/2 tests.
const h2Wait = 5 * time.Second

// h2Cert is the test certificate (testpeer's, for 127.0.0.1, ::1 and localhost) as the
// HTTP/2 tests use it: a server configuration offering h2, and a client's that trusts it.
type h2Cert struct {
	server, client *tls.Config
	cert           *testpeer.Cert
}

func h2TestCert(t testing.TB) *h2Cert {
	t.Helper()
	c := testpeer.TestCert(t)
	return &h2Cert{server: c.ServerConfig("h2"), client: c.ClientConfig(), cert: c}
}

// writeFiles writes the certificate and key as PEM files into dir.
func (c *h2Cert) writeFiles(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	return c.cert.WriteFiles(t, dir)
}

// h2CheckLeaks fails the test, once it and the cleanups registered after this call are
// over, if a goroutine started during the test is left or more file descriptors are open.
// Call it first.
func h2CheckLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	fds := h2CountFDs()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("leaked goroutines: %v", err)
		}
		if fds < 0 {
			return
		}
		deadline := time.Now().Add(h2Wait)
		for h2CountFDs() > fds {
			if time.Now().After(deadline) {
				t.Errorf("open file descriptors: got %d, want at most %d", h2CountFDs(), fds)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func h2CountFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// h2Records collects a transport's teardown records.
type h2Records struct{ ch chan *shutdown.Record }

// recordTeardowns makes tr send its teardown records to the result.
func recordTeardowns(tr *Transport) *h2Records {
	r := &h2Records{ch: make(chan *shutdown.Record, 64)}
	tr.onTeardown = func(rec *shutdown.Record) { r.ch <- rec }
	return r
}

// next waits for the next record.
func (r *h2Records) next(t *testing.T) *shutdown.Record {
	t.Helper()
	select {
	case rec := <-r.ch:
		return rec
	case <-time.After(h2Wait):
		t.Fatalf("no teardown record within %v", h2Wait)
		return nil
	}
}

// none checks that no record arrives within d.
func (r *h2Records) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case rec := <-r.ch:
		t.Fatalf("unexpected teardown: %s %s %s (err %v)", rec.Mode, rec.Reason, rec.Outcome, rec.Err)
	case <-time.After(d):
	}
}

// h2Frame is what the frame server logs of a frame it received.
type h2Frame struct {
	Type     http2.FrameType
	StreamID uint32
	Flags    http2.Flags
	// LastStreamID and Code are a GOAWAY's; Code is also an RST_STREAM's.
	LastStreamID uint32
	Code         http2.ErrCode
	Path         string // a HEADERS frame's :path
}

// logFrame is what a frame server logs of f.
func logFrame(f http2.Frame) h2Frame {
	lf := h2Frame{Type: f.Header().Type, StreamID: f.Header().StreamID, Flags: f.Header().Flags}
	switch f := f.(type) {
	case *http2.GoAwayFrame:
		lf.LastStreamID, lf.Code = f.LastStreamID, f.ErrCode
	case *http2.RSTStreamFrame:
		lf.Code = f.ErrCode
	case *http2.MetaHeadersFrame:
		lf.Path = f.PseudoValue("path")
	}
	return lf
}

func (f h2Frame) String() string {
	switch f.Type {
	case http2.FrameGoAway:
		return fmt.Sprintf("GOAWAY last_stream_id=%d code=%v", f.LastStreamID, f.Code)
	case http2.FrameRSTStream:
		return fmt.Sprintf("RST_STREAM stream=%d code=%v", f.StreamID, f.Code)
	case http2.FrameHeaders:
		return fmt.Sprintf("HEADERS stream=%d %s", f.StreamID, f.Path)
	}
	return fmt.Sprintf("%v stream=%d flags=%v", f.Type, f.StreamID, f.Flags)
}

// h2FrameServer is a loopback HTTP/2 server over TLS built on x/net's Framer: it logs every
// frame it receives, and how each connection's client ended it (close_notify or not). By
// default it answers every request with 200 and the body "ok"; tests script the rest with
// onHeaders.
type h2FrameServer struct {
	srv *testpeer.Server
	cfg *tls.Config
	// onHeaders, if set, answers the request on stream id: it reports false to fall back on
	// the default answer. It runs in the connection's read loop.
	onHeaders func(sc *h2ServerConn, id uint32, path string) bool
	// noPingAck makes the server ignore PINGs.
	noPingAck bool
	// maxStreams, if not zero, is the MAX_CONCURRENT_STREAMS the server announces.
	maxStreams uint32
	// goAwayFirst is how many of the first connections send GOAWAY(0, NO_ERROR) right
	// after their SETTINGS, taking no stream (a stream opened all the same is refused).
	goAwayFirst int

	mu    sync.Mutex      // guards conns
	conns []*h2ServerConn // by accept order; nil where a handler has not yet set its own
}

// h2ServerConn is one connection of the frame server.
type h2ServerConn struct {
	n   int // 0 for the first connection, and so on
	raw *h2RawConn
	tc  *tls.Conn

	wmu  sync.Mutex // guards fr's writes and henc
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder

	mu     sync.Mutex // guards frames
	frames []h2Frame
	seen   chan struct{} // receives (without blocking) when a frame is logged

	done        chan struct{} // closed when the connection's read loop has ended
	endErr      error         // what ended it; read after done
	closeNotify bool          // the client's close_notify arrived; read after done
}

// h2RawConn is the TCP side of a server connection: it notes the client's FIN.
type h2RawConn struct {
	net.Conn
	eof atomic.Bool
}

func (c *h2RawConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

func newH2FrameServer(t *testing.T, setup func(*h2FrameServer)) *h2FrameServer {
	t.Helper()
	s := &h2FrameServer{cfg: h2TestCert(t).server}
	if setup != nil {
		setup(s)
	}
	// Each connection: its read loop ends when the client ends the connection, or when the
	// server is closed (testpeer closes the connection).
	s.srv = testpeer.Serve(t, nil, func(n int, c net.Conn) {
		sc := &h2ServerConn{n: n - 1, raw: &h2RawConn{Conn: c}, done: make(chan struct{}), seen: make(chan struct{}, 1)}
		s.mu.Lock()
		for len(s.conns) < n {
			s.conns = append(s.conns, nil)
		}
		s.conns[n-1] = sc
		s.mu.Unlock()
		s.serve(sc)
	})
	return s
}

func (s *h2FrameServer) url(path string) string { return "https://" + s.srv.Addr() + path }

// conn waits for the server's connection n.
func (s *h2FrameServer) conn(t *testing.T, n int) *h2ServerConn {
	t.Helper()
	deadline := time.Now().Add(h2Wait)
	for {
		s.mu.Lock()
		if n < s.numConnsLocked() {
			sc := s.conns[n]
			s.mu.Unlock()
			return sc
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no server connection #%d within %v", n, h2Wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// numConns returns how many connections the server has, in the order it accepted them.
func (s *h2FrameServer) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.numConnsLocked()
}

// numConnsLocked counts the connections up to the first whose handler has not yet taken its
// place (accepted, but not yet seen: as if accepted later).
func (s *h2FrameServer) numConnsLocked() int {
	for i, sc := range s.conns {
		if sc == nil {
			return i
		}
	}
	return len(s.conns)
}

func (s *h2FrameServer) serve(sc *h2ServerConn) {
	defer close(sc.done)
	sc.tc = tls.Server(sc.raw, s.cfg)
	sc.tc.SetDeadline(time.Now().Add(h2Wait))
	if err := sc.tc.Handshake(); err != nil {
		sc.endErr = err
		sc.raw.Close()
		return
	}
	sc.tc.SetDeadline(time.Time{})
	sc.fr = http2.NewFramer(sc.tc, sc.tc)
	sc.fr.AllowIllegalWrites = true
	sc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	sc.henc = hpack.NewEncoder(&sc.hbuf)
	var settings []http2.Setting
	if s.maxStreams != 0 {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.maxStreams})
	}
	sc.write(func(fr *http2.Framer) error { return fr.WriteSettings(settings...) })
	if sc.n < s.goAwayFirst {
		sc.goAway(0, http2.ErrCodeNo)
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(sc.tc, preface); err != nil || string(preface) != http2.ClientPreface {
		sc.endErr = fmt.Errorf("bad preface %q: %v", preface, err)
		sc.raw.Close()
		return
	}
	for {
		f, err := sc.fr.ReadFrame()
		if err != nil {
			sc.endErr = err
			// TLS said EOF while TCP did not: the client's close_notify.
			sc.closeNotify = err == io.EOF && !sc.raw.eof.Load()
			if sc.closeNotify {
				sc.tc.Close() // our close_notify, then close
			} else {
				sc.raw.Close()
			}
			return
		}
		lf := logFrame(f)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				sc.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() && !s.noPingAck {
				sc.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		}
		sc.mu.Lock()
		sc.frames = append(sc.frames, lf)
		sc.mu.Unlock()
		select {
		case sc.seen <- struct{}{}:
		default:
		}
		if lf.Type == http2.FrameHeaders {
			if sc.n < s.goAwayFirst {
				// Past our GOAWAY's last stream id (0): refused, never processed.
				sc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(lf.StreamID, http2.ErrCodeRefusedStream) })
				continue
			}
			if s.onHeaders == nil || !s.onHeaders(sc, lf.StreamID, lf.Path) {
				sc.respond(lf.StreamID, 200, "ok", true)
			}
		}
	}
}

// write runs w with the connection's framer, under its write lock.
func (sc *h2ServerConn) write(w func(fr *http2.Framer) error) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	return w(sc.fr)
}

// respond sends a response on stream id: headers with status, then body as one DATA frame,
// with END_STREAM if end.
func (sc *h2ServerConn) respond(id uint32, status int, body string, end bool) {
	sc.write(func(fr *http2.Framer) error {
		sc.hbuf.Reset()
		sc.henc.WriteField(hpack.HeaderField{Name: ":status", Value: fmt.Sprint(status)})
		if err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: id, BlockFragment: sc.hbuf.Bytes(), EndHeaders: true, EndStream: body == "" && end,
		}); err != nil {
			return err
		}
		if body == "" {
			return nil
		}
		return fr.WriteData(id, end, []byte(body))
	})
}

// goAway sends a GOAWAY.
func (sc *h2ServerConn) goAway(last uint32, code http2.ErrCode) {
	sc.write(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, nil) })
}

// waitFrame waits for a received frame that match says yes to, and returns it.
func (sc *h2ServerConn) waitFrame(t *testing.T, what string, match func(h2Frame) bool) h2Frame {
	t.Helper()
	timer := time.NewTimer(h2Wait)
	defer timer.Stop()
	for {
		sc.mu.Lock()
		for _, f := range sc.frames {
			if match(f) {
				sc.mu.Unlock()
				return f
			}
		}
		sc.mu.Unlock()
		select {
		case <-sc.seen:
		case <-sc.done:
			select {
			case <-sc.seen:
				continue
			default:
			}
			sc.mu.Lock()
			defer sc.mu.Unlock()
			for _, f := range sc.frames {
				if match(f) {
					return f
				}
			}
			t.Fatalf("connection #%d ended (%v) without %s; frames: %v", sc.n, sc.endErr, what, sc.frames)
		case <-timer.C:
			t.Fatalf("no %s on connection #%d within %v; frames: %v", what, sc.n, h2Wait, sc.log())
		}
	}
}

// log returns the frames received so far.
func (sc *h2ServerConn) log() []h2Frame {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]h2Frame(nil), sc.frames...)
}

// wantEnd waits for the client to end the connection and checks whether it sent
// close_notify.
func (sc *h2ServerConn) wantEnd(t *testing.T, closeNotify bool) {
	t.Helper()
	select {
	case <-sc.done:
	case <-time.After(h2Wait):
		t.Fatalf("connection #%d not ended by the client within %v", sc.n, h2Wait)
	}
	if sc.closeNotify != closeNotify {
		t.Errorf("connection #%d: close_notify received: got %v, want %v (ended by %v)", sc.n, sc.closeNotify, closeNotify, sc.endErr)
	}
}

// goAways returns the GOAWAY frames received, as text.
func (sc *h2ServerConn) goAways() []string {
	var out []string
	for _, f := range sc.log() {
		if f.Type == http2.FrameGoAway {
			out = append(out, f.String())
		}
	}
	return out
}

func isFrame(typ http2.FrameType, stream uint32) func(h2Frame) bool {
	return func(f h2Frame) bool { return f.Type == typ && (stream == 0 || f.StreamID == stream) }
}

// h2Transport returns a transport that trusts the test certificate, closed at the end of
// the test, and its teardown records.
func h2Transport(t *testing.T, tr *Transport) (*Transport, *h2Records) {
	t.Helper()
	tr.TLSClientConfig = h2TestCert(t).client
	recs := recordTeardowns(tr)
	t.Cleanup(func() { tr.Close() })
	return tr, recs
}

// wantRecord checks a teardown record's mode, reason and goodbyes.
func wantRecord(t *testing.T, r *shutdown.Record, mode shutdown.Mode, reason string) {
	t.Helper()
	if r.Mode != mode || r.Reason != reason {
		t.Errorf("teardown: got %v %s (outcome %v, err %v), want %v %s", r.Mode, r.Reason, r.Outcome, r.Err, mode, reason)
	}
	if mode == shutdown.Abort && (r.CloseNotifySent || r.GoAwaySent) {
		t.Errorf("abort said goodbye: close_notify sent %v, GOAWAY sent %v", r.CloseNotifySent, r.GoAwaySent)
	}
}

var execLookPath = exec.LookPath

// h2FreePort returns a loopback TCP port that was free a moment ago.
func h2FreePort(t testing.TB) int {
	t.Helper()
	return testpeer.FreePorts(t, 1)[0]
}

// h2Proc is a peer process whose output the test reads.
type h2Proc struct{ *testpeer.Proc }

// h2StartProc starts bin with args, stopped (and waited for) at the end of the test.
func h2StartProc(t *testing.T, bin string, args ...string) *h2Proc {
	t.Helper()
	return &h2Proc{testpeer.Start(t, exec.Command(bin, args...))}
}

// waitListening waits for addr to accept connections.
func (p *h2Proc) waitListening(t *testing.T, addr string) {
	t.Helper()
	p.WaitListening(t, addr, h2Wait)
}

// waitOutput waits for the output to match re, and returns it.
func (p *h2Proc) waitOutput(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	out, ok := p.WaitOutput(re, h2Wait)
	if !ok {
		t.Fatalf("output does not match %s within %v:\n%s", re, h2Wait, out)
	}
	return out
}
