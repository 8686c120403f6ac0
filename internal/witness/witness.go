// Package witness is a loopback HTTP/1.1 server, plain TCP or TLS, that
// reports per connection exactly how the client ended it on the wire: TLS
// close_notify or not, then TCP FIN or RST.
//
// endwell promises how connections end; tests prove it from the outside by
// pointing a client at a witness [Server] and reading its [ConnReport]s:
//
//	s := witness.New(witness.Options{TLS: true})
//	if err := s.Start(); err != nil { ... }
//	defer s.Close()
//	// ... the client talks to s.URL() and closes ...
//	reps, err := s.WaitConns(ctx, 1)
//	r := reps[0]
//	// The client sent close_notify, then FIN:
//	//	r.CloseNotifyReceived && r.ClientEnd == witness.EndFIN
//	// The client hung up without close_notify (FIN or RST):
//	//	!r.CloseNotifyReceived && r.ClientEnd != witness.EndOpen
//	// r.ClientEnding() says the same in words: "close_notify+FIN",
//	// "FIN, no close_notify", "RST, no close_notify", ...
//
// crypto/tls returns io.EOF both for a received close_notify and for a bare
// TCP FIN at a record boundary. The witness tells them apart by watching the
// raw connection under TLS: tls reporting EOF while the raw connection has not
// hit EOF means close_notify arrived. A dedicated goroutine reads every
// connection at all times (unless [Options.NoRead] says otherwise), so a
// close_notify or an RST is seen even while a handler is writing.
//
// The server listens on 127.0.0.1 only. It is also the embedded server of
// cmd/endwell.
package witness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// Action is what the server does after a [Handler] returns, or when
// [Options.IdleClose] fires.
type Action int

const (
	// Auto keeps the connection alive, unless the request asked to close
	// (Connection: close, HTTP/1.0), a response written with the [Conn]
	// helpers carried Connection: close, or the request expected
	// 100-continue and got neither a 100 nor a read of its body: then it is
	// CloseGraceful.
	Auto Action = iota
	// KeepAlive discards the rest of the request body and reads the next
	// request.
	KeepAlive
	// CloseGraceful sends close_notify (TLS) then FIN, reads until the
	// client's FIN or RST within [Options.DrainTimeout], then closes.
	CloseGraceful
	// CloseFIN sends FIN without close_notify, then reads like CloseGraceful.
	CloseFIN
	// CloseRST resets the connection (SO_LINGER 0, then close).
	CloseRST
	// Hang neither reads requests nor writes: the connection stays open until
	// the client ends it, [Options.ConnTimeout] runs out or [Server.Close].
	Hang
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Auto:
		return "auto"
	case KeepAlive:
		return "keep-alive"
	case CloseGraceful:
		return "close graceful"
	case CloseFIN:
		return "close FIN"
	case CloseRST:
		return "close RST"
	case Hang:
		return "hang"
	}
	return "Action(?)"
}

// CloseNotifyAnswer is what the server does when the client's close_notify
// arrives and the server has not begun ending the connection itself.
type CloseNotifyAnswer int

const (
	// AnswerCloseNotify answers with close_notify and FIN, then reads until
	// the client's FIN or RST within [Options.DrainTimeout]. It is the zero
	// value: the well-behaved peer.
	AnswerCloseNotify CloseNotifyAnswer = iota
	// AnswerNone sends nothing and keeps the socket open until the client
	// sends FIN or RST (or [Options.ConnTimeout] runs out).
	AnswerNone
	// AnswerSendData keeps writing application data (1 KiB every 10 ms)
	// until the client sends FIN or RST, a write fails, or
	// [Options.DrainTimeout] runs out.
	AnswerSendData
	// AnswerRST resets the connection.
	AnswerRST
)

// IdleClose makes the server end a connection that has waited for a request
// for After. The zero value never does.
type IdleClose struct {
	// After is how long a connection may wait for its next request. Zero
	// means forever.
	After time.Duration
	// Send is written before closing: an unsolicited response such as
	// [Response408], or garbage. Nil sends nothing.
	Send []byte
	// Action is how the server then ends the connection: CloseGraceful,
	// CloseFIN or CloseRST; any other value, zero (Auto) included, means
	// CloseGraceful.
	Action Action
}

