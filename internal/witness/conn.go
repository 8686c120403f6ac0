package witness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// conn is the server side of one connection.
//
// Goroutines: serve (one per connection, owned by Server.wg) parses requests
// and runs handlers; readLoop (owned by serve, which waits on readerDone)
// reads the connection at all times and classifies how the client ended it;
// at most one answer goroutine (owned by serve, which waits on answerDone)
// answers the client's close_notify. Every read has a deadline
// (Options.ConnTimeout, then Options.DrainTimeout once the ending has begun)
// and abort closes the socket, which unblocks them all.
type conn struct {
	s        *Server
	id       int64
	raw      *rawConn
	tcp      *net.TCPConn // the accepted connection, for CloseWrite and SetLinger; nil if not TCP
	tls      *tls.Conn    // nil in plain TCP mode
	w        io.Writer    // tls, or raw in plain TCP mode
	deadline time.Time    // the end of the connection's life (Options.ConnTimeout)

	// ctx is done when the connection is torn down: its deadline passed,
	// Server.Close, or abort.
	ctx    context.Context
	cancel context.CancelFunc

	in            *inbox
	readerStarted bool          // set by serve before starting readLoop
	readerDone    chan struct{} // closed when readLoop returns
	answerDone    chan struct{} // closed when the answer goroutine returns; set by readLoop before readerDone closes, nil if none
	stop          chan struct{} // closed to make readLoop stop reading (NoRead)
	stopOnce      sync.Once
	clientDone    chan struct{} // closed when the client sent close_notify, FIN or RST
	clientOnce    sync.Once

	mu  sync.Mutex // guards rep; ClientEnd and ClientEndAt come from raw
	rep ConnReport
}

func newConn(s *Server, nc net.Conn) *conn {
	now := time.Now()
	raw := &rawConn{Conn: nc}
	c := &conn{
		s:          s,
		id:         s.nextID.Add(1),
		raw:        raw,
		w:          raw,
		deadline:   now.Add(s.opts.ConnTimeout),
		in:         newInbox(),
		readerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		clientDone: make(chan struct{}),
	}
	c.tcp, _ = nc.(*net.TCPConn)
	c.ctx, c.cancel = context.WithDeadline(s.ctx, c.deadline)
	if s.opts.TLS {
		c.tls = tls.Server(raw, s.tlsConfig)
		c.w = c.tls
	}
	if s.opts.NoRead && c.tcp != nil {
		c.tcp.SetReadBuffer(noReadBuffer)
	}
	c.rep = ConnReport{
		ID:         c.id,
		RemoteAddr: nc.RemoteAddr().String(),
		TLS:        s.opts.TLS,
		Accepted:   now,
	}
	return c
}

// report returns a snapshot of the connection's report.
func (c *conn) report() ConnReport {
	c.mu.Lock()
	r := c.rep
	r.RequestLines = slices.Clone(r.RequestLines)
	c.mu.Unlock()
	r.ClientEnd, r.ClientEndAt = c.raw.clientEnd()
	return r
}

// serve runs the connection from accept to its end.
func (c *conn) serve() {
	defer c.s.wg.Done()
	defer c.finish()
	o := &c.s.opts
	c.raw.SetDeadline(c.deadline)
	if o.HandshakeStall {
		c.discard()
		return
	}
	if c.tls != nil && !c.handshake() {
		return
	}
	if o.NoRead && o.NoReadAfter <= 0 {
		c.hang()
		return
	}
	c.readerStarted = true
	go c.readLoop() // reads the connection at all times, watching for close_notify, FIN and RST
	br := bufio.NewReader(inboxReader{c})
	for c.serveRequest(br) {
	}
}

// discard reads and drops everything until the client goes (HandshakeStall).
func (c *conn) discard() {
	c.drainRaw(false)
	if e, _ := c.raw.clientEnd(); e != EndOpen {
		c.beginServerEnd(ServerEndAfterClient)
		return
	}
	c.abortOnDone()
}

// handshake runs the TLS handshake and reports whether it succeeded. On
// failure it reads until the client's FIN or RST (bounded by DrainTimeout).
func (c *conn) handshake() bool {
	err := c.tls.HandshakeContext(c.ctx)
	if err == nil {
		c.mu.Lock()
		c.rep.Proto = c.tls.ConnectionState().NegotiatedProtocol
		c.mu.Unlock()
		return true
	}
	if c.ctx.Err() != nil || isTimeout(err) {
		c.abortOnDone()
		return false
	}
	c.fail(err)
	var oe *net.OpError
	if e, _ := c.raw.clientEnd(); e != EndOpen || errors.As(err, &oe) && oe.Op == "remote error" {
		// The client went away, or refused the handshake with an alert.
		c.beginServerEnd(ServerEndAfterClient)
	} else {
		c.beginServerEnd(ServerEndError)
	}
	c.raw.SetReadDeadline(c.drainDeadline())
	c.drainRaw(false)
	return false
}

