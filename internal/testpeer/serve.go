package testpeer

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// closeWait bounds how long [Server.Close] waits for the handlers, once it has closed their
// connections.
const closeWait = 10 * time.Second

// Server is a loopback TCP server started by [Serve]: it runs a handler for each connection
// it accepts, in a goroutine of its own, until it is closed.
type Server struct {
	t      TB
	ln     net.Listener
	cfg    *tls.Config
	handle func(n int, c net.Conn)
	wg     sync.WaitGroup // the accept loop and the handlers
	once   sync.Once      // closes the server

	mu     sync.Mutex // guards the following
	conns  map[net.Conn]struct{}
	n      int // connections accepted
	closed bool
}

// Serve listens on 127.0.0.1:0 and calls handle for each connection it accepts, in a
// goroutine of its own, with the connection's accept number n (from 1). With cfg, the
// connection is a [tls.Server] over the TCP connection, its handshake not yet done.
//
// The TCP connection is closed once handle returns (without a close_notify: a handler that
// wants one sent closes the *tls.Conn itself). The server is closed when the test ends: see
// [Server.Close].
func Serve(t TB, cfg *tls.Config, handle func(n int, c net.Conn)) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testpeer: %v", err)
	}
	return ServeListener(t, ln, cfg, handle)
}

// ServeListener is [Serve] on ln, which the server owns from then on: a listener on another
// loopback address (127.0.0.2, ...), say.
func ServeListener(t TB, ln net.Listener, cfg *tls.Config, handle func(n int, c net.Conn)) *Server {
	s := &Server{t: t, ln: ln, cfg: cfg, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	// The accept loop: it ends when the listener is closed.
	go func() {
		defer s.wg.Done()
		s.acceptLoop()
	}()
	t.Cleanup(s.Close)
	return s
}

func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// A transient error (EMFILE...): back off briefly; Close ends the loop.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.n++
		n := s.n
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		// One connection: the handler, then the connection's close.
		go func() {
			defer s.wg.Done()
			defer s.forget(c)
			hc := c
			if s.cfg != nil {
				hc = tls.Server(c, s.cfg)
			}
			s.handle(n, hc)
		}()
	}
}

// forget closes c, whose handler returned.
func (s *Server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Addr returns the address the server listens on, "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Accepts returns how many connections the server accepted so far.
func (s *Server) Accepts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Close closes the listener and every connection whose handler still runs, then waits for
// the handlers to return: handlers must return once their connection is closed. It fails the
// test if one has not within 10 seconds. Close is idempotent; the test's cleanup calls it.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]net.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.ln.Close()
		for _, c := range conns {
			c.Close()
		}
		done := make(chan struct{})
		// Waits for the accept loop and the handlers; it outlives Close only if a handler
		// hangs, which the test is told.
		go func() {
			s.wg.Wait()
			close(done)
		}()
		timer := time.NewTimer(closeWait)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			s.t.Errorf("testpeer: a handler of the server on %s still runs %v after Close", s.Addr(), closeWait)
		}
	})
}
