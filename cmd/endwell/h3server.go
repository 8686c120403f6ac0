package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// This file is the embedded HTTP/3 server of the h3 rows: quic-go's http3.Server on
// 127.0.0.1, whose qlog tells which frames it received from the client (CONNECTION_CLOSE
// with its kind and code, STOP_SENDING, RESET_STREAM), and which tests the client's closing
// period from the outside: once the client's CONNECTION_CLOSE is in, the server sends it one
// late packet, and counts the client's CONNECTION_CLOSE packets that come back.

// h3OneWay delays every packet the embedded HTTP/3 server sends. On loopback a round trip
// takes some 0.1ms, and the client's closing period (three probe timeouts, each at least
// the RTT plus 1ms) about 3ms: too short for a late packet to be sure to land in it, and
// for a rapid close to be told from a graceful one. With the server's packets 10ms late,
// the client measures a 10ms round trip, its closing period lasts some 40ms or more, and
// the late packet (delayed too) reaches it 10ms after its CONNECTION_CLOSE: a graceful
// close answers it, a rapid close (its socket released at once) does not.
const h3OneWay = 10 * time.Millisecond

// h3Settle is how long the server keeps watching a connection after it ended: the late
// packet takes h3OneWay to reach the client, and its answer comes straight back.
const h3Settle = 100 * time.Millisecond

// h3Setup is how a scenario plays over HTTP/3, against the embedded HTTP/3 server.
type h3Setup struct {
	// handler, if set, answers the scenario's requests instead of "ok\n"; not the one
	// that reuse sends (for againPath).
	handler http.HandlerFunc
	// idleClose, if set, makes the server close the connection (CONNECTION_CLOSE of the
	// application kind, H3_NO_ERROR) once it has been idle this long after its first
	// response. (quic-go's own http3.Server.IdleTimeout counts from the handshake, and
	// could close before the first request on a busy machine.)
	idleClose time.Duration
	// goAway, if set, makes the server shut down gracefully (GOAWAY, then it waits for
	// the client to close) once idle this long after its first response.
	goAway time.Duration
	// reuse: the scenario's story resets a stream, which leaves the connection alive. The
	// runner then sends one more request (for againPath), which must use the same
	// connection, and calls CloseIdleConnections: the row is that later ending, and the
	// server's column shows the reset before it.
	reuse bool
}

// againPath is the path of the request that follows a stream reset: the server answers it
// "ok\n" whatever the scenario. (A request reset before the server read it never reaches
// its handler: the server cannot count on its order.)
const againPath = "/again"

// h3Witness is the embedded HTTP/3 server. It is a [server].
type h3Witness struct {
	setup h3Setup
	udp   *net.UDPConn
	link  *delayedConn
	tr    *quic.Transport
	ln    *quic.Listener
	srv   *http3.Server
	// requests counts the requests the server received.
	requests atomic.Int64
	// wg tracks the accept loop, the connections' handlers, and a graceful Shutdown.
	wg sync.WaitGroup

	mu      sync.Mutex // guards the following
	conns   []*h3ConnLog
	timers  []*time.Timer
	closed  bool
	changed chan struct{} // closed and replaced when a connection is accepted or ends
}

// connKey is the request context key of the server's QUIC connection.
type connKey struct{}

// startH3Witness starts an embedded HTTP/3 server on 127.0.0.1.
func startH3Witness(setup h3Setup) (*h3Witness, error) {
	cert, err := testpeer.LoadCert()
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &h3Witness{setup: setup, udp: udp, changed: make(chan struct{})}
	s.link = newDelayedConn(udp, h3OneWay)
	s.tr = &quic.Transport{Conn: s.link}
	s.srv = &http3.Server{
		Handler: http.HandlerFunc(s.serveHTTP),
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	tlsConf := http3.ConfigureTLSConfig(cert.ServerConfig())
	qconf := &quic.Config{Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
		return &h3ConnLog{s: s, stopSending: map[int64]uint64{}, resetStream: map[int64]uint64{}}
	}}
	if s.ln, err = s.tr.Listen(tlsConf, qconf); err != nil {
		s.tr.Close()
		s.link.Close()
		return nil, err
	}
	// The accept loop runs until Close closes the listener.
	s.wg.Go(s.acceptLoop)
	return s, nil
}

func (s *h3Witness) acceptLoop() {
	for {
		conn, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		l, _ := conn.QlogTrace().(*h3ConnLog)
		if l == nil {
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
			continue
		}
		l.accepted(conn)
		s.mu.Lock()
		s.conns = append(s.conns, l)
		s.signalLocked()
		s.mu.Unlock()
		s.wg.Go(func() {
			// ServeQUICConn returns once the connection is closed, by either side, and its
			// handlers have returned; at once if the server is shut down, and the
			// connection is closed here. Then its log records how it ended.
			s.srv.ServeQUICConn(conn)
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
			l.ended()
		})
	}
}

