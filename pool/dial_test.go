package pool

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of the lifecycle of dials: which are cancelled, when, with what cause, and what
// becomes of a dial that returns after its cancellation. Dials in these tests hang until
// the test completes them or their ctx is done (hanging), as a dial to a TLS server that
// accepts TCP and never answers the handshake does, unless the test needs a dial that
// ignores its ctx (gated).

// TestDialAbandoned: when the last Get waiting for a key gives up, the dials of the key
// are cancelled with ErrDialAbandoned, keep the request's values, return, and leave
// nothing behind.
func TestDialAbandoned(t *testing.T) {
	cause := errors.New("user gave up")
	tests := []struct {
		name      string
		maxPerKey int
		ctx       func() (context.Context, func()) // the ctx of the Get that dials; func ends it
		wantErr   error
		others    int // Gets of the key, each with its own ctx, that give up first
	}{
		{"cancel", 0, func() (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			return ctx, cancel
		}, context.Canceled, 0},
		{"cancel with cause", 0, func() (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(context.Background())
			return ctx, func() { cancel(cause) }
		}, cause, 0},
		{"deadline", 0, func() (context.Context, func()) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			return ctx, func() { time.Sleep(5 * time.Second); synctest.Wait(); cancel() }
		}, context.DeadlineExceeded, 0},
		{"last of three waiters for a slot", 1, func() (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			return ctx, cancel
		}, context.Canceled, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: tt.maxPerKey}, hanging())
				defer h.p.Close()
				ctx, end := tt.ctx()
				ctx = context.WithValue(ctx, ctxKey{}, "v")
				g := h.goGet(ctx, "k")
				d := h.nextDial()
				for range tt.others {
					octx, ocancel := context.WithCancel(context.Background())
					other := h.goGet(octx, "k")
					h.wantNoDial()
					ocancel()
					other.wantErr(context.Canceled)
					d.wantLive(t) // g still waits for it
				}
				h.wantKey("k", KeyStats{Conns: 1, Dialing: 1, Waiting: 1})

				end()
				g.wantErr(tt.wantErr)
				d.wantCancelled(t, ErrDialAbandoned)
				d.wantReturned(t)
				if got := d.ctx.Value(ctxKey{}); got != "v" {
					t.Errorf("dial ctx value: got %v, want %v", got, "v")
				}
				if got := h.p.Stats(); got.Conns != 0 || got.Dialing != 0 || len(got.Keys) != 0 {
					t.Errorf("Stats: got %+v, want empty", got)
				}
				if err := h.p.WaitDials(context.Background()); err != nil {
					t.Errorf("WaitDials: got %v, want nil", err)
				}
				h.wantRetired()
				h.checkInvariants()
			})
		})
	}
}

// TestDialAbandonedWithServedGet: a dial whose Get was served by a connection that freed
// up goes on while other Gets wait, and is cancelled with the others when the last one
// gives up.
func TestDialAbandonedWithServedGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{}, hanging())
		defer h.p.Close()
		g0 := h.goGet(context.Background(), "k")
		h.nextDial().complete(1)
		c0 := g0.wantConn()
		g1 := h.goGet(context.Background(), "k")
		d1 := h.nextDial()
		h.p.Put(c0) // serves g1: d1 has no Get of its own now
		if got := g1.wantConn(); got != c0 {
			t.Fatalf("Get: got %v, want the connection put back %v", got.Value, c0.Value)
		}
		ctx, cancel := context.WithCancel(context.Background())
		g2 := h.goGet(ctx, "k")
		d2 := h.nextDial()
		d1.wantLive(t)
		h.wantKey("k", KeyStats{Conns: 3, Active: 1, Dialing: 2, Waiting: 1, Uses: 1})

		cancel()
		g2.wantErr(context.Canceled)
		d1.wantCancelled(t, ErrDialAbandoned)
		d2.wantCancelled(t, ErrDialAbandoned)
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		h.p.Put(c0)
		h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
	})
}

// TestCloseIdleCancelsDials: CloseIdle cancels the dials of keys that no Get waits for,
// and leaves the dials of keys with waiters alone.
func TestCloseIdleCancelsDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{}, hanging())
		defer h.p.Close()
		// "idle": an idle connection.
		gi := h.goGet(context.Background(), "idle")
		h.nextDial().complete(1)
		h.p.Put(gi.wantConn())
		// "free": a dial whose Get was served by a connection put back.
		g0 := h.goGet(context.Background(), "free")
		h.nextDial().complete(1)
		c0 := g0.wantConn()
		g1 := h.goGet(context.Background(), "free")
		free := h.nextDial()
		h.p.Put(c0)
		g1.wantConn()
		// "wait": a dial with its Get waiting.
		gw := h.goGet(context.Background(), "wait")
		wait := h.nextDial()

		h.p.CloseIdle()
		h.wantRetired(retired{id(gi.c), CloseIdle})
		free.wantCancelled(t, ErrDialAbandoned)
		free.wantReturned(t)
		wait.wantLive(t)
		gw.wantBlocked()
		h.wantKey("free", KeyStats{Conns: 1, Active: 1, Uses: 1})
		h.wantKey("wait", KeyStats{Conns: 1, Dialing: 1, Waiting: 1})

		wait.complete(1)
		h.p.Put(gw.wantConn())
		// Its Get came before CloseIdle, and none since: its last use retires it.
		h.wantRetired(retired{id(gw.c), CloseIdle})
		h.wantKey("wait", KeyStats{})
	})
}

