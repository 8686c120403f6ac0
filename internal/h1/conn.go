// Package h1 is endwell's HTTP/1.1: one request's exchange over a connection (the request
// written with net/http's exported wire helpers, the response read), the response bodies,
// the idle watch that notices a server closing an idle connection, and the top layer of an
// HTTP/1.1 connection's teardown stack.
//
// It decides nothing about the connection's fate: it reports what happened to its
// [Owner] (the root package's connection) as a proto.Outcome, and asks the owner whether
// the connection ended. It imports neither the root package nor pool/.
package h1

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http/httpguts"
)

// Owner is what the HTTP/1.1 code asks of the connection's owner. Its methods are safe
// from any goroutine.
type Owner interface {
	// Report tells the owner what happened; the owner decides how the connection ends
	// (the first decision wins). It returns true only for a complete transfer whose
	// connection may be reused.
	Report(proto.Outcome) bool
	// Dead reports whether the connection's ending was decided.
	Dead() bool
	// Cause returns the error requests see of the connection's ending: nil while it lives,
	// and for a graceful ending.
	Cause() error
	// Release says that the exchange is over: with nil, the connection goes back to the
	// pool (its idle watch started); otherwise it only stops counting as in use.
	Release(err error)
	// Detach takes the connection out of the pool for good: a 101 Switching Protocols
	// handed it to the caller.
	Detach()
	// TakeIdle takes the idle connection from the pool for the idle watch, which saw the
	// server speak first; false if a request took it first.
	TakeIdle() bool
}

// Config is HTTP/1.1's share of the transport's configuration, defaults filled in. It is
// shared by the transport's connections and never changed once they use it.
type Config struct {
	ResponseHeaderTimeout time.Duration
	ExpectContinueTimeout time.Duration // <= 0: the body goes out without waiting
	MaxHeaderBytes        int64
	MaxDrainBytes         int64         // < 0: no drain
	MaxDrainTime          time.Duration // < 0: no drain
	ReadBufferSize        int
	WriteBufferSize       int
	DisableCompression    bool
	DisableKeepAlives     bool
	// OnRelease, if it holds a function, sees every exchange's release (tests).
	OnRelease *atomic.Pointer[func(error)]
}

// Conn is the HTTP/1.1 side of a connection.
//
// A request uses the connection from the caller's goroutine: it writes the request and
// reads the response there, with no goroutine of the connection's own in between; only a
// request body is written from a goroutine of its own, so that a server may answer before
// it has read the whole body. While the connection is idle, a watcher goroutine waits on
// it to notice a server that closes it.
type Conn struct {
	owner Owner
	cfg   *Config
	nc    net.Conn       // what HTTP reads and writes: the TLS session, or raw
	raw   *shutdown.Conn // the TCP socket, watched: its FIN and RST
	tls   *tls.Conn      // the TLS session HTTP runs over, or nil
	// tlsState is tls's state once the first response needed it, shared by the
	// connection's responses as in net/http. Used by the request's goroutine only.
	tlsState  *tls.ConnectionState
	proxied   bool   // http:// requests through a proxy: absolute-form request lines
	proxyAuth string // Proxy-Authorization for a proxied request, or ""

	br *bufio.Reader
	bw *bufio.Writer
	// readLimit bounds what may still be read: MaxHeaderBytes while reading headers,
	// unlimited for bodies. Used by the request's goroutine only.
	readLimit int64
	// nwritten counts bytes written to nc. Updated by whichever goroutine writes: the
	// request's, or its body writer, one at a time.
	nwritten atomic.Int64

	// The idle watch; see watch.go.
	// watchState is watchOff, watchArmed or watchOn. watchTimer starts a watch period
	// (watchNow) once an idle period has lasted watchDelay. watchKick (buffered 1) starts
	// a watch period in the watcher goroutine, or makes it exit once the connection is
	// dead; watchRes (buffered 1) carries each period's result. watcher is set once the
	// watcher goroutine was started. watching and watchErr belong to whoever owns the
	// connection (the request, the pool's taker, the teardown).
	watchState atomic.Int32
	watchTimer *time.Timer
	watchKick  chan struct{}
	watchRes   chan error
	watcher    atomic.Bool
	lookable   bool        // raw's receive queue can be looked at (shutdown.Conn.CanLook)
	watching   bool        // an idle period is under way: stopWatch ends it
	watchErr   error       // what the last idle period's look or read returned
	peerClosed atomic.Bool // the server closed the connection while it was idle
}