func (s *h3Witness) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// serveHTTP answers the requests as the scenario says, else with "ok\n".
func (s *h3Witness) serveHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	if s.setup.handler != nil && r.URL.Path != againPath {
		s.setup.handler(w, r)
	} else {
		io.WriteString(w, "ok\n")
	}
	if n != 1 {
		return
	}
	if d := s.setup.idleClose; d > 0 {
		if conn, ok := r.Context().Value(connKey{}).(*quic.Conn); ok {
			s.after(d, func() { conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "idle") })
		}
	}
	if d := s.setup.goAway; d > 0 {
		s.after(d, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed {
				return
			}
			// Shutdown sends GOAWAY and returns once the client has closed the connection
			// (or Close cut it short).
			s.wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*scenarioTimeout)
				defer cancel()
				s.srv.Shutdown(ctx)
			})
		})
	}
}

// after runs f after d, unless the server is closed first.
func (s *h3Witness) after(d time.Duration, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.timers = append(s.timers, time.AfterFunc(d, f))
	}
}

func (s *h3Witness) addr() string { return s.udp.LocalAddr().String() }

func (s *h3Witness) URL() string { return "https://" + s.addr() }

func (s *h3Witness) ClientTLSConfig() *tls.Config {
	cert, err := testpeer.LoadCert()
	if err != nil {
		return &tls.Config{RootCAs: x509.NewCertPool()} // trusts nothing: the server did not start
	}
	return cert.ClientConfig()
}

