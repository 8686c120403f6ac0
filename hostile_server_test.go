package endwell

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The hostile-server matrix's harness: one loopback server that plays a scripted hostile
// peer over HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS or h2c, and reports per
// connection how the client ended it (close_notify or not) and, for HTTP/2, the frames it
// received.

// hostileProto is the protocol a case runs over.
type hostileProto int

const (
	protoH1    hostileProto = iota // HTTP/1.1 over TCP
	protoH1TLS                     // HTTP/1.1 over TLS
	protoH2                        // HTTP/2 over TLS (ALPN h2)
	protoH2C                       // HTTP/2 over TCP, prior knowledge
)

func (p hostileProto) String() string {
	return [...]string{"h1", "h1tls", "h2", "h2c"}[p]
}

func (p hostileProto) tls() bool { return p == protoH1TLS || p == protoH2 }
func (p hostileProto) h2() bool  { return p == protoH2 || p == protoH2C }

// hsScripts is what a hostile server does. Exactly one of h1 and h2 applies, by protocol;
// raw, if set, replaces everything after accept (TLS included: a server that never gets to
// a handshake), and h2Start replaces the HTTP/2 server's SETTINGS and read loop.
type hsScripts struct {
	// raw plays the start of the connection on the TCP socket, TLS included; the server
	// then reads until the client goes.
	raw func(c *hsConn)
	// h1 answers the request read on an HTTP/1.1 connection; n counts the requests the
	// server read, from 1. It must return once c.gone is closed (a write fails then).
	h1 func(c *hsConn, req *http.Request, n int)
	// h2 answers the request on stream id of an HTTP/2 connection; n counts the HEADERS
	// the server read, from 1. It runs in a goroutine of its own while the connection's
	// read loop goes on (SETTINGS and PINGs are acknowledged there), and must return
	// once c.gone is closed.
	h2 func(c *hsConn, id uint32, n int)
	// h2Start, if set, replaces the server's SETTINGS: it runs once the client preface
	// was read, before the read loop.
	h2Start func(c *hsConn)
	// noRead makes the HTTP/1.1 server read nothing more after the request, until it is
	// closed: the client's writes fill the socket's buffers, then block.
	noRead bool
}

// hostileServer is a loopback server that plays hsScripts over one protocol.
type hostileServer struct {
	proto   hostileProto
	srv     *testpeer.Server
	cfg     *tls.Config
	scripts hsScripts
	nreq    atomic.Int32 // requests (HTTP/1.1) or HEADERS (HTTP/2) read, over all connections
	// noticed is closed by a script's notify: the client may go on.
	noticed    chan struct{}
	noticeOnce sync.Once

	closing sync.WaitGroup // Done when the server closes
	mu      sync.Mutex     // guards conns
	conns   []*hsConn      // by accept order; nil where a handler has not yet set its own
}

// hsConn is one connection of the hostile server.
type hsConn struct {
	s   *hostileServer
	raw *h2RawConn // the TCP side: it notes the client's FIN
	tc  *tls.Conn  // nil for TCP
	nc  net.Conn   // tc, or raw

	gone chan struct{} // closed when the connection's reader stopped: the client ended it, or the server closed
	// closeNotify says the client's close_notify arrived; endErr is what ended the
	// reader. Both are set before gone is closed.
	closeNotify bool
	endErr      error

	// HTTP/2
	wmu    sync.Mutex // guards fr's writes, hbuf and henc
	fr     *http2.Framer
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	fmu    sync.Mutex // guards frames
	frames []h2Frame
}

