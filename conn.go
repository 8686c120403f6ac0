package endwell

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
	"github.com/endwell/endwell/shutdown"
)

// conn is one connection of the pool, whatever its protocol: its socket and TLS sessions,
// its ending (decided once, see end), its telemetry. HTTP/2 and HTTP/3 hang their state
// off h2 and h3; without either, it speaks HTTP/1.1.
//
// Over HTTP/1.1, a request uses the connection from the caller's goroutine: it writes the
// request and reads the response there, with no goroutine of the connection's own in
// between; only a request body is written from a goroutine of its own, so that a server
// may answer before it has read the whole body. While the connection is idle, a watcher
// goroutine waits on it to notice a server that closes it.
type conn struct {
	t      *Transport
	key    string
	entry  atomic.Pointer[pool.Conn[*conn]]
	raw    *shutdown.Conn // the TCP socket, watched
	tlsc   *tls.Conn      // the TLS session HTTP runs over, or nil
	tunnel *tls.Conn      // the TLS session to an https proxy under tlsc, or nil
	// tunnelWatch is tunnel as the inner TLS session reads it, watched: its EOF tells
	// the server's close_notify from the end of the tunnel. Nil without a tunnel.
	tunnelWatch *shutdown.Conn
	nc          net.Conn // what HTTP reads and writes: tlsc or raw
	h2          *h2Conn  // the HTTP/2 connection over nc, or nil for HTTP/1.1; set by the dial
	h3          *h3Conn  // the HTTP/3 connection, or nil; raw, nc and the buffers are then nil

	activeUses int           // requests using the connection: 1 for HTTP/1.1, streams for HTTP/2; guarded by t.mu
	unused     chan struct{} // closed when activeUses drops to 0, if a teardown waits; guarded by t.mu
	br         *bufio.Reader
	bw         *bufio.Writer

	serverAddr string // host:port of the server (the proxy's for http:// through a proxy)
	proxied    bool   // http:// requests through a proxy: absolute-form request lines
	created    time.Time

	// readLimit bounds what may still be read: MaxResponseHeaderBytes while reading
	// headers, unlimited for bodies. Used by the request's goroutine only.
	readLimit int64
	// nwritten counts bytes written to nc. Updated by whichever goroutine writes: the
	// request's, or its body writer, one at a time.
	nwritten atomic.Int64

	// ended is how the connection ends, decided once by decide's compare-and-swap (see
	// ending.go): the
	// mode, the reason and the cause together. The connection is dead from then on, and
	// requests still using it see the cause.
	ended atomic.Pointer[ending]

	// The idle watcher; see idle.go.
	// watchKick (buffered 1) starts a watch period, or makes the watcher exit once the
	// connection is dead; watchRes (buffered 1) carries each period's result. Both are
	// nil until the first idle period. watching and watchErr belong to whoever owns the
	// connection (the request, the pool's taker, the teardown).
	watchKick  chan struct{}
	watchRes   chan error
	watching   bool        // a watch period is under way
	watchErr   error       // what the last period's read returned
	peerClosed atomic.Bool // the server closed the connection while it was idle

	tel   *connTelemetry
	state atomic.Int32 // a connState, for the open_connections metric
}

// connReader is what the connection's bufio.Reader reads from: nc, within readLimit.
type connReader struct{ pc *conn }

func (r connReader) Read(p []byte) (int, error) {
	pc := r.pc
	if pc.readLimit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > pc.readLimit {
		p = p[:pc.readLimit]
	}
	n, err := pc.nc.Read(p)
	pc.readLimit -= int64(n)
	return n, err
}

var errHeaderTooLarge = proto.ErrHeaderTooLarge

// connWriter is what the connection's bufio.Writer writes to: nc, counted.
type connWriter struct{ pc *conn }

func (w connWriter) Write(p []byte) (int, error) {
	n, err := w.pc.nc.Write(p)
	w.pc.nwritten.Add(int64(n))
	return n, err
}

const noLimit = 1<<63 - 1