// Response408 is an unsolicited "408 Request Timeout" response, for
// [IdleClose.Send].
var Response408 = []byte("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

// Options configure a [Server]. The zero value is a plain TCP server that
// answers every request with "200 OK" and body "ok\n", keeps connections
// alive and ends them well.
type Options struct {
	// TLS serves TLS with a self-signed certificate; see
	// [Server.ClientTLSConfig].
	TLS bool
	// NextProtos are the ALPN protocols offered. Nil means ["http/1.1"].
	NextProtos []string
	// TLSMaxVersion caps the TLS version, e.g. tls.VersionTLS12. Zero means
	// the crypto/tls default.
	TLSMaxVersion uint16

	// Handler answers requests; it is called from each connection's
	// goroutine, for several connections at once. Nil means 200 with body
	// "ok\n" and the Auto action.
	Handler Handler

	// IdleClose makes the server end idle connections. The zero value never does.
	IdleClose IdleClose
	// OnCloseNotify is how the server answers the client's close_notify.
	// Zero means AnswerCloseNotify.
	OnCloseNotify CloseNotifyAnswer
	// NoRead makes the server stop reading after NoReadAfter requests (zero:
	// right after the TLS handshake or accept), with a small receive buffer,
	// so that the client's writes block. The connection then stays open
	// until [Options.ConnTimeout] or [Server.Close]; the client's FIN or RST
	// is not seen.
	NoRead bool
	// NoReadAfter is how many requests a NoRead server reads and answers
	// before it stops reading. Zero means none: it stops right after the
	// handshake (TLS) or accept.
	NoReadAfter int
	// HandshakeStall makes the server accept TCP and never complete the TLS
	// handshake: it reads and discards what the client sends until the
	// client goes. In plain TCP mode it reads and discards, never answering.
	HandshakeStall bool

	// ConnTimeout bounds a connection's whole life, handshake included:
	// when it runs out the server closes the socket (ServerEndTimeout).
	// Zero means 60 seconds.
	ConnTimeout time.Duration
	// DrainTimeout bounds how long the server reads for the client's FIN or
	// RST once close_notify has been exchanged or the server has closed.
	// Zero means 5 seconds.
	DrainTimeout time.Duration

	// OnConnEnd, if set, is called with each connection's final report,
	// from the connection's goroutine, after the report is visible to
	// [Server.WaitConns]. It must not call [Server.Close].
	OnConnEnd func(ConnReport)
}

const (
	defaultConnTimeout  = 60 * time.Second
	defaultDrainTimeout = 5 * time.Second
	// noReadBuffer is SO_RCVBUF for NoRead connections.
	noReadBuffer = 4 << 10
)

// errServerClosed is the cancel cause of a Server's context after Close.
var errServerClosed = errors.New("witness: server closed")

// Server is a witness server. Create it with [New], then [Server.Start].
// Its methods are safe for concurrent use.
type Server struct {
	opts      Options // with defaults filled in
	tlsConfig *tls.Config
	ln        net.Listener
	ctx       context.Context // cancelled with errServerClosed by Close
	cancel    context.CancelCauseFunc
	nextID    atomic.Int64
	wg        sync.WaitGroup // the accept loop and connection goroutines
	closeOnce sync.Once

	mu      sync.Mutex // guards the fields below
	conns   map[int64]*conn
	ended   []*conn       // in end order
	changed chan struct{} // closed and replaced whenever a connection ends
	closed  bool
}

// New returns a server configured by opts; it does not listen until
// [Server.Start].
func New(opts Options) *Server {
	if opts.NextProtos == nil {
		opts.NextProtos = []string{"http/1.1"}
	}
	if opts.Handler == nil {
		opts.Handler = defaultHandler
	}
	if opts.ConnTimeout <= 0 {
		opts.ConnTimeout = defaultConnTimeout
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = defaultDrainTimeout
	}
	if opts.IdleClose.Action == Auto {
		opts.IdleClose.Action = CloseGraceful
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Server{
		opts:    opts,
		ctx:     ctx,
		cancel:  cancel,
		conns:   make(map[int64]*conn),
		changed: make(chan struct{}),
	}
}

// defaultHandler answers 200 "ok\n".
func defaultHandler(c *Conn, r *http.Request) Action {
	c.Respond(http.StatusOK, http.Header{"Content-Type": {"text/plain"}}, "ok\n")
	return Auto
}

// Start listens on 127.0.0.1 on a free port and starts serving. Call it
// once.
func (s *Server) Start() error {
	if s.opts.TLS {
		cert, err := testpeer.LoadCert()
		if err != nil {
			return err
		}
		s.tlsConfig = &tls.Config{
			Certificates: []tls.Certificate{cert.Certificate},
			NextProtos:   s.opts.NextProtos,
			MaxVersion:   s.opts.TLSMaxVersion,
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop() // accepts connections until Close
	return nil
}

// Addr returns the listening address, "127.0.0.1:port". It must not be
// called before [Server.Start].
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL returns "http://127.0.0.1:port" or, with TLS, "https://127.0.0.1:port".
// It must not be called before [Server.Start].
func (s *Server) URL() string {
	if s.opts.TLS {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// serverName is the name [Server.ClientTLSConfig] verifies. The certificate is
// testpeer's, made once per process: it is also valid for "localhost" and "::1".
const serverName = "127.0.0.1"

// ClientTLSConfig returns a new client configuration that trusts the
// witness certificate, with ServerName "127.0.0.1".
func (s *Server) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.CertPool(), ServerName: serverName}
}

// CertPool returns a new pool holding the witness certificate (nil if the
// certificate could not be generated).
func (s *Server) CertPool() *x509.CertPool {
	cert, err := testpeer.LoadCert()
	if err != nil {
		return nil
	}
	return cert.Pool()
}

// Close stops listening, closes every live connection (ServerEndShutdown)
// and waits for all of the server's goroutines, handlers and OnConnEnd
// calls included. Handlers must return once [Conn.Context] is done.
// Close is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		var live []*conn
		for _, c := range s.conns {
			live = append(live, c)
		}
		s.mu.Unlock()
		s.cancel(errServerClosed)
		if s.ln != nil {
			s.ln.Close()
		}
		for _, c := range live {
			c.abort(ServerEndShutdown)
		}
	})
	s.wg.Wait()
	return nil
}

// acceptLoop accepts connections and starts a goroutine for each.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (EMFILE...): back off briefly.
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c.id] = c
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve() // serves the connection until it ends
	}
}