func startHostileServer(t *testing.T, proto hostileProto, scripts hsScripts) *hostileServer {
	t.Helper()
	s := &hostileServer{proto: proto, scripts: scripts, noticed: make(chan struct{})}
	s.closing.Add(1)
	if proto.tls() {
		s.cfg = h2TestCert(t).server.Clone()
		s.cfg.NextProtos = []string{"http/1.1"}
		if proto == protoH2 {
			s.cfg.NextProtos = []string{"h2"}
		}
	}
	// Each connection: it ends once the client has ended it, or the server closes (testpeer
	// closes the connection).
	s.srv = testpeer.Serve(t, nil, func(n int, c net.Conn) {
		hc := &hsConn{s: s, raw: &h2RawConn{Conn: c}, gone: make(chan struct{})}
		hc.nc = hc.raw
		s.mu.Lock()
		for len(s.conns) < n {
			s.conns = append(s.conns, nil)
		}
		s.conns[n-1] = hc
		s.mu.Unlock()
		hc.serve()
	})
	// Runs before the server's close (cleanups run last first): scripts waiting for the
	// server's close go on.
	t.Cleanup(s.closing.Done)
	return s
}

// notify closes noticed, once.
func (s *hostileServer) notify() { s.noticeOnce.Do(func() { close(s.noticed) }) }

func (s *hostileServer) url(path string) string {
	if s.proto.tls() {
		return "https://" + s.srv.Addr() + path
	}
	return "http://" + s.srv.Addr() + path
}

// connections returns the server's connections in the order it accepted them, up to the
// first whose handler has not yet taken its place (as if accepted later).
func (s *hostileServer) connections() []*hsConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*hsConn
	for _, c := range s.conns {
		if c == nil {
			break
		}
		out = append(out, c)
	}
	return out
}

// waitGone waits until the client has ended every connection, for at most d, and returns
// those still open.
func (s *hostileServer) waitGone(d time.Duration) []*hsConn {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for _, c := range s.connections() {
		select {
		case <-c.gone:
		case <-timer.C:
		}
	}
	var open []*hsConn
	for _, c := range s.connections() {
		select {
		case <-c.gone:
		default:
			open = append(open, c)
		}
	}
	return open
}

func (c *hsConn) serve() {
	s := c.s
	defer c.raw.Close()
	if s.scripts.raw != nil {
		s.scripts.raw(c)
		c.readUntilGone(c.raw)
		return
	}
	if s.proto.tls() {
		c.tc = tls.Server(c.raw, s.cfg)
		c.tc.SetDeadline(time.Now().Add(h2Wait))
		if err := c.tc.Handshake(); err != nil {
			c.endErr = err
			close(c.gone)
			return
		}
		c.tc.SetDeadline(time.Time{})
		c.nc = c.tc
	}
	if s.proto.h2() {
		c.serveH2()
		return
	}
	c.serveH1()
}

// readUntilGone reads r until it fails, notes how the client ended the connection, and
// closes gone.
func (c *hsConn) readUntilGone(r io.Reader) {
	buf := make([]byte, 32<<10)
	var err error
	for err == nil {
		_, err = r.Read(buf)
	}
	c.finish(err)
}

// finish records what ended the reader and closes gone. A close_notify is TLS saying EOF
// while TCP did not.
func (c *hsConn) finish(err error) {
	c.endErr = err
	c.closeNotify = c.tc != nil && err == io.EOF && !c.raw.eof.Load()
	close(c.gone)
}

// end closes the connection: with close_notify in answer to the client's, else without.
func (c *hsConn) end() {
	if c.closeNotify {
		c.tc.SetWriteDeadline(time.Now().Add(time.Second))
		c.tc.Close()
		return
	}
	c.raw.Close()
}

