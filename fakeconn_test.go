package endwell_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// fakeNet makes in-memory connections for tests inside a testing/synctest bubble: each pair
// is a full-duplex pipe with buffered directions, half-close (CloseWrite) and deadlines.
// A fake server goroutine answers HTTP/1.1 requests on the other end.
type fakeNet struct {
	mu    sync.Mutex // guards the following
	dials int
	ends  []*fakeServerConn
	// silent makes the servers never answer the client's goodbye: at its FIN they keep
	// their side open until the client closes the connection.
	silent bool
	// respond writes the response to a request; nil means 200 with a short body.
	respond func(w io.Writer, r *http.Request)
}

func (n *fakeNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c2s, s2c := newHalfPipe(), newHalfPipe()
	client := &fakeConn{r: s2c, w: c2s, local: fakeAddr("client"), remote: fakeAddr(addr)}
	server := &fakeConn{r: c2s, w: s2c, local: fakeAddr(addr), remote: fakeAddr("client")}
	sc := &fakeServerConn{conn: server, done: make(chan struct{})}
	n.mu.Lock()
	n.dials++
	n.ends = append(n.ends, sc)
	n.mu.Unlock()
	// The fake server's connection loop: it exits at the client's FIN or close.
	go n.serve(sc)
	return client, nil
}

func (n *fakeNet) dialCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dials
}

// fakeServerConn is the server end of one fake connection and what it saw.
type fakeServerConn struct {
	conn     *fakeConn
	done     chan struct{} // closed when the server loop exits
	requests int
	sawFIN   bool // the client half-closed (CloseWrite) before closing
}

func (n *fakeNet) serve(sc *fakeServerConn) {
	defer close(sc.done)
	defer sc.conn.Close()
	br := bufio.NewReader(sc.conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			sc.sawFIN = err == io.EOF
			if n.silent {
				sc.conn.waitClosed()
			}
			sc.conn.CloseWrite()
			return
		}
		io.Copy(io.Discard, req.Body)
		sc.requests++
		if n.respond != nil {
			n.respond(sc.conn, req)
		} else {
			io.WriteString(sc.conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) + ":1" }

// halfPipe is one direction of a fake connection.
type halfPipe struct {
	mu     sync.Mutex // guards the following
	cond   *sync.Cond
	buf    []byte
	closed bool // the writer closed: readers see EOF once buf is empty
	broken bool // the reader closed: writers fail
}

func newHalfPipe() *halfPipe {
	p := &halfPipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// fakeConn is one end of a fake connection.
type fakeConn struct {
	r, w          *halfPipe
	local, remote net.Addr

	dmu          sync.Mutex // guards the deadlines and timers
	readDeadline time.Time
	readTimer    *time.Timer
	closeOnce    sync.Once
}

func (c *fakeConn) Read(p []byte) (int, error) {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.buf) == 0 && !r.closed && !r.broken {
		if c.readExpired() {
			return 0, os.ErrDeadlineExceeded
		}
		r.cond.Wait()
	}
	if r.broken {
		return 0, net.ErrClosed
	}
	if len(r.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// waitClosed blocks until the other end closes the connection for good.
func (c *fakeConn) waitClosed() {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for !w.broken {
		w.cond.Wait()
	}
}

func (c *fakeConn) readExpired() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return !c.readDeadline.IsZero() && !time.Now().Before(c.readDeadline)
}

func (c *fakeConn) Write(p []byte) (int, error) {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.broken {
		return 0, net.ErrClosed
	}
	w.buf = append(w.buf, p...)
	w.cond.Broadcast()
	return len(p), nil
}

// CloseWrite sends the fake FIN.
func (c *fakeConn) CloseWrite() error {
	w := c.w
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	return nil
}

func (c *fakeConn) Close() error {
	c.closeOnce.Do(func() {
		c.CloseWrite()
		r := c.r
		r.mu.Lock()
		r.broken = true
		r.cond.Broadcast()
		r.mu.Unlock()
		c.dmu.Lock()
		if c.readTimer != nil {
			c.readTimer.Stop()
		}
		c.dmu.Unlock()
	})
	return nil
}

func (c *fakeConn) LocalAddr() net.Addr  { return c.local }
func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }

func (c *fakeConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	c.readDeadline = t
	if c.readTimer != nil {
		c.readTimer.Stop()
		c.readTimer = nil
	}
	if !t.IsZero() {
		wake := func() {
			c.r.mu.Lock()
			c.r.cond.Broadcast()
			c.r.mu.Unlock()
		}
		if d := time.Until(t); d > 0 {
			c.readTimer = time.AfterFunc(d, wake)
		} else {
			defer wake()
		}
	}
	c.dmu.Unlock()
	return nil
}

// SetWriteDeadline is accepted and ignored: fake writes never block.
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
