package shutdown

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

// overshoot is how far past its budget a forced teardown over real sockets may end.
const overshoot = 50 * time.Millisecond

// TestLoopback runs real teardowns on 127.0.0.1 against a scripted Go peer, and checks both
// the record and what the peer saw on the wire.
func TestLoopback(t *testing.T) {
	checkFDs(t)
	const budget = 200 * time.Millisecond
	tests := []struct {
		name       string
		opts       loopbackOptions
		mode       Mode
		budget     time.Duration
		maxDrain   int64
		peerClosed bool                             // the TLS layer's PeerClosed
		before     func(t *testing.T, lb *loopback) // the client's doings before its teardown
		peer       func(p *testPeer)                // the peer's script, after the handshake
		check      func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration)
	}{
		{
			name: "graceful, peer answers close_notify and closes",
			mode: Graceful,
			peer: func(p *testPeer) {
				p.readUntilClose()
				if p.rep.CloseNotify {
					p.closeNotify()
				}
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Clean, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true})
				wantSteps(t, r, CloseNotifySent, FINSent, CloseNotifyReceived, FINReceived)
				wantPeer(t, rep, peerReport{CloseNotify: true, End: "fin"})
			},
		},
		{
			name: "abort",
			mode: Abort,
			peer: func(p *testPeer) { p.readUntilClose() },
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Aborted})
				if rep.CloseNotify || (rep.End != "fin" && rep.End != "rst") {
					t.Errorf("peer saw: got close_notify %v, end %q, want no close_notify, then fin or rst", rep.CloseNotify, rep.End)
				}
			},
		},
		{
			name:   "peer never answers close_notify and keeps TCP open",
			mode:   Graceful,
			budget: budget,
			peer: func(p *testPeer) {
				p.readUntilClose()
				p.hold()
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: TimedOut, CloseNotifySent: true, FINSent: true, Err: ErrBudget})
				wantBudget(t, r, elapsed, budget)
				wantPeer(t, rep, peerReport{CloseNotify: true, End: "fin"})
			},
		},
		{
			name: "peer closes TCP without close_notify",
			mode: Graceful,
			peer: func(p *testPeer) {
				p.readUntilClose()
				p.fin()
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: PeerSilent, CloseNotifySent: true, FINSent: true, FINReceived: true})
				wantPeer(t, rep, peerReport{CloseNotify: true, End: "fin"})
			},
		},
		{
			name:   "peer never reads, its buffers full: close_notify blocks",
			opts:   loopbackOptions{small: true},
			mode:   Graceful,
			budget: budget,
			before: fillPeer,
			peer: func(p *testPeer) {
				p.hold()
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: TimedOut, Err: ErrBudget})
				wantBudget(t, r, elapsed, budget)
				if rep.End != "fin" && rep.End != "rst" {
					t.Errorf("peer saw: got end %q, want fin or rst", rep.End)
				}
			},
		},
		{
			name:     "peer keeps sending after our close_notify",
			mode:     Graceful,
			maxDrain: 64 << 10,
			peer: func(p *testPeer) {
				p.readUntilClose()
				buf := make([]byte, 16<<10)
				for range 4096 { // 64 MiB at most; the client cuts it off long before
					if _, err := p.tls.Write(buf); err != nil {
						break
					}
				}
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Failed, CloseNotifySent: true, FINSent: true, Err: ErrDrainLimit})
				if r.DrainBytes <= 64<<10 {
					t.Errorf("drained: got %v, want more than %v", r.DrainBytes, 64<<10)
				}
				if elapsed > time.Second {
					t.Errorf("elapsed: got %v, want well within the budget", elapsed)
				}
				if !rep.CloseNotify {
					t.Errorf("peer saw close_notify: got false, want true")
				}
			},
		},
		{
			name: "peer resets during the ritual",
			mode: Graceful,
			peer: func(p *testPeer) {
				p.readUntilClose()
				p.reset()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				if !(r.Outcome == Failed && r.Err != nil) && r.Outcome != PeerSilent {
					t.Errorf("outcome, err: got %v, %v, want %v with an error, or %v", r.Outcome, r.Err, Failed, PeerSilent)
				}
				if r.CloseNotifyReceived {
					t.Errorf("close_notify received: got true, want false")
				}
				if elapsed > time.Second {
					t.Errorf("elapsed: got %v, want well within the budget", elapsed)
				}
				if !rep.CloseNotify {
					t.Errorf("peer saw close_notify: got false, want true")
				}
			},
		},
		{
			// RFC 8446, section 6.1: our close_notify answers the peer's, even after its
			// FIN, and before ours. The peer half-closed: it still reads, and sees it.
			name:       "peer closed first: its close_notify answered before our FIN",
			mode:       Graceful,
			peerClosed: true,
			before:     readPeerGoodbye,
			peer: func(p *testPeer) {
				p.closeNotify()
				p.fin()
				p.readUntilClose()
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Clean, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true})
				wantPeer(t, rep, peerReport{CloseNotify: true, End: "fin"})
			},
		},
		{
			name: "plain TCP: FIN, drain, peer FINs back",
			opts: loopbackOptions{plain: true},
			mode: Graceful,
			peer: func(p *testPeer) {
				if _, err := p.tcp.Write(make([]byte, 1000)); err != nil {
					p.t.Errorf("peer: write: %v", err)
				}
				p.watchEnd()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Clean, FINSent: true, FINReceived: true, DrainBytes: 1000})
				wantPeer(t, rep, peerReport{End: "fin"})
			},
		},
		{
			name:   "plain TCP: peer never FINs back",
			opts:   loopbackOptions{plain: true},
			mode:   Graceful,
			budget: budget,
			peer: func(p *testPeer) {
				p.watchEnd()
				p.hold()
			},
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: TimedOut, FINSent: true, Err: ErrBudget})
				wantBudget(t, r, elapsed, budget)
				wantPeer(t, rep, peerReport{End: "fin"})
			},
		},
		{
			name: "plain TCP: abort",
			opts: loopbackOptions{plain: true},
			mode: Abort,
			peer: func(p *testPeer) { p.watchEnd() },
			check: func(t *testing.T, r *Record, rep peerReport, elapsed time.Duration) {
				wantRecord(t, r, Record{Outcome: Aborted})
				wantPeer(t, rep, peerReport{End: "fin"})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.peerClosed {
				needPeek(t)
			}
			lb := newLoopback(t, tt.opts, tt.peer)
			if tt.before != nil {
				tt.before(t, lb)
			}
			j := lb.job(tt.mode, tt.budget)
			if tls, ok := j.Layers[0].(*TLS); ok {
				tls.PeerClosed = tt.peerClosed
			}
			j.Layers[len(j.Layers)-1].(*TCP).MaxDrain = tt.maxDrain
			start := time.Now()
			// A reference timer of the budget's length, started with the teardown: how
			// late it fires is the machine's scheduling lag, which wantBudget allows
			// for on top of the 50 ms that endwell itself may add.
			refFired := make(chan time.Time, 1)
			ref := time.AfterFunc(tt.budget, func() { refFired <- time.Now() })
			r := Run(t.Context(), j)
			elapsed := time.Since(start)
			timerLag = 0
			if tt.budget > 0 {
				select {
				case at := <-refFired:
					timerLag = max(0, at.Sub(start)-tt.budget)
				case <-time.After(5 * time.Second):
				}
			}
			ref.Stop()
			lb.releasePeer()
			rep := lb.wantReport(t)
			t.Logf("record: %v, err %v, events %v, drained %v, took %v; peer: %+v", r.Outcome, r.Err, steps(r), r.DrainBytes, elapsed, rep)
			tt.check(t, r, rep, elapsed)
			// The socket is closed, whatever happened.
			if _, err := lb.tcp.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("write after teardown: got %v, want %v", err, net.ErrClosed)
			}
		})
	}
}

