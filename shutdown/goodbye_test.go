package shutdown

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestGoodbyeAfterPeerClosed: when the peer has ended the connection first (an idle
// connection its server closes), our close_notify answers it before our FIN, as RFC 8446,
// section 6.1 asks, whatever the peer did after its alert: a peer that half-closed keeps
// reading and sees it (clean); a peer that closed its socket answers it with a reset,
// which is recorded, is no failure of ours, and makes the ending not clean (peer_silent:
// ours was not read). Only a reset before our teardown silences us.
func TestGoodbyeAfterPeerClosed(t *testing.T) {
	needPeek(t)
	checkFDs(t)
	tests := []struct {
		name       string
		peerClosed bool // the TLS layer's PeerClosed: the peer's close_notify was read
		before     func(t *testing.T, lb *loopback)
		peer       func(p *testPeer)
		want       Record
		wantPeer   peerReport
	}{
		{
			// s2n's s2n_shutdown_send, Python's unwrap then shutdown(SHUT_WR): the peer
			// waits for our close_notify.
			name:       "half-closed: close_notify and FIN, still reading",
			peerClosed: true,
			before:     readPeerGoodbye,
			peer: func(p *testPeer) {
				p.closeNotify()
				p.fin()
				p.readUntilClose()
				p.watchEnd()
			},
			want:     Record{Outcome: Clean, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true},
			wantPeer: peerReport{CloseNotify: true, End: "fin"},
		},
		{
			// nginx: SSL_shutdown, then close. Our close_notify and FIN arrive at a
			// closed socket, whose answer is a reset.
			name:       "closed its socket after close_notify",
			peerClosed: true,
			before:     readPeerGoodbye,
			peer: func(p *testPeer) {
				p.closeNotify()
				p.tcp.Close()
			},
			want: Record{Outcome: PeerSilent, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true, RSTReceived: true},
		},
		{
			// A FIN without close_notify: the peer said no goodbye of its own, and
			// still gets ours.
			name: "half-closed without close_notify, still reading",
			before: func(t *testing.T, lb *loopback) {
				waitFor(t, "the peer's FIN", lb.raw.PeerClosed)
			},
			peer: func(p *testPeer) {
				p.fin()
				p.readUntilClose()
				p.watchEnd()
			},
			want:     Record{Outcome: PeerSilent, CloseNotifySent: true, FINSent: true, FINReceived: true},
			wantPeer: peerReport{CloseNotify: true, End: "fin"},
		},
		{
			name: "reset before our teardown: nothing to say",
			before: func(t *testing.T, lb *loopback) {
				waitFor(t, "the peer's reset", lb.raw.PeerClosed)
			},
			peer: func(p *testPeer) { p.reset() },
			want: Record{Outcome: PeerSilent, RSTReceived: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb := newLoopback(t, loopbackOptions{}, tt.peer)
			tt.before(t, lb)
			j := lb.job(Graceful, time.Second)
			j.Layers[0].(*TLS).PeerClosed = tt.peerClosed
			start := time.Now()
			r := Run(t.Context(), j)
			elapsed := time.Since(start)
			lb.releasePeer()
			rep := lb.wantReport(t)
			t.Logf("record: %v, err %v, events %v, took %v; peer: %+v", r.Outcome, r.Err, steps(r), elapsed, rep)
			wantRecord(t, r, tt.want)
			wantPeer(t, rep, tt.wantPeer)
			if elapsed > 500*time.Millisecond {
				t.Errorf("elapsed: got %v, want well within the 1s budget", elapsed)
			}
			if tt.want.CloseNotifySent {
				// Our close_notify is written before our FIN.
				if i, j := slices.Index(steps(r), CloseNotifySent), slices.Index(steps(r), FINSent); i < 0 || i > j {
					t.Errorf("events: got %v, want %v before %v", steps(r), CloseNotifySent, FINSent)
				}
			}
		})
	}
}

// TestGoodbyeOutcome: a teardown that was neither forced nor failed is clean only when
// every goodbye its layers expect was exchanged: the peer's FIN, and those the layers
// named (close_notify both ways over TLS, our FIN, our HTTP/2 GOAWAY), with no reset.
func TestGoodbyeOutcome(t *testing.T) {
	tests := []struct {
		name    string
		expect  []Step
		notes   []Step
		outcome Outcome
	}{
		{"tcp: both FINs", []Step{FINSent}, []Step{FINSent, FINReceived}, Clean},
		{"tcp: the peer's FIN, ours never sent", []Step{FINSent}, []Step{FINReceived}, PeerSilent},
		{"tls: both goodbyes", []Step{FINSent, CloseNotifySent, CloseNotifyReceived},
			[]Step{CloseNotifyReceived, CloseNotifySent, FINSent, FINReceived}, Clean},
		// The ending that issue 18 found recorded as clean: the peer's close_notify and FIN
		// read, ours never written.
		{"tls: the peer's goodbye, ours never sent", []Step{FINSent, CloseNotifySent, CloseNotifyReceived},
			[]Step{CloseNotifyReceived, FINSent, FINReceived}, PeerSilent},
		{"tls: both goodbyes, then the peer's reset", []Step{FINSent, CloseNotifySent, CloseNotifyReceived},
			[]Step{CloseNotifyReceived, CloseNotifySent, FINSent, FINReceived, RSTReceived}, PeerSilent},
		{"h2: no GOAWAY sent", []Step{GoAwaySent, FINSent, CloseNotifySent, CloseNotifyReceived},
			[]Step{CloseNotifySent, FINSent, CloseNotifyReceived, FINReceived}, PeerSilent},
		{"h2: every goodbye", []Step{GoAwaySent, FINSent, CloseNotifySent, CloseNotifyReceived},
			[]Step{GoAwaySent, CloseNotifySent, FINSent, CloseNotifyReceived, FINReceived}, Clean},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &fakeLayer{name: "l", log: &callLog{}, graceful: func(ctx context.Context, p *Progress) error {
				p.Expect(tt.expect...)
				for _, s := range tt.notes {
					p.Note(s)
				}
				return nil
			}}
			r := Run(t.Context(), Job{Layers: []Layer{l}, Mode: Graceful})
			if r.Outcome != tt.outcome {
				t.Errorf("outcome: got %v, want %v", r.Outcome, tt.outcome)
			}
			if got := hasStep(r, RSTReceived); got != r.RSTReceived {
				t.Errorf("RSTReceived: got %v, event %v", r.RSTReceived, got)
			}
		})
	}
}