// TestCloseCancelsDials: Close cancels every dial, waited for or not, with ErrClosed, and
// WaitDials then sees them all return.
func TestCloseCancelsDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1}, hanging())
		ga := h.goGet(context.Background(), "a")
		da := h.nextDial()
		ga2 := h.goGet(context.Background(), "a") // waits for the slot
		gb := h.goGet(context.Background(), "b")
		db := h.nextDial()
		h.wantNoDial()

		h.p.Close()
		for _, g := range []*getCall{ga, ga2, gb} {
			g.wantErr(ErrClosed)
		}
		for _, d := range []*pendingDial{da, db} {
			d.wantCancelled(t, ErrClosed)
			d.wantReturned(t)
		}
		h.wantNoDial() // ga2 got no dial of its own
		if err := h.p.WaitDials(context.Background()); err != nil {
			t.Errorf("WaitDials: got %v, want nil", err)
		}
		if got := h.p.Stats(); got.Conns != 0 || got.Dialing != 0 || len(got.Keys) != 0 {
			t.Errorf("Stats: got %+v, want empty", got)
		}
		h.wantRetired()
	})
}

// TestCloseKeepsAbandonCause: a dial already abandoned keeps its cause through Close: the
// first cause wins.
func TestCloseKeepsAbandonCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{}, gated()) // a dial that ignores its ctx
		ctx, cancel := context.WithCancel(context.Background())
		g := h.goGet(ctx, "k")
		d := h.nextDial()
		cancel()
		g.wantErr(context.Canceled)
		h.p.Close()
		d.wantCancelled(t, ErrDialAbandoned)
		d.fail(context.Cause(d.ctx))
		h.wantRetired()
		if got := h.p.Stats(); got.Conns != 0 || len(got.Keys) != 0 {
			t.Errorf("Stats: got %+v, want empty", got)
		}
	})
}

// TestDialCompletesAfterCancel: a dial that ignores its cancellation and returns a
// connection (a race a real dial can lose) never loses it: the connection serves whoever
// waits now, goes idle, or is retired after Close. One that fails tells no one.
func TestDialCompletesAfterCancel(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config[string, *fakeConn]
		// then runs after the dial d was abandoned, and ends it.
		then func(t *testing.T, h *harness, d *pendingDial)
	}{
		{"goes idle", Config[string, *fakeConn]{}, func(t *testing.T, h *harness, d *pendingDial) {
			d.complete(1)
			h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
			if c := h.get("k"); id(c) != 1 {
				t.Errorf("Get: got conn %v, want the idle %v", id(c), 1)
			}
			h.wantRetired()
		}},
		{"goes idle after CloseIdle", Config[string, *fakeConn]{}, func(t *testing.T, h *harness, d *pendingDial) {
			h.p.CloseIdle()
			d.complete(1)
			h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
			h.wantRetired()
		}},
		{"serves a Get that came after", Config[string, *fakeConn]{MaxPerKey: 1}, func(t *testing.T, h *harness, d *pendingDial) {
			g := h.goGet(context.Background(), "k")
			h.wantNoDial() // the abandoned dial holds the slot
			d.complete(1)
			if got := id(g.wantConn()); got != 1 {
				t.Errorf("Get: got conn %v, want %v", got, 1)
			}
			h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		}},
		{"is not shared by a Get that came after", Config[string, *fakeConn]{ShareDials: func(string) bool { return true }}, func(t *testing.T, h *harness, d *pendingDial) {
			g := h.goGet(context.Background(), "k")
			d2 := h.nextDial() // its own: the abandoned dial may never come back
			d2.wantLive(t)
			d.complete(1) // the first to land serves it all the same
			if got := id(g.wantConn()); got != 1 {
				t.Errorf("Get: got conn %v, want %v", got, 1)
			}
			d2.complete(1)
			h.wantKey("k", KeyStats{Conns: 2, Active: 1, Idle: 1, Uses: 1})
		}},
		{"is retired after Close", Config[string, *fakeConn]{}, func(t *testing.T, h *harness, d *pendingDial) {
			h.p.Close()
			d.complete(1)
			h.wantRetired(retired{1, Closed})
			if got := h.p.Stats(); got.Conns != 0 || len(got.Keys) != 0 {
				t.Errorf("Stats: got %+v, want empty", got)
			}
		}},
		{"fails telling no one", Config[string, *fakeConn]{MaxPerKey: 1}, func(t *testing.T, h *harness, d *pendingDial) {
			g := h.goGet(context.Background(), "k")
			h.wantNoDial()
			d.fail(errDial)
			g.wantBlocked() // the error was not its
			h.nextDial().complete(1)
			g.wantConn()
			h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, tt.cfg, gated()) // dials ignore their ctx
				defer h.p.Close()
				ctx, cancel := context.WithCancel(context.Background())
				g := h.goGet(ctx, "k")
				d := h.nextDial()
				cancel()
				g.wantErr(context.Canceled)
				d.wantCancelled(t, ErrDialAbandoned)
				h.wantKey("k", KeyStats{Conns: 1, Dialing: 1})
				tt.then(t, h, d)
				d.wantReturned(t)
				if err := h.p.WaitDials(context.Background()); err != nil {
					t.Errorf("WaitDials: got %v, want nil", err)
				}
				h.checkInvariants()
			})
		})
	}
}