// readPeerGoodbye reads the peer's close_notify, as an idle connection's watcher does, then
// waits for its FIN to arrive: the peer has closed first.
func readPeerGoodbye(t *testing.T, lb *loopback) {
	t.Helper()
	lb.tcp.SetReadDeadline(time.Now().Add(peerLife))
	if _, err := io.Copy(io.Discard, lb.tls); err != nil {
		t.Fatalf("reading the peer's close_notify: %v", err)
	}
	lb.tcp.SetReadDeadline(time.Time{})
	if lb.raw.PeerFIN() {
		t.Fatalf("the raw conn saw EOF: the peer's close_notify was not told apart")
	}
	waitFor(t, "the peer's FIN", lb.raw.PeerClosed)
}

// fillPeer writes TLS data until the peer's receive buffer and ours are full: a write
// blocks for 100 ms.
func fillPeer(t *testing.T, lb *loopback) {
	t.Helper()
	buf := make([]byte, 16<<10)
	for i := range 4000 { // 64 MiB at most; small buffers fill within a few writes
		lb.tcp.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := lb.tls.Write(buf); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("filling the peer: %v", err)
			}
			lb.tcp.SetWriteDeadline(time.Time{})
			t.Logf("peer full after %d writes", i)
			return
		}
	}
	t.Fatal("the peer's buffers never filled")
}

// waitFor polls cond for up to two seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: gave up after 2s", what)
}

// wantRecord checks the record's outcome, flags, drained bytes (if want's are non-zero) and
// error (errors.Is, or nil).
func wantRecord(t *testing.T, r *Record, want Record) {
	t.Helper()
	if r.Outcome != want.Outcome {
		t.Errorf("outcome: got %v, want %v", r.Outcome, want.Outcome)
	}
	type flags struct{ CloseNotifySent, CloseNotifyReceived, FINSent, FINReceived, RSTReceived bool }
	got := flags{r.CloseNotifySent, r.CloseNotifyReceived, r.FINSent, r.FINReceived, r.RSTReceived}
	wantFlags := flags{want.CloseNotifySent, want.CloseNotifyReceived, want.FINSent, want.FINReceived, want.RSTReceived}
	if got != wantFlags {
		t.Errorf("flags: got %+v, want %+v", got, wantFlags)
	}
	if want.DrainBytes != 0 && r.DrainBytes != want.DrainBytes {
		t.Errorf("drained: got %v, want %v", r.DrainBytes, want.DrainBytes)
	}
	if (want.Err == nil && r.Err != nil) || !errors.Is(r.Err, want.Err) {
		t.Errorf("err: got %v, want %v", r.Err, want.Err)
	}
}