// serveRequest reads one request, runs the handler and carries out its
// Action. It reports whether to read another request.
func (c *conn) serveRequest(br *bufio.Reader) bool {
	o := &c.s.opts
	if o.NoRead && c.requests() >= o.NoReadAfter {
		c.stopReading()
		c.hang()
		return false
	}
	if o.IdleClose.After > 0 && br.Buffered() == 0 && !c.waitRequest(o.IdleClose.After) {
		return false
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		switch {
		case c.ctx.Err() != nil || errors.Is(err, errConnAborted):
			c.abortOnDone()
		case c.in.closed():
			// The client ended the connection (or the reader stopped);
			// readLoop has recorded how.
		default:
			c.fail(err)
			c.w.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
			c.closeServer(CloseGraceful, ServerEndError)
		}
		return false
	}
	c.mu.Lock()
	c.rep.Requests++
	n := c.rep.Requests
	c.rep.RequestLines = append(c.rep.RequestLines, req.Method+" "+req.RequestURI)
	c.mu.Unlock()
	if o.NoRead && n >= o.NoReadAfter && req.Body == http.NoBody {
		// Stop before answering: once the client has the response it may send anything
		// (its close_notify, say), and that must find the reader already stopped.
		c.stopReading()
	}

	hc := &Conn{c: c, req: req, n: n}
	if expects100(req) && req.Body != http.NoBody {
		req.Body = &expectBody{ReadCloser: req.Body, hc: hc}
	}
	body := req.Body
	a := o.Handler(hc, req)
	if c.ctx.Err() != nil {
		c.abortOnDone()
		return false
	}
	if a == Auto {
		a = hc.autoAction()
	}
	switch a {
	case KeepAlive:
		if _, err := io.Copy(io.Discard, body); err != nil {
			if c.ctx.Err() != nil {
				c.abortOnDone()
			}
			return false
		}
		return true
	case CloseFIN:
		c.closeServer(CloseFIN, ServerEndFIN)
	case CloseRST:
		c.closeServer(CloseRST, ServerEndRST)
	case Hang:
		c.hang()
	default:
		c.closeServer(CloseGraceful, ServerEndGraceful)
	}
	return false
}

// waitRequest waits up to d for the next request's first bytes. If d runs
// out it ends the connection as Options.IdleClose says and returns false.
func (c *conn) waitRequest(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for !c.in.pending() {
		select {
		case <-c.in.ready:
			// Re-check: inbox.read re-checks too, so taking the signal is safe.
		case <-t.C:
			ic := c.s.opts.IdleClose
			if len(ic.Send) > 0 {
				c.w.Write(ic.Send)
			}
			switch ic.Action {
			case CloseFIN:
				c.closeServer(CloseFIN, ServerEndFIN)
			case CloseRST:
				c.closeServer(CloseRST, ServerEndRST)
			default:
				c.closeServer(CloseGraceful, ServerEndGraceful)
			}
			return false
		case <-c.ctx.Done():
			c.abortOnDone()
			return false
		}
	}
	return true
}

// hang waits until the client ends the connection or the connection is
// torn down.
func (c *conn) hang() {
	var readerDone <-chan struct{} // nil, blocking forever, if no reader runs
	if c.readerStarted {
		readerDone = c.readerDone
	}
	select {
	case <-readerDone:
	case <-c.ctx.Done():
		c.abortOnDone()
	}
}

// requests returns how many requests have been read.
func (c *conn) requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rep.Requests
}

// stopReading makes readLoop stop reading: it is woken by a read deadline
// in the past and parks until the connection is torn down.
func (c *conn) stopReading() {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.raw.SetReadDeadline(time.Unix(1, 0))
	})
}

// stopped reports whether stopReading was called.
func (c *conn) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// readLoop reads the connection into the inbox until the client ends it,
// and records how.
func (c *conn) readLoop() {
	defer close(c.readerDone)
	var src io.Reader = c.raw
	if c.tls != nil {
		src = c.tls
	}
	buf := make([]byte, 32<<10)
	for {
		if c.stopped() {
			c.park()
			return
		}
		n, err := src.Read(buf)
		if c.stopped() {
			// Stopped while this read was under way: what it returned arrived after the
			// server stopped reading, so the server never looks at it (a deadline in the
			// past does not always cut a read already in progress short).
			c.park()
			return
		}
		if n > 0 && !c.in.push(buf[:n], c.stop, c.ctx.Done()) {
			c.park()
			return
		}
		if err == nil {
			continue
		}
		if isTimeout(err) && c.stopped() {
			c.park()
			return
		}
		c.readEnded(err)
		return
	}
}