// connEnded records c as ended and wakes WaitConns.
func (s *Server) connEnded(c *conn) {
	s.mu.Lock()
	s.ended = append(s.ended, c)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Reports returns a snapshot of every connection's report, live and ended,
// in ID order.
func (s *Server) Reports() []ConnReport {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	slices.SortFunc(conns, func(a, b *conn) int { return int(a.id - b.id) })
	reps := make([]ConnReport, len(conns))
	for i, c := range conns {
		reps[i] = c.report()
	}
	return reps
}

// Report returns a snapshot of connection id's report, and whether it exists.
func (s *Server) Report(id int64) (ConnReport, bool) {
	s.mu.Lock()
	c := s.conns[id]
	s.mu.Unlock()
	if c == nil {
		return ConnReport{}, false
	}
	return c.report(), true
}

// WaitConns waits until n connections have ended (the client's FIN or RST
// was seen, or the server closed the socket) and returns the final reports
// of the first n to end, in end order. If ctx is done first it returns the
// reports of those ended so far and the context's cause.
func (s *Server) WaitConns(ctx context.Context, n int) ([]ConnReport, error) {
	for {
		s.mu.Lock()
		ended := s.ended[:min(n, len(s.ended))]
		ch := s.changed
		s.mu.Unlock()
		if len(ended) >= n {
			return reports(ended), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return reports(ended), context.Cause(ctx)
		}
	}
}

// reports snapshots the reports of conns.
func reports(conns []*conn) []ConnReport {
	reps := make([]ConnReport, len(conns))
	for i, c := range conns {
		reps[i] = c.report()
	}
	return reps
}