func (c *hsConn) serveH1() {
	s := c.s
	br := bufio.NewReader(c.nc)
	req, err := http.ReadRequest(br)
	if err != nil {
		c.finish(err)
		c.end()
		return
	}
	io.Copy(io.Discard, req.Body)
	n := int(s.nreq.Add(1))
	if s.scripts.noRead {
		if tc, ok := c.raw.Conn.(*net.TCPConn); ok {
			tc.SetReadBuffer(4 << 10)
		}
		s.scripts.h1(c, req, n)
		c.s.closing.Wait() // until the server closes
		c.finish(net.ErrClosed)
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	// The script: it ends when the client is gone.
	go func() {
		defer wg.Done()
		s.scripts.h1(c, req, n)
	}()
	c.readUntilGone(br)
	c.end()
	wg.Wait()
}

// Write writes p to the connection, within h2Wait.
func (c *hsConn) Write(p []byte) (int, error) {
	c.nc.SetWriteDeadline(time.Now().Add(h2Wait))
	return c.nc.Write(p)
}

// writeString writes s.
func (c *hsConn) writeString(s string) error {
	_, err := c.Write([]byte(s))
	return err
}

// flood writes p again and again until the client is gone or a write fails.
func (c *hsConn) flood(p []byte) {
	for {
		select {
		case <-c.gone:
			return
		default:
		}
		if _, err := c.Write(p); err != nil {
			return
		}
	}
}

// drip writes p one byte every d, until the client is gone.
func (c *hsConn) drip(p []byte, d time.Duration) {
	for i := range p {
		if _, err := c.Write(p[i : i+1]); err != nil {
			return
		}
		select {
		case <-c.gone:
			return
		case <-time.After(d):
		}
	}
}

// stall waits for the client to go.
func (c *hsConn) stall() { <-c.gone }

// reset ends the connection with a TCP RST.
func (c *hsConn) reset() {
	if tc, ok := c.raw.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.raw.Close()
}

func (c *hsConn) serveH2() {
	s := c.s
	c.fr = http2.NewFramer(c.nc, c.nc)
	c.fr.AllowIllegalWrites = true
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	preface := make([]byte, len(http2.ClientPreface))
	c.nc.SetReadDeadline(time.Now().Add(h2Wait))
	if _, err := io.ReadFull(c.nc, preface); err != nil || string(preface) != http2.ClientPreface {
		c.finish(fmt.Errorf("bad preface %q: %v", preface, err))
		c.end()
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	if s.scripts.h2Start != nil {
		s.scripts.h2Start(c)
	} else {
		c.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue // a frame this server does not care to parse
			}
			c.finish(err)
			c.end()
			return
		}
		lf := logFrame(f)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		}
		c.fmu.Lock()
		c.frames = append(c.frames, lf)
		c.fmu.Unlock()
		if lf.Type == http2.FrameHeaders {
			n := int(s.nreq.Add(1))
			wg.Add(1)
			// The stream's script: it ends when it has answered, or the client is gone.
			go func() {
				defer wg.Done()
				if s.scripts.h2 == nil {
					c.respond(lf.StreamID, "ok")
					return
				}
				s.scripts.h2(c, lf.StreamID, n)
			}()
		}
	}
}

// write runs w with the connection's framer, under its write lock, within h2Wait.
func (c *hsConn) write(w func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(h2Wait))
	return w(c.fr)
}

// headerBlock encodes :status and fields (name, value pairs) with the connection's encoder;
// call it under wmu.
func (c *hsConn) headerBlockLocked(status string, fields ...string) []byte {
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	for i := 0; i+1 < len(fields); i += 2 {
		c.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return c.hbuf.Bytes()
}

// headers sends a response's HEADERS on stream id, with END_STREAM if end.
func (c *hsConn) headers(id uint32, end bool, status string, fields ...string) error {
	return c.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: id, BlockFragment: c.headerBlockLocked(status, fields...), EndHeaders: true, EndStream: end,
		})
	})
}

// respond sends a 200 response with body on stream id.
func (c *hsConn) respond(id uint32, body string) error {
	if err := c.headers(id, false, "200"); err != nil {
		return err
	}
	return c.write(func(fr *http2.Framer) error { return fr.WriteData(id, true, []byte(body)) })
}

// frameLog returns the frames received so far.
func (c *hsConn) frameLog() []h2Frame {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return append([]h2Frame(nil), c.frames...)
}

// goAwayCodes returns the codes of the GOAWAY frames received.
func (c *hsConn) goAwayCodes() []http2.ErrCode {
	var codes []http2.ErrCode
	for _, f := range c.frameLog() {
		if f.Type == http2.FrameGoAway {
			codes = append(codes, f.Code)
		}
	}
	return codes
}

// rstCodes returns the codes of the RST_STREAM frames received.
func (c *hsConn) rstCodes() []http2.ErrCode {
	var codes []http2.ErrCode
	for _, f := range c.frameLog() {
		if f.Type == http2.FrameRSTStream {
			codes = append(codes, f.Code)
		}
	}
	return codes
}
