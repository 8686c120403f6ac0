package endwell_test

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// A server that closes idle connections, whichever way it does it, never leaves one of our
// sockets in CLOSE_WAIT: the idle watcher notices at once and ends the connection.
func TestPeerClosedIdleLeavesNoCloseWait(t *testing.T) {
	tests := []struct {
		name        string
		idle        witness.IdleClose
		wantOutcome string
		// opaque wraps the connections DialContext returns in a type of their own, not a
		// syscall.Conn: the idle watch can't look at their receive queue, and reads them.
		opaque bool
	}{
		{"close_notify and FIN", witness.IdleClose{Action: witness.CloseGraceful}, "clean", false},
		{"close_notify and FIN, an opaque net.Conn", witness.IdleClose{Action: witness.CloseGraceful}, "", true},
		{"FIN without close_notify", witness.IdleClose{Action: witness.CloseFIN}, "peer_silent", false},
		{"RST", witness.IdleClose{Action: witness.CloseRST}, "", false},
		{"unsolicited 408 then close", witness.IdleClose{Send: witness.Response408, Action: witness.CloseGraceful}, "", false},
		{"garbage then FIN", witness.IdleClose{Send: []byte("garbage\r\n"), Action: witness.CloseFIN}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 20
			idle := tt.idle
			idle.After = 150 * time.Millisecond
			srv := newTLSWitness(witness.Options{IdleClose: idle})
			defer srv.Close()
			var la localAddrs
			// HTTP/1.1 only: with HTTP/2 on, concurrent first requests to an https host
			// share the first dial, and fewer than n connections may be made.
			h1 := new(http.Protocols)
			h1.SetHTTP1(true)
			dial := la.dial
			if tt.opaque {
				dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := la.dial(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return struct{ net.Conn }{c}, nil
				}
			}
			tr := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig(), DialContext: dial, MaxIdleConnsPerHost: n, Protocols: h1}
			defer tr.Close()

			// n connections at once: each request holds its response until all are open.
			var wg sync.WaitGroup
			var mu sync.Mutex
			var resps []*http.Response
			for range n {
				wg.Go(func() {
					req, _ := http.NewRequest("GET", srv.URL(), nil)
					resp, err := tr.RoundTrip(req)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					resps = append(resps, resp)
					mu.Unlock()
				})
			}
			wg.Wait()
			for _, r := range resps {
				drainClose(r)
			}
			if got := tr.Stats().Idle; got != n {
				t.Fatalf("got %d idle connections, want %d", got, n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := srv.WaitConns(ctx, n); err != nil {
				t.Fatal(err)
			}
			// The server has closed them all: 100 ms later none of ours may be in
			// CLOSE_WAIT (nor FIN_WAIT2: we closed after the server, not before).
			time.Sleep(100 * time.Millisecond)
			if l := lingering(la.list(), false); len(l) != 0 {
				t.Errorf("got %d sockets lingering 100 ms after the server closed: %v", len(l), l)
			}
			s := tr.Stats()
			var peerClosed uint64
			for k, v := range s.Closes {
				if k.Reason == "peer_closed" {
					peerClosed += v
				}
			}
			if peerClosed != n || s.Idle != 0 {
				t.Errorf("got %d peer_closed closes and %d idle, want %d and 0 (%v)", peerClosed, s.Idle, n, s.Closes)
			}
			if tt.wantOutcome != "" {
				if got := closes(tr, "graceful", "peer_closed", tt.wantOutcome); got != n {
					t.Errorf("got %d graceful peer_closed %s closes, want %d (%v)", got, tt.wantOutcome, n, s.Closes)
				}
			}
			// The next request gets a fresh connection, never a dead one.
			get(t, tr, srv.URL())
		})
	}
}

func drainClose(resp *http.Response) {
	buf := make([]byte, 512)
	for {
		if _, err := resp.Body.Read(buf); err != nil {
			break
		}
	}
	resp.Body.Close()
}