// New makes the HTTP/1.1 side of a connection over nc, whose TCP socket is raw. proxied
// says requests go to an HTTP proxy (absolute-form request lines, with proxyAuth as their
// Proxy-Authorization unless they carry one).
func New(owner Owner, cfg *Config, nc net.Conn, raw *shutdown.Conn, proxied bool, proxyAuth string) *Conn {
	c := &Conn{owner: owner, cfg: cfg, nc: nc, raw: raw, proxied: proxied, proxyAuth: proxyAuth, readLimit: noLimit}
	if tc, ok := nc.(*tls.Conn); ok {
		c.tls = tc
	}
	c.br = bufio.NewReaderSize(connReader{c}, cfg.ReadBufferSize)
	c.bw = bufio.NewWriterSize(connWriter{c}, cfg.WriteBufferSize)
	c.watchKick = make(chan struct{}, 1)
	c.watchRes = make(chan error, 1)
	c.lookable = raw.CanLook()
	c.watchTimer = time.AfterFunc(time.Hour, c.watchNow)
	c.watchTimer.Stop() // armed by each idle period (startWatch)
	return c
}

// Written returns how many bytes were written to the connection so far: a request that
// failed wrote nothing of itself if Written did not move.
func (c *Conn) Written() int64 { return c.nwritten.Load() }

// abort reports a failure: the connection is aborted, without close_notify.
func (c *Conn) abort(cause error) {
	c.owner.Report(proto.Outcome{Kind: proto.Failed, Cause: cause})
}

// connReader is what the connection's bufio.Reader reads from: nc, within readLimit.
type connReader struct{ c *Conn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	if c.readLimit <= 0 {
		return 0, proto.ErrHeaderTooLarge
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.nc.Read(p)
	c.readLimit -= int64(n)
	return n, err
}

// connWriter is what the connection's bufio.Writer writes to: nc, counted.
type connWriter struct{ c *Conn }

func (w connWriter) Write(p []byte) (int, error) {
	n, err := w.c.nc.Write(p)
	w.c.nwritten.Add(int64(n))
	return n, err
}

const noLimit = 1<<63 - 1

// writtenSince reports the bytes written since mark.
func (c *Conn) writtenSince(mark int64) int64 { return c.nwritten.Load() - mark }

// requestErr maps an I/O error seen while the request used the connection to what the
// caller should see: why the connection was ended, if it was.
func (c *Conn) requestErr(err error) error {
	if cause := c.owner.Cause(); cause != nil {
		return proto.RequestErr(cause)
	}
	return proto.RequestErr(err)
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

// PeerGone reports whether an error says the server had closed the connection.
func PeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RequiresHTTP1 reports whether req can only be served over HTTP/1.1: it asks to upgrade
// the connection (WebSocket's handshake, and any other Upgrade), which HTTP/2 forbids.
// net/http routes WebSocket upgrades so and fails the others over HTTP/2; endwell sends
// them all over HTTP/1.1.
func RequiresHTTP1(req *http.Request) bool {
	return len(req.Header["Upgrade"]) > 0 && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade")
}

// aLongTimeAgo is a deadline in the past: it makes a blocked read or write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// errDeadline is what a read interrupted by aLongTimeAgo returns.
var errDeadline = os.ErrDeadlineExceeded
