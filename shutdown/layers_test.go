package shutdown

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// TestTCPLayerFake runs the TCP layer inside a bubble over a pipe whose far end plays the
// peer: the budget, the drain and its cap.
func TestTCPLayerFake(t *testing.T) {
	tests := []struct {
		name     string
		peer     func(p net.Conn) // runs in its own goroutine; nil: never writes, never closes
		maxDrain int64
		outcome  Outcome
		err      error
		drained  int64 // -1: more than maxDrain
		finRecv  bool
		elapsed  time.Duration
	}{
		{
			name:    "peer never sends FIN: cut at the budget",
			outcome: TimedOut, err: ErrBudget, elapsed: time.Second,
		},
		{
			name:    "peer sends a little, then FIN",
			peer:    func(p net.Conn) { p.Write(make([]byte, 1000)); time.Sleep(300 * time.Millisecond); p.Close() },
			outcome: Clean, drained: 1000, finRecv: true, elapsed: 300 * time.Millisecond,
		},
		{
			name:    "peer sends FIN at once",
			peer:    func(p net.Conn) { p.Close() },
			outcome: Clean, finRecv: true,
		},
		{
			name: "peer sends past the cap",
			peer: func(p net.Conn) {
				for range 1000 {
					if _, err := p.Write(make([]byte, 1024)); err != nil {
						return
					}
				}
			},
			maxDrain: 10 << 10,
			outcome:  Failed, err: ErrDrainLimit, drained: -1,
		},
		{
			name: "peer sends slowly past the budget",
			peer: func(p net.Conn) {
				time.Sleep(50 * time.Millisecond)
				for range 100 { // at 50 ms, 150 ms, ... 950 ms, then until closed
					if _, err := p.Write([]byte("x")); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			},
			outcome: TimedOut, err: ErrBudget, drained: 10, elapsed: time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, p := net.Pipe()
				hc := &halfConn{Conn: c}
				peerDone := make(chan struct{})
				go func() {
					defer close(peerDone)
					if tt.peer != nil {
						tt.peer(p)
					}
				}()
				defer func() { p.Close(); <-peerDone }()
				start := time.Now()
				r := Run(t.Context(), Job{Layers: []Layer{&TCP{Conn: Watch(hc), MaxDrain: tt.maxDrain}}, Mode: Graceful, Budget: time.Second})
				if got := time.Since(start); tt.elapsed > 0 && got != tt.elapsed {
					t.Errorf("elapsed: got %v, want %v", got, tt.elapsed)
				}
				if r.Outcome != tt.outcome {
					t.Errorf("outcome: got %v, want %v", r.Outcome, tt.outcome)
				}
				if !errors.Is(r.Err, tt.err) || (tt.err == nil && r.Err != nil) {
					t.Errorf("err: got %v, want %v", r.Err, tt.err)
				}
				if tt.outcome == TimedOut {
					wantForced(t, r, start.Add(time.Second), ErrBudget)
				}
				if !r.FINSent || !hc.finSent.Load() {
					t.Errorf("FIN sent: got %v (conn %v), want true", r.FINSent, hc.finSent.Load())
				}
				if r.FINReceived != tt.finRecv {
					t.Errorf("FIN received: got %v, want %v", r.FINReceived, tt.finRecv)
				}
				if tt.drained >= 0 && r.DrainBytes != tt.drained {
					t.Errorf("drained: got %v, want %v", r.DrainBytes, tt.drained)
				}
				if tt.drained < 0 && r.DrainBytes <= tt.maxDrain {
					t.Errorf("drained: got %v, want more than %v", r.DrainBytes, tt.maxDrain)
				}
				// The socket is closed.
				if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("write after teardown: got %v, want %v", err, io.ErrClosedPipe)
				}
			})
		})
	}
}

// TestTCPLayerCannotHalfClose: over a connection without CloseWrite the TCP layer fails,
// and still closes the socket.
func TestTCPLayerCannotHalfClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := net.Pipe()
		defer p.Close()
		r := Run(t.Context(), Job{Layers: []Layer{&TCP{Conn: Watch(c)}}, Mode: Graceful})
		if r.Outcome != Failed || !errors.Is(r.Err, errNoHalfClose) {
			t.Errorf("got %v, %v, want %v, %v", r.Outcome, r.Err, Failed, errNoHalfClose)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("write after teardown: got %v, want %v", err, io.ErrClosedPipe)
		}
	})
}