// park ends the inbox of a reader that stopped reading and waits until the
// connection is torn down.
func (c *conn) park() {
	if c.stopped() {
		c.in.close(errReaderStopped)
	} else {
		c.in.close(errConnAborted)
	}
	<-c.ctx.Done()
}

// readEnded classifies the error that ended readLoop's reads.
func (c *conn) readEnded(err error) {
	if c.tls != nil && err == io.EOF && !c.raw.readEOF.Load() {
		// tls saw EOF but TCP did not: that was close_notify.
		c.closeNotifyReceived()
		return
	}
	e, _ := c.raw.clientEnd()
	switch {
	case e == EndFIN:
		c.in.close(io.EOF)
		c.markClientDone()
	case e == EndRST:
		c.in.close(err)
		c.markClientDone()
	case c.raw.closed.Load() || isTimeout(err) || errors.Is(err, net.ErrClosed):
		// The server ended it: abort, or a deadline.
		c.in.close(errConnAborted)
	default:
		// A TLS error: a fatal alert, or bytes that are not TLS.
		c.fail(err)
		c.in.close(err)
		c.markClientDone()
		c.raw.SetReadDeadline(c.drainDeadline())
		c.drainRaw(false)
	}
}

// closeNotifyReceived records the client's close_notify, answers it as
// Options.OnCloseNotify says and reads the raw connection until the
// client's FIN or RST.
func (c *conn) closeNotifyReceived() {
	c.mu.Lock()
	c.rep.CloseNotifyReceived = true
	c.rep.CloseNotifyAt = time.Now()
	c.mu.Unlock()
	c.in.close(io.EOF)
	c.markClientDone()
	switch c.s.opts.OnCloseNotify {
	case AnswerNone:
		// Keep the socket open until the client goes: the read deadline
		// stays at the end of the connection's life.
		c.beginServerEnd(ServerEndAfterClient)
	case AnswerRST:
		if c.beginServerEnd(ServerEndAfterClient) {
			c.resetNow()
		}
	case AnswerSendData:
		if c.beginServerEnd(ServerEndAfterClient) {
			c.raw.SetReadDeadline(c.drainDeadline())
			c.answerDone = make(chan struct{})
			go c.sendAfterCloseNotify() // streams data after the client's close_notify
		}
	default:
		if c.beginServerEnd(ServerEndAfterClient) {
			c.raw.SetReadDeadline(c.drainDeadline())
			c.answerDone = make(chan struct{})
			// Answers close_notify with close_notify and FIN; its own
			// goroutine, because a handler blocked in Write holds the TLS
			// write lock and this reader must keep reading.
			go func() {
				defer close(c.answerDone)
				c.halfClose(true)
			}()
		}
	}
	c.drainRaw(true)
}

// sendAfterCloseNotify writes application data every 10 ms until the client
// goes, a write fails, DrainTimeout runs out or the connection is torn down.
func (c *conn) sendAfterCloseNotify() {
	defer close(c.answerDone)
	chunk := bytes.Repeat([]byte("A"), 1024)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	stop := time.NewTimer(c.s.opts.DrainTimeout)
	defer stop.Stop()
	for {
		if _, err := c.w.Write(chunk); err != nil {
			return
		}
		select {
		case <-tick.C:
		case <-c.readerDone:
			return
		case <-stop.C:
			return
		case <-c.ctx.Done():
			return
		}
	}
}

// drainRaw reads the raw connection until an error: the client's FIN or
// RST, a deadline, or the socket closed. With count, it adds what it reads
// to BytesAfterCloseNotify.
func (c *conn) drainRaw(count bool) {
	buf := make([]byte, 4096)
	for {
		n, err := c.raw.Read(buf)
		if count && n > 0 {
			c.mu.Lock()
			c.rep.BytesAfterCloseNotify += int64(n)
			c.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// markClientDone closes clientDone once.
func (c *conn) markClientDone() {
	c.clientOnce.Do(func() { close(c.clientDone) })
}

// fail records err as the connection's error unless one is recorded.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.rep.Err == nil {
		c.rep.Err = err
	}
	c.mu.Unlock()
}

// beginServerEnd records why the server ends the connection. The first
// caller wins and gets true; the others get false and must not act.
func (c *conn) beginServerEnd(why ServerEnd) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rep.ServerEnd != ServerEndNone {
		return false
	}
	e, _ := c.raw.clientEnd()
	c.rep.ServerEnd = why
	c.rep.ServerEndAt = time.Now()
	c.rep.ServerClosedFirst = why != ServerEndAfterClient && e == EndOpen && !c.rep.CloseNotifyReceived
	return true
}