// waitDialsCall is a WaitDials running in a goroutine of its own.
type waitDialsCall struct {
	done    chan struct{}
	err     error
	retired int // Retire calls seen when WaitDials returned
}

func goWaitDials(h *harness, ctx context.Context) *waitDialsCall {
	w := &waitDialsCall{done: make(chan struct{})}
	go func() { // the WaitDials under test; exits when it returns
		defer close(w.done)
		w.err = h.p.WaitDials(ctx)
		h.mu.Lock()
		w.retired = len(h.retired)
		h.mu.Unlock()
	}()
	synctest.Wait()
	return w
}

func (w *waitDialsCall) finished() bool {
	synctest.Wait()
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func TestWaitDials(t *testing.T) {
	t.Run("no dial", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, Config[string, *fakeConn]{})
			defer h.p.Close()
			if err := h.p.WaitDials(context.Background()); err != nil {
				t.Errorf("WaitDials: got %v, want nil", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := h.p.WaitDials(ctx); err != nil {
				t.Errorf("WaitDials with a done ctx and no dial: got %v, want nil", err)
			}
		})
	})
	t.Run("returns when the dials have returned", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t, Config[string, *fakeConn]{}, gated())
			defer h.p.Close()
			g1 := h.goGet(context.Background(), "a")
			g2 := h.goGet(context.Background(), "b")
			d1, d2 := h.nextDial(), h.nextDial()
			w1 := goWaitDials(h, context.Background())
			w2 := goWaitDials(h, context.Background())
			d1.complete(1)
			g1.wantConn()
			if w1.finished() || w2.finished() {
				t.Fatalf("WaitDials returned with a dial in progress, want it blocked")
			}
			d2.fail(errDial)
			g2.wantErr(errDial)
			for i, w := range []*waitDialsCall{w1, w2} {
				if !w.finished() || w.err != nil {
					t.Errorf("WaitDials %d: got finished %v, error %v; want nil", i, w.finished(), w.err)
				}
			}
			// And again, with new dials.
			g3 := h.goGet(context.Background(), "c")
			d3 := h.nextDial()
			w3 := goWaitDials(h, context.Background())
			if w3.finished() {
				t.Fatalf("second WaitDials returned with a dial in progress, want it blocked")
			}
			d3.complete(1)
			g3.wantConn()
			if !w3.finished() || w3.err != nil {
				t.Errorf("second WaitDials: got finished %v, error %v; want nil", w3.finished(), w3.err)
			}
			h.checkInvariants()
		})
	})
	t.Run("waits for Retire", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// A dial that ignores its ctx, and a Retire that takes a second.
			h := newHarness(t, Config[string, *fakeConn]{}, gated(), slowRetire(time.Second))
			g := h.goGet(context.Background(), "k")
			d := h.nextDial()
			h.p.Close()
			g.wantErr(ErrClosed)
			w := goWaitDials(h, context.Background())
			if w.finished() {
				t.Fatalf("WaitDials returned with a dial in progress, want it blocked")
			}
			d.complete(1)
			if w.finished() {
				t.Fatalf("WaitDials returned while Retire runs, want it blocked")
			}
			time.Sleep(time.Second)
			if !w.finished() || w.err != nil {
				t.Fatalf("WaitDials: got finished %v, error %v; want nil", w.finished(), w.err)
			}
			if w.retired != 1 {
				t.Errorf("Retire calls when WaitDials returned: got %v, want %v", w.retired, 1)
			}
			h.wantRetired(retired{1, Closed})
		})
	})
	cause := errors.New("shutdown budget spent")
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Second)
		}, context.DeadlineExceeded},
		{"deadline with cause", func() (context.Context, context.CancelFunc) {
			return context.WithTimeoutCause(context.Background(), time.Second, cause)
		}, cause},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{}, gated())
				g := h.goGet(context.Background(), "k")
				d := h.nextDial()
				ctx, cancel := tt.ctx()
				defer cancel()
				start := time.Now()
				if err := h.p.WaitDials(ctx); err != tt.wantErr {
					t.Errorf("WaitDials: got %v, want %v", err, tt.wantErr)
				}
				if got := time.Since(start); got != time.Second {
					t.Errorf("WaitDials returned after %v, want %v", got, time.Second)
				}
				d.complete(1)
				h.p.Put(g.wantConn())
				h.p.Close()
				if err := h.p.WaitDials(context.Background()); err != nil {
					t.Errorf("WaitDials after the dial: got %v, want nil", err)
				}
			})
		})
	}
}
