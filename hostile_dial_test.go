package endwell

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// stallServer accepts TCP connections and then says nothing (a TLS server whose handshake
// never comes), or, with tls set, completes the handshake offering h2 and then says
// nothing (an HTTP/2 server whose SETTINGS never come). It counts the connections still
// open on its side, so that a test sees when the client let go.
type stallServer struct {
	srv   *testpeer.Server
	ended atomic.Int64 // connections closed on its side
}

func startStallServer(t *testing.T, cfg *tls.Config) *stallServer {
	t.Helper()
	s := &stallServer{}
	// Each connection: a handshake if asked, then reads until the client closes.
	s.srv = testpeer.Serve(t, nil, func(_ int, c net.Conn) {
		defer s.ended.Add(1)
		defer c.Close()
		var r net.Conn = c
		if cfg != nil {
			tc := tls.Server(c, cfg)
			if tc.Handshake() != nil {
				return
			}
			r = tc
		}
		buf := make([]byte, 4096)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	})
	return s
}

func (s *stallServer) openConns() int {
	return s.srv.Accepts() - int(s.ended.Load())
}

// waitClosed waits until the server has no open connection (the client closed them all),
// failing after d.
func (s *stallServer) waitClosed(t *testing.T, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.openConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d connection(s) still open after %v", what, s.openConns(), d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStalledDialsAreCancelled: a dial whose handshake (TLS, or HTTP/2's SETTINGS) never
// completes belongs to the pool's life: it is cancelled once its last request gave up, even
// with no handshake timeout (-1); CloseIdleConnections cancels one that no request waits
// for; Shutdown and Close cancel them and return only once their sockets are closed.
func TestStalledDialsAreCancelled(t *testing.T) {
	h2cfg := h2TestCert(t).server.Clone()
	h2cfg.NextProtos = []string{"h2"}
	stalls := []struct {
		name string
		cfg  *tls.Config
	}{
		{"TLS handshake", nil},
		{"HTTP/2 SETTINGS", h2cfg},
	}
	ends := []struct {
		name string
		end  func(tr *Transport)
	}{
		{"request gives up", func(tr *Transport) {}},
		{"Shutdown", func(tr *Transport) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}},
		{"Close", func(tr *Transport) { tr.Close() }},
	}
	for _, st := range stalls {
		for _, end := range ends {
			t.Run(st.name+"/"+end.name, func(t *testing.T) {
				h2CheckLeaks(t)
				s := startStallServer(t, st.cfg)
				tr, _ := h2Transport(t, &Transport{
					TLSHandshakeTimeout: -1, // no limit but the requests'
				})
				ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
				defer cancel()
				start := time.Now()
				_, err := tr.RoundTrip(mustGet(t, "https://"+s.srv.Addr()+"/").WithContext(ctx))
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("RoundTrip: got %v, want the request's deadline", err)
				}
				if !errors.Is(err, ErrNotSent) || err.Error() != context.DeadlineExceeded.Error() {
					t.Errorf("RoundTrip: got %q, want the deadline's message, matching ErrNotSent (nothing was sent)", err)
				}
				if took := time.Since(start); took > 2*time.Second {
					t.Errorf("RoundTrip returned after %v, want by its deadline", took)
				}
				end.end(tr)
				s.waitClosed(t, "after "+end.name, 2*time.Second)
			})
		}
	}
}

// TestCloseIdleCancelsUnwantedDial: a dial whose request has gone, still stalled,
// is cancelled by CloseIdleConnections (it would only have gone idle), before its own
// timeout.
func TestCloseIdleCancelsUnwantedDial(t *testing.T) {
	h2CheckLeaks(t)
	s := startStallServer(t, nil)
	tr, _ := h2Transport(t, &Transport{TLSHandshakeTimeout: time.Minute})
	// The request leaves at once; the pool's dial stays: another request could use it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tr.RoundTrip(mustGet(t, "https://"+s.srv.Addr()+"/").WithContext(ctx))
	tr.CloseIdleConnections()
	s.waitClosed(t, "after CloseIdleConnections", 2*time.Second)
}