// WaitConns waits until n connections have ended and the server has watched each of them
// for h3Settle after, and returns how the client ended them, in the order they ended.
func (s *h3Witness) WaitConns(ctx context.Context, n int) ([]string, error) {
	for {
		s.mu.Lock()
		var ended []*h3ConnLog
		for _, l := range s.conns {
			if !l.endedAt().IsZero() {
				ended = append(ended, l)
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(ended) >= n {
			var out []string
			for _, l := range ended {
				if err := sleepUntil(ctx, l.endedAt().Add(h3Settle)); err != nil {
					return out, err
				}
				out = append(out, l.clientEnding())
			}
			return out, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Reports returns what the server has seen of each connection so far.
func (s *h3Witness) Reports() []string {
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	out := make([]string, 0, len(conns))
	for _, l := range conns {
		out = append(out, l.clientEnding())
	}
	return out
}

// numConns reports how many connections the server accepted.
func (s *h3Witness) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes the server (its connections with H3_NO_ERROR) and waits for its goroutines.
func (s *h3Witness) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, t := range s.timers {
		t.Stop()
	}
	s.mu.Unlock()
	s.srv.Close()
	s.ln.Close()
	s.wg.Wait()
	s.tr.Close()
	return s.link.Close()
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// h3ConnLog is what the server saw of one connection: the frames of the client's that end
// something, from the server's qlog, and how the connection ended. It is the connection's
// qlog trace and recorder, called by quic-go's goroutines.
type h3ConnLog struct {
	s *h3Witness

	mu     sync.Mutex // guards the following
	conn   *quic.Conn // nil until accepted
	remote net.Addr   // the client's address; nil until accepted
	// stopSending and resetStream are the codes of the client's STOP_SENDING and
	// RESET_STREAM frames, by stream (a frame the client sent again counts once).
	stopSending, resetStream map[int64]uint64
	// gotClose says a CONNECTION_CLOSE came from the client: closeApp its kind
	// (application, else transport), closeCode its code.
	gotClose  bool
	closeApp  bool
	closeCode uint64
	// closedAt is when the QUIC connection closed, by either side (its qlog says);
	// cause why, once it ended; end when it ended (its handlers returned; zero until then).
	closedAt time.Time
	cause    error
	end      time.Time
}

var (
	_ qlogwriter.Trace    = (*h3ConnLog)(nil)
	_ qlogwriter.Recorder = (*h3ConnLog)(nil)
)

func (l *h3ConnLog) AddProducer() qlogwriter.Recorder { return l }
func (l *h3ConnLog) Close() error                     { return nil }

func (l *h3ConnLog) RecordEvent(ev qlogwriter.Event) {
	if _, ok := ev.(qlog.ConnectionClosed); ok {
		l.mu.Lock()
		if l.closedAt.IsZero() {
			l.closedAt = time.Now()
		}
		l.mu.Unlock()
		return
	}
	pr, ok := ev.(qlog.PacketReceived)
	if !ok {
		return
	}
	for _, f := range pr.Frames {
		l.mu.Lock()
		switch f := f.Frame.(type) {
		case *qlog.StopSendingFrame:
			l.stopSending[int64(f.StreamID)] = uint64(f.ErrorCode)
		case *qlog.ResetStreamFrame:
			l.resetStream[int64(f.StreamID)] = uint64(f.ErrorCode)
		case *qlog.ConnectionCloseFrame:
			if !l.gotClose {
				l.gotClose, l.closeApp, l.closeCode = true, f.IsApplicationError, f.ErrorCode
				// One late packet: a client in its closing period answers it with its
				// CONNECTION_CLOSE again; a client that released its socket cannot.
				if l.remote != nil {
					l.s.link.replay(l.remote)
				}
			}
		}
		l.mu.Unlock()
	}
}

// accepted records the server's side of the connection.
func (l *h3ConnLog) accepted(conn *quic.Conn) {
	l.mu.Lock()
	l.conn, l.remote = conn, conn.RemoteAddr()
	l.mu.Unlock()
}

// ended records, once the QUIC connection is closed and its handlers returned, why and
// when.
func (l *h3ConnLog) ended() {
	l.mu.Lock()
	l.cause = context.Cause(l.conn.Context())
	l.end = time.Now()
	if l.closedAt.IsZero() {
		l.closedAt = l.end
	}
	l.mu.Unlock()
	s := l.s
	s.mu.Lock()
	s.signalLocked()
	s.mu.Unlock()
}

func (l *h3ConnLog) endedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.end
}

// clientEnding describes how the client ended the connection, as the server saw it:
// "CONNECTION_CLOSE(app 0x100), re-sent 1x" (its closing period answered the late
// packet), "CONNECTION_CLOSE(app 0x10c), not re-sent" (a rapid close), "nothing after its
// CONNECTION_CLOSE(app 0x100)" (the server closed first; the client drained), preceded by
// the stream resets the client sent ("STOP_SENDING+RESET_STREAM(0x10c), then ...").
func (l *h3ConnLog) clientEnding() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	resent := l.s.link.resent(l.remote)
	var parts []string
	if s := streamResets(l.stopSending, l.resetStream); s != "" {
		parts = append(parts, s)
	}
	var end string
	switch {
	case l.gotClose:
		end = fmt.Sprintf("CONNECTION_CLOSE(%s %#x)", closeKind(l.closeApp), l.closeCode)
		if resent > 0 {
			end += fmt.Sprintf(", re-sent %dx", resent)
		} else {
			end += ", not re-sent"
		}
	case l.end.IsZero():
		end = "still open"
	default:
		// The server's CONNECTION_CLOSE reaches the client h3OneWay after it left: what the
		// client sent until then may still come in. Past that (and as much again), a
		// client that drains sends nothing.
		end = l.serverEnding(l.s.link.since(l.remote, l.closedAt.Add(3*h3OneWay)))
	}
	parts = append(parts, end)
	return strings.Join(parts, ", then ")
}

// serverEnding describes a connection that ended without the client's CONNECTION_CLOSE:
// the server's own (after which it saw after packets from the client), or a timeout.
func (l *h3ConnLog) serverEnding(after int) string {
	var what string
	var ae *quic.ApplicationError
	var te *quic.TransportError
	var idle *quic.IdleTimeoutError
	switch {
	case errors.As(l.cause, &ae) && !ae.Remote:
		what = fmt.Sprintf("its CONNECTION_CLOSE(app %#x)", uint64(ae.ErrorCode))
	case errors.As(l.cause, &te) && !te.Remote:
		what = fmt.Sprintf("its CONNECTION_CLOSE(transport %#x)", uint64(te.ErrorCode))
	case errors.As(l.cause, &idle):
		return "nothing: QUIC idle timeout"
	case l.cause != nil:
		return "closed: " + l.cause.Error()
	default:
		return "closed"
	}
	if after == 0 {
		return "nothing after " + what
	}
	return fmt.Sprintf("%d packets after %s", after, what)
}

func closeKind(app bool) string {
	if app {
		return "app"
	}
	return "transport"
}

// streamResets describes the client's stream resets: "STOP_SENDING+RESET_STREAM(0x10c)"
// when both kinds carry the same codes, else each kind with its codes.
func streamResets(stop, reset map[int64]uint64) string {
	codes := func(byStream map[int64]uint64) string {
		var s []string
		for _, c := range byStream {
			s = append(s, fmt.Sprintf("%#x", c))
		}
		slices.Sort(s)
		return strings.Join(slices.Compact(s), ",")
	}
	switch {
	case len(stop) == 0 && len(reset) == 0:
		return ""
	case len(stop) > 0 && len(reset) > 0 && codes(stop) == codes(reset):
		return "STOP_SENDING+RESET_STREAM(" + codes(stop) + ")"
	case len(reset) == 0:
		return "STOP_SENDING(" + codes(stop) + ")"
	case len(stop) == 0:
		return "RESET_STREAM(" + codes(reset) + ")"
	}
	return "STOP_SENDING(" + codes(stop) + ")+RESET_STREAM(" + codes(reset) + ")"
}

// delayedConn is the embedded HTTP/3 server's UDP socket as quic-go sees it (a plain
// net.PacketConn: quic-go reads and writes one datagram at a time). Every datagram the
// server sends leaves after a delay (see h3OneWay). Every datagram a client sends is
// counted, and so is each one it sends again byte for byte: QUIC numbers every packet
// anew, so a datagram seen twice is a CONNECTION_CLOSE re-sent in a closing period (quic-go
// re-sends the very same packet).
type delayedConn struct {
	udp   *net.UDPConn
	delay time.Duration
	out   chan delayedPacket
	done  chan struct{}
	wg    sync.WaitGroup // the writer

	mu     sync.Mutex // guards the following
	closed bool
	last   map[string][]byte   // the last datagram sent to each client
	peers  map[string]*counter // by client address
}

type delayedPacket struct {
	b   []byte
	to  net.Addr
	due time.Time
}

// counter counts a client's datagrams.
type counter struct {
	arrivals []time.Time    // when each datagram came
	seen     map[uint64]int // how many times each datagram (by its hash) came
	resent   int            // datagrams that came again
}

var _ net.PacketConn = (*delayedConn)(nil)

func newDelayedConn(udp *net.UDPConn, delay time.Duration) *delayedConn {
	c := &delayedConn{
		udp:   udp,
		delay: delay,
		out:   make(chan delayedPacket, 4096),
		done:  make(chan struct{}),
		last:  map[string][]byte{},
		peers: map[string]*counter{},
	}
	// The writer sends the datagrams in order, each at its due time, until Close.
	c.wg.Go(c.writeLoop)
	return c
}

func (c *delayedConn) writeLoop() {
	for {
		select {
		case p := <-c.out:
			if d := time.Until(p.due); d > 0 {
				time.Sleep(d)
			}
			c.udp.WriteTo(p.b, p.to)
		case <-c.done:
			return
		}
	}
}

func (c *delayedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.udp.ReadFrom(b)
	if err == nil {
		h := fnv.New64a()
		h.Write(b[:n])
		sum := h.Sum64()
		c.mu.Lock()
		p := c.peers[addr.String()]
		if p == nil {
			p = &counter{seen: map[uint64]int{}}
			c.peers[addr.String()] = p
		}
		p.arrivals = append(p.arrivals, time.Now())
		p.seen[sum]++
		if p.seen[sum] > 1 {
			p.resent++
		}
		c.mu.Unlock()
	}
	return n, addr, err
}

func (c *delayedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	p := delayedPacket{b: append([]byte(nil), b...), to: addr, due: time.Now().Add(c.delay)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.last[addr.String()] = p.b
	c.mu.Unlock()
	return len(b), c.send(p)
}

func (c *delayedConn) send(p delayedPacket) error {
	select {
	case c.out <- p:
		return nil
	case <-c.done:
		return net.ErrClosed
	}
}

// replay sends the last datagram sent to addr once more, delayed as the others.
func (c *delayedConn) replay(addr net.Addr) {
	c.mu.Lock()
	b := c.last[addr.String()]
	closed := c.closed
	c.mu.Unlock()
	if b != nil && !closed {
		c.send(delayedPacket{b: b, to: addr, due: time.Now().Add(c.delay)})
	}
}

// resent returns how many datagrams from addr came again, byte for byte.
func (c *delayedConn) resent(addr net.Addr) int {
	if addr == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.peers[addr.String()]; p != nil {
		return p.resent
	}
	return 0
}

// since returns how many datagrams came from addr after t.
func (c *delayedConn) since(addr net.Addr, t time.Time) int {
	if addr == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	if p := c.peers[addr.String()]; p != nil {
		for _, at := range p.arrivals {
			if at.After(t) {
				n++
			}
		}
	}
	return n
}

// Close stops the writer (what it had not sent is dropped) and closes the socket.
func (c *delayedConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	return c.udp.Close()
}

func (c *delayedConn) LocalAddr() net.Addr                { return c.udp.LocalAddr() }
func (c *delayedConn) SetDeadline(t time.Time) error      { return c.udp.SetDeadline(t) }
func (c *delayedConn) SetReadDeadline(t time.Time) error  { return c.udp.SetReadDeadline(t) }
func (c *delayedConn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (c *delayedConn) SetReadBuffer(n int) error  { return c.udp.SetReadBuffer(n) }
func (c *delayedConn) SetWriteBuffer(n int) error { return c.udp.SetWriteBuffer(n) }