// closeServer begins the server's ending with action a, recorded as why,
// unless the ending has already begun.
func (c *conn) closeServer(a Action, why ServerEnd) {
	if !c.beginServerEnd(why) {
		return
	}
	switch a {
	case CloseRST:
		c.resetNow()
	case CloseFIN:
		c.halfClose(false)
	default:
		c.halfClose(true)
	}
}

// halfClose sends close_notify (if notify and TLS) and FIN, then bounds the
// reads that wait for the client's answer by DrainTimeout.
func (c *conn) halfClose(notify bool) {
	if notify && c.tls != nil {
		// tls.Conn.CloseWrite sends close_notify only (and then sets a
		// write deadline in the past).
		if err := c.tls.CloseWrite(); err == nil {
			c.mu.Lock()
			c.rep.ServerSentCloseNotify = true
			c.mu.Unlock()
		}
	}
	c.sendFIN()
	c.raw.SetReadDeadline(c.drainDeadline())
}

// sendFIN half-closes TCP.
func (c *conn) sendFIN() {
	if c.tcp == nil {
		return
	}
	if err := c.tcp.CloseWrite(); err == nil {
		c.mu.Lock()
		c.rep.ServerSentFIN = true
		c.mu.Unlock()
	}
}

// resetNow closes the socket with SO_LINGER 0, which sends an RST.
func (c *conn) resetNow() {
	if c.tcp != nil {
		c.tcp.SetLinger(0)
	}
	c.raw.Close()
	c.mu.Lock()
	c.rep.ServerSentRST = true
	c.mu.Unlock()
}

// drainDeadline is when reads waiting for the client's end give up.
func (c *conn) drainDeadline() time.Time {
	d := time.Now().Add(c.s.opts.DrainTimeout)
	if d.After(c.deadline) {
		return c.deadline
	}
	return d
}

// abort records why, tears the connection down and closes the socket,
// which unblocks every read and write.
func (c *conn) abort(why ServerEnd) {
	c.beginServerEnd(why)
	c.cancel()
	c.raw.Close()
}

// abortOnDone aborts with the reason the connection's context gives:
// Server.Close or the end of its life.
func (c *conn) abortOnDone() {
	if c.s.ctx.Err() != nil {
		c.abort(ServerEndShutdown)
	} else {
		c.abort(ServerEndTimeout)
	}
}

// wait waits for ch; if the connection is torn down first it aborts, which
// makes ch close soon.
func (c *conn) wait(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-c.ctx.Done():
		c.abortOnDone()
		<-ch
	}
}

// finish waits for the connection's goroutines, closes the socket and
// publishes the final report.
func (c *conn) finish() {
	if c.readerStarted {
		c.wait(c.readerDone)
	}
	if c.answerDone != nil {
		c.wait(c.answerDone)
	}
	c.mu.Lock()
	e, _ := c.raw.clientEnd()
	clientFirst := e != EndOpen || c.rep.CloseNotifyReceived
	hasErr := c.rep.Err != nil
	c.mu.Unlock()
	switch {
	case clientFirst:
		c.beginServerEnd(ServerEndAfterClient)
	case hasErr:
		c.beginServerEnd(ServerEndError)
	case c.s.ctx.Err() != nil:
		c.beginServerEnd(ServerEndShutdown)
	default:
		c.beginServerEnd(ServerEndTimeout)
	}
	if !c.raw.closed.Load() {
		c.mu.Lock()
		sent := c.rep.ServerSentFIN || c.rep.ServerSentRST
		c.mu.Unlock()
		if !sent && e != EndRST {
			c.sendFIN()
		}
		c.raw.Close()
	}
	c.cancel()
	c.mu.Lock()
	c.rep.Ended = time.Now()
	c.mu.Unlock()
	c.s.connEnded(c)
	if f := c.s.opts.OnConnEnd; f != nil {
		f(c.report())
	}
}

// inboxReader reads a connection's inbox for the request parser.
type inboxReader struct{ c *conn }

func (r inboxReader) Read(p []byte) (int, error) {
	return r.c.in.read(p, r.c.ctx.Done())
}