// wantSteps checks the record's events, in order.
func wantSteps(t *testing.T, r *Record, want ...Step) {
	t.Helper()
	if got := steps(r); !slices.Equal(got, want) {
		t.Errorf("events: got %v, want %v", got, want)
	}
}

// wantBudget checks that a forced teardown ended at its budget, give or take overshoot.
func wantBudget(t *testing.T, r *Record, elapsed, budget time.Duration) {
	t.Helper()
	overshoot := overshoot + timerLag
	if elapsed < budget || elapsed > budget+overshoot {
		t.Errorf("elapsed: got %v, want between %v and %v (timer lag %v)", elapsed, budget, budget+overshoot, timerLag)
	}
	if !hasStep(r, Forced) {
		t.Errorf("events: got %v, want a %v event", steps(r), Forced)
	}
	for _, e := range r.Events {
		if e.Step == Forced {
			if at := e.At.Sub(r.Start); at < budget || at > budget+overshoot {
				t.Errorf("forced at: got start+%v, want start+%v", at, budget)
			}
		}
	}
}

// timerLag is how late a plain timer of the budget's length fired during the last
// teardown: the machine's share of any overshoot (the tests run under -race on shared
// machines). Set by the test loop before each check.
var timerLag time.Duration

// wantPeer checks what the peer saw.
func wantPeer(t *testing.T, got, want peerReport) {
	t.Helper()
	if got.CloseNotify != want.CloseNotify || got.End != want.End || got.RawAfter != want.RawAfter {
		t.Errorf("peer saw: got close_notify %v, end %q, %d bytes after; want close_notify %v, end %q, %d bytes after",
			got.CloseNotify, got.End, got.RawAfter, want.CloseNotify, want.End, want.RawAfter)
	}
}

// TestPeerClosed: Conn.PeerClosed tells a FIN or reset waiting in the receive queue without
// consuming anything, and says false while the peer is open or data comes first.
func TestPeerClosed(t *testing.T) {
	needPeek(t)
	checkFDs(t)
	tests := []struct {
		name   string
		peer   func(p *testPeer)
		data   string // what the client reads before the FIN is seen
		closed bool   // PeerClosed becomes true
		reset  bool
	}{
		{"peer open", func(p *testPeer) { p.hold() }, "", false, false},
		{"FIN", func(p *testPeer) { p.fin(); p.hold() }, "", true, false},
		{"data then FIN", func(p *testPeer) { p.tcp.Write([]byte("hello")); p.fin(); p.hold() }, "hello", true, false},
		{"reset", func(p *testPeer) { p.reset(); p.hold() }, "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lb := newLoopback(t, loopbackOptions{plain: true}, tt.peer)
			if !tt.closed {
				// Nothing will arrive: look a few times over 50 ms.
				for range 5 {
					if lb.raw.PeerClosed() {
						t.Fatalf("PeerClosed: got true, want false")
					}
					time.Sleep(10 * time.Millisecond)
				}
				lb.releasePeer()
				lb.wantReport(t)
				return
			}
			if tt.data != "" {
				// Data is ahead of the FIN: PeerClosed says false and consumes nothing.
				time.Sleep(50 * time.Millisecond)
				if lb.raw.PeerClosed() {
					t.Errorf("PeerClosed with data pending: got true, want false")
				}
				buf := make([]byte, len(tt.data))
				lb.tcp.SetReadDeadline(time.Now().Add(peerLife))
				if _, err := io.ReadFull(lb.raw, buf); err != nil || string(buf) != tt.data {
					t.Fatalf("read: got %q, %v, want %q", buf, err, tt.data)
				}
			}
			waitFor(t, "PeerClosed", lb.raw.PeerClosed)
			if got := lb.raw.PeerReset(); got != tt.reset {
				t.Errorf("PeerReset: got %v, want %v", got, tt.reset)
			}
			if !tt.reset {
				// The FIN was looked at, not consumed: PeerFIN says so only once a read
				// has returned EOF.
				if lb.raw.PeerFIN() {
					t.Errorf("PeerFIN before the read of the FIN: got true, want false")
				}
				lb.tcp.SetReadDeadline(time.Now().Add(peerLife))
				if n, err := lb.raw.Read(make([]byte, 10)); n != 0 || err != io.EOF {
					t.Errorf("read after PeerClosed: got %d, %v, want 0, %v", n, err, io.EOF)
				}
				if !lb.raw.PeerFIN() {
					t.Errorf("PeerFIN after the read of the FIN: got false, want true")
				}
			}
			lb.releasePeer()
			lb.wantReport(t)
		})
	}
}