func newConn(t *Transport, key string, raw *shutdown.Conn, nc net.Conn) *conn {
	pc := &conn{t: t, key: key, raw: raw, nc: nc, created: time.Now(), readLimit: noLimit}
	if tc, ok := nc.(*tls.Conn); ok {
		pc.tlsc = tc
	}
	pc.br = bufio.NewReaderSize(connReader{pc}, t.cfg.readBufferSize)
	pc.bw = bufio.NewWriterSize(connWriter{pc}, t.cfg.writeBufferSize)
	return pc
}

// dead reports whether the connection's ending was decided.
func (pc *conn) dead() bool { return pc.ended.Load() != nil }

// closeCause returns why the connection was ended, or nil while it lives (and for a
// graceful end).
func (pc *conn) closeCause() error {
	if e := pc.ended.Load(); e != nil {
		return e.cause
	}
	return nil
}

// layers builds the connection's teardown stack, top first.
func (pc *conn) layers() []shutdown.Layer {
	if pc.h3 != nil {
		return []shutdown.Layer{pc.h3.c.Layer()} // QUIC: TLS and the socket are its own
	}
	ls := make([]shutdown.Layer, 0, 4)
	var tlsTop *shutdown.TLS
	if pc.tlsc != nil {
		raw := pc.raw
		if pc.tunnelWatch != nil {
			raw = pc.tunnelWatch
		}
		tlsTop = &shutdown.TLS{Conn: pc.tlsc, Raw: raw}
	}
	if pc.h2 != nil {
		ls = append(ls, &h2Layer{h: pc.h2, tls: tlsTop})
	} else {
		ls = append(ls, &idleLayer{pc: pc, tls: tlsTop})
	}
	if tlsTop != nil {
		ls = append(ls, tlsTop)
	}
	if pc.tunnel != nil {
		ls = append(ls, &shutdown.TLS{Conn: pc.tunnel, Raw: pc.raw})
	}
	return append(ls, &shutdown.TCP{Conn: pc.raw, Drain: pc.nc})
}

// releaseUse gives one request's use of a multiplexed connection (HTTP/2, HTTP/3) back to
// the pool, as its last use or not. A broken connection is removed from the pool. Under
// DisableKeepAlives, the connection ends gracefully after its last use. Otherwise, when
// the pool drops the connection at this use (it takes no new requests: the server's
// GOAWAY, a Connection: close), dropped ends it.
func (pc *conn) releaseUse(broken bool, dropped func()) {
	t := pc.t
	e := pc.entry.Load()
	t.mu.Lock()
	last := pc.activeUses == 1
	t.mu.Unlock()
	if last {
		pc.setState(stateIdle)
	}
	switch {
	case broken:
		t.pool.Remove(e)
	case t.DisableKeepAlives:
		t.pool.Unshare(e)
		if t.pool.Put(e) {
			pc.report(proto.Outcome{Kind: proto.Complete}) // keepalives_disabled
		}
	case t.pool.Put(e):
		dropped()
	}
	t.doneActive(pc)
}

// writeCounter reports the bytes written since mark.
func (pc *conn) writtenSince(mark int64) int64 { return pc.nwritten.Load() - mark }

// requestErr maps an I/O error seen while the request used the connection to what the
// caller should see: why the connection was ended, if it was.
func (pc *conn) requestErr(err error) error {
	if cause := pc.closeCause(); cause != nil {
		return cause
	}
	return err
}

// bodyWriter writes a request body in a goroutine of its own, so that the response can be
// read while the body is still going out. Its result arrives on done.
type bodyWriter struct {
	done chan error // buffered 1
	// cont, when non-nil, gates the body on the server's 100 Continue: true to send, false
	// to skip it. The field is set before the writer starts and never changed.
	cont chan bool
	// contSent says a value was sent on cont. Used by the response reader only.
	contSent bool
}

var errBodyNotSent = proto.ErrBodyNotSent

type bodyReadError = proto.BodyReadError

// isPeerGone reports whether an error says the server had closed the connection.
func isPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