// pipeTLS makes a TLS connection over a pipe inside the bubble: the client end, watched,
// and the server end. Session tickets are off: over a pipe, the server's post-handshake
// tickets would block until the client reads.
func pipeTLS(t *testing.T) (client *tls.Conn, raw *Conn, hc *halfConn, server *tls.Conn) {
	t.Helper()
	c, s := net.Pipe()
	hc = &halfConn{Conn: c}
	raw = Watch(hc)
	client = tls.Client(raw, testClientConfig(t))
	scfg := testServerConfig(t)
	scfg.SessionTicketsDisabled = true
	server = tls.Server(s, scfg)
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return client, raw, hc, server
}

// TestTLSStackFake runs the TLS and TCP layers inside a bubble over a pipe.
func TestTLSStackFake(t *testing.T) {
	tests := []struct {
		name      string
		peer      func(s *tls.Conn) // runs in its own goroutine once the handshake is done
		outcome   Outcome
		sent      bool
		recv      bool
		finRecv   bool
		elapsed   time.Duration
		wantError error
	}{
		{
			name:    "peer never reads: close_notify blocks, cut at the budget",
			peer:    func(s *tls.Conn) {},
			outcome: TimedOut, elapsed: time.Second, wantError: ErrBudget,
		},
		{
			name: "peer answers close_notify and closes",
			peer: func(s *tls.Conn) {
				io.Copy(io.Discard, s) // until our close_notify
				s.CloseWrite()
				s.Close()
			},
			outcome: Clean, sent: true, recv: true, finRecv: true,
		},
		{
			name: "peer answers close_notify, keeps the connection open",
			peer: func(s *tls.Conn) {
				io.Copy(io.Discard, s)
				s.CloseWrite()
				io.Copy(io.Discard, s.NetConn()) // until we close
			},
			outcome: TimedOut, sent: true, recv: true, elapsed: time.Second, wantError: ErrBudget,
		},
		{
			name: "peer closes without close_notify",
			peer: func(s *tls.Conn) {
				io.Copy(io.Discard, s)
				s.NetConn().Close()
			},
			outcome: PeerSilent, sent: true, finRecv: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client, raw, _, server := pipeTLS(t)
				defer server.NetConn().Close()
				go tt.peer(server)
				start := time.Now()
				r := Run(t.Context(), Job{
					Layers: []Layer{&TLS{Conn: client, Raw: raw}, &TCP{Conn: raw, Drain: client}},
					Mode:   Graceful,
					Budget: time.Second,
				})
				if got := time.Since(start); got != tt.elapsed {
					t.Errorf("elapsed: got %v, want %v", got, tt.elapsed)
				}
				if r.Outcome != tt.outcome {
					t.Errorf("outcome: got %v, want %v", r.Outcome, tt.outcome)
				}
				if !errors.Is(r.Err, tt.wantError) || (tt.wantError == nil && r.Err != nil) {
					t.Errorf("err: got %v, want %v", r.Err, tt.wantError)
				}
				if r.CloseNotifySent != tt.sent || r.CloseNotifyReceived != tt.recv || r.FINReceived != tt.finRecv {
					t.Errorf("close_notify sent, received, FIN received: got %v, %v, %v, want %v, %v, %v",
						r.CloseNotifySent, r.CloseNotifyReceived, r.FINReceived, tt.sent, tt.recv, tt.finRecv)
				}
			})
		})
	}
}

// TestTLSAbortFake: an abort over TLS writes nothing: the peer reads a bare EOF.
func TestTLSAbortFake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client, raw, _, server := pipeTLS(t)
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(server.NetConn()) // raw bytes, until our close
			got <- b
		}()
		r := Run(t.Context(), Job{Layers: []Layer{&TLS{Conn: client, Raw: raw}, &TCP{Conn: raw, Drain: client}}, Mode: Abort})
		if b := <-got; !bytes.Equal(b, nil) {
			t.Errorf("peer read: got %d bytes, want none", len(b))
		}
		if r.Outcome != Aborted || r.CloseNotifySent || r.FINSent {
			t.Errorf("record: got %v, close_notify %v, FIN %v, want %v, false, false", r.Outcome, r.CloseNotifySent, r.FINSent, Aborted)
		}
	})
}

// Ensure the fake layers satisfy Layer and the real ones too.
var (
	_ Layer = (*fakeLayer)(nil)
	_ Layer = (*TLS)(nil)
	_ Layer = (*TCP)(nil)
)
