package pool

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var errDial = errors.New("dial failed")

func TestReasonString(t *testing.T) {
	tests := []struct {
		name string
		r    Reason
		want string
	}{
		{"idle timeout", IdleTimeout, "idle_timeout"},
		{"idle limit", IdleLimit, "idle_limit"},
		{"max lifetime", MaxLifetime, "max_lifetime"},
		{"close idle", CloseIdle, "close_idle"},
		{"closed", Closed, "closed"},
		{"zero", 0, "Reason(0)"},
		{"unknown", 42, "Reason(42)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewWithoutDialPanics(t *testing.T) {
	defer func() {
		if got := recover(); got == nil {
			t.Errorf("got no panic, want one")
		}
	}()
	New(Config[string, int]{})
}

func TestMRUReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{})
		defer h.p.Close()
		a, b, c := h.get("k"), h.get("k"), h.get("k")
		h.p.Put(a)
		time.Sleep(time.Second)
		h.p.Put(b)
		time.Sleep(time.Second)
		h.p.Put(c)
		time.Sleep(time.Second)
		h.wantKey("k", KeyStats{Conns: 3, Idle: 3})

		for _, want := range []struct {
			id   int
			idle time.Duration
		}{{id(c), 1 * time.Second}, {id(b), 2 * time.Second}, {id(a), 3 * time.Second}} {
			got, info, err := h.p.Get(context.Background(), "k")
			if err != nil {
				t.Fatalf("Get: got error %v, want nil", err)
			}
			if id(got) != want.id {
				t.Errorf("Get: got conn %v, want %v", id(got), want.id)
			}
			wantInfo := GetInfo{Reused: true, WasIdle: true, IdleTime: want.idle}
			if info != wantInfo {
				t.Errorf("GetInfo: got %+v, want %+v", info, wantInfo)
			}
		}
		if got := h.numDials(); got != 3 {
			t.Errorf("dials: got %v, want %v", got, 3)
		}
		_, info, _ := h.p.Get(context.Background(), "k")
		if info != (GetInfo{}) {
			t.Errorf("GetInfo of a new connection: got %+v, want %+v", info, GetInfo{})
		}
		h.wantKey("k", KeyStats{Conns: 4, Active: 4, Uses: 4})
	})
}

func TestIdleLimits(t *testing.T) {
	tests := []struct {
		name          string
		maxIdle       int
		maxIdlePerKey int
		keys          []string // one connection each, Put in this order
		wantRetired   []int    // indexes into keys
		wantIdle      int
	}{
		{"per key retires the key's LRU", 0, 2, []string{"a", "b", "a", "a"}, []int{0}, 3},
		{"per key leaves other keys alone", 0, 1, []string{"a", "b", "c"}, nil, 3},
		{"total retires the LRU of any key", 2, 0, []string{"a", "b", "c", "d"}, []int{0, 1}, 2},
		{"both", 3, 1, []string{"a", "a", "b", "c", "d"}, []int{0, 1}, 3},
		{"no limits", 0, 0, []string{"a", "a", "a", "b"}, nil, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{MaxIdle: tt.maxIdle, MaxIdlePerKey: tt.maxIdlePerKey})
				defer h.p.Close()
				conns := make([]*Conn[string, *fakeConn], len(tt.keys))
				for i, k := range tt.keys {
					conns[i] = h.get(k)
				}
				for _, c := range conns {
					h.p.Put(c)
					time.Sleep(time.Second)
				}
				var want []retired
				for _, i := range tt.wantRetired {
					want = append(want, retired{id(conns[i]), IdleLimit})
				}
				h.wantRetired(want...)
				if got := h.p.Stats().Idle; got != tt.wantIdle {
					t.Errorf("idle: got %v, want %v", got, tt.wantIdle)
				}
				h.checkInvariants()
			})
		})
	}
}

func TestMaxPerKeyFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1})
		defer h.p.Close()
		c := h.get("k")
		var calls []*getCall
		for range 3 {
			g := h.goGet(context.Background(), "k") // goGet waits: arrival order is call order
			g.wantBlocked()
			calls = append(calls, g)
		}
		other := h.get("other") // another key is not limited by k
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1, Waiting: 3})

		for i, g := range calls {
			h.p.Put(c)
			c = g.wantConn()
			if id(c) != 1 {
				t.Errorf("waiter %d: got conn %v, want %v", i, id(c), 1)
			}
			if !g.info.Reused || g.info.WasIdle {
				t.Errorf("waiter %d: got %+v, want Reused and not WasIdle", i, g.info)
			}
			for _, later := range calls[i+1:] {
				later.wantBlocked()
			}
		}
		h.p.Put(c)
		h.p.Put(other)
		if got := h.numDials(); got != 2 {
			t.Errorf("dials: got %v, want %v", got, 2)
		}
		h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
	})
}

func TestWaiterCancel(t *testing.T) {
	cause := errors.New("user gave up")
	tests := []struct {
		name    string
		ctx     func() (context.Context, func())
		wantErr error
	}{
		{"cancel", func() (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			return ctx, cancel
		}, context.Canceled},
		{"cancel with cause", func() (context.Context, func()) {
			ctx, cancel := context.WithCancelCause(context.Background())
			return ctx, func() { cancel(cause) }
		}, cause},
		{"deadline", func() (context.Context, func()) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			return ctx, func() { time.Sleep(time.Second); synctest.Wait(); cancel() }
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1})
				defer h.p.Close()
				c := h.get("k")
				ctx, stop := tt.ctx()
				g := h.goGet(ctx, "k")
				g.wantBlocked()
				g2 := h.goGet(context.Background(), "k")
				stop()
				g.wantErr(tt.wantErr)
				h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1, Waiting: 1})
				// The connection goes to the waiter behind, not the one that left.
				h.p.Put(c)
				if got := id(g2.wantConn()); got != id(c) {
					t.Errorf("second waiter: got conn %v, want %v", got, id(c))
				}
				h.p.Put(c)
				h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
			})
		})
	}
}

func TestGetWithDoneContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{})
		defer h.p.Close()
		h.p.Put(h.get("k"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := h.p.Get(ctx, "k"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get: got error %v, want %v", err, context.Canceled)
		}
		h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
	})
}

type ctxKey struct{}

// TestDialOutlivesGetWhileOthersWait: a Get that gives up leaves its dial running while
// another Get of the key waits, and the dial serves that Get. (With no Get left waiting,
// the dial is cancelled: TestDialAbandoned.)
func TestDialOutlivesGetWhileOthersWait(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config[string, *fakeConn]
		secondDials bool // the second Get dials its own
	}{
		{"second waits for a slot", Config[string, *fakeConn]{MaxPerKey: 1}, false},
		{"second shares the dial", Config[string, *fakeConn]{ShareDials: func(string) bool { return true }}, false},
		{"second dials its own", Config[string, *fakeConn]{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, tt.cfg, hanging())
				defer h.p.Close()
				ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
				g1 := h.goGet(ctx, "k")
				d1 := h.nextDial()
				g2 := h.goGet(context.Background(), "k")
				var d2 *pendingDial
				if tt.secondDials {
					d2 = h.nextDial()
				} else {
					h.wantNoDial()
				}
				cancel()
				g1.wantErr(context.Canceled) // at once, with the dial still running
				d1.wantLive(t)
				if got := d1.ctx.Value(ctxKey{}); got != "v" {
					t.Errorf("dial ctx value: got %v, want %v", got, "v")
				}
				g2.wantBlocked()

				d1.complete(1)
				if got := id(g2.wantConn()); got != 1 {
					t.Errorf("second Get: got conn %v, want %v (the first one's dial)", got, 1)
				}
				if g2.info != (GetInfo{}) {
					t.Errorf("GetInfo: got %+v, want %+v", g2.info, GetInfo{})
				}
				if d2 != nil {
					// Its Get was served: it goes on, and goes idle.
					d2.wantLive(t)
					d2.complete(1)
					h.wantKey("k", KeyStats{Conns: 2, Active: 1, Idle: 1, Uses: 1})
				} else {
					h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
				}
				h.p.Put(g2.c)
				h.wantRetired()
			})
		})
	}
}

func TestDialError(t *testing.T) {
	tests := []struct {
		name       string
		maxPerKey  int
		shareDials bool
	}{
		{"waiter for a slot dials next", 1, false},
		{"waiter sharing the dial dials next", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config[string, *fakeConn]{MaxPerKey: tt.maxPerKey}
				if tt.shareDials {
					cfg.ShareDials = func(string) bool { return true }
				}
				h := newHarness(t, cfg, gated())
				defer h.p.Close()
				g1 := h.goGet(context.Background(), "k")
				d := h.nextDial()
				g2 := h.goGet(context.Background(), "k")
				h.wantNoDial()
				h.wantKey("k", KeyStats{Conns: 1, Dialing: 1, Waiting: 2})

				d.fail(errDial)
				g1.wantErr(errDial)
				g2.wantBlocked() // the error is g1's only
				d2 := h.nextDial()
				h.wantKey("k", KeyStats{Conns: 1, Dialing: 1, Waiting: 1})
				d2.complete(1)
				g2.wantConn()
				h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
				h.p.Put(g2.c)
			})
		})
	}
}

func TestDialErrorForgetsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{}, gated())
		defer h.p.Close()
		g := h.goGet(context.Background(), "k")
		h.nextDial().fail(errDial)
		g.wantErr(errDial)
		if got := len(h.p.Stats().Keys); got != 0 {
			t.Errorf("keys: got %v, want %v", got, 0)
		}
	})
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{IdleTimeout: 10 * time.Second})
		defer h.p.Close()
		a, b, c := h.get("a"), h.get("b"), h.get("a")
		h.p.Put(a) // idle at 0s
		time.Sleep(4 * time.Second)
		h.p.Put(b) // idle at 4s
		h.p.Put(c) // idle at 4s

		time.Sleep(6*time.Second - time.Millisecond)
		h.wantRetired()
		time.Sleep(time.Millisecond) // 10s
		h.wantRetired(retired{id(a), IdleTimeout})
		// Reusing c restarts its idle time.
		time.Sleep(2 * time.Second) // 12s
		h.p.Put(h.get("a"))
		time.Sleep(2 * time.Second) // 14s
		h.wantRetired(retired{id(b), IdleTimeout})
		time.Sleep(8 * time.Second) // 22s
		h.wantRetired(retired{id(c), IdleTimeout})
		if got := h.p.Stats(); got.Idle != 0 || len(got.Keys) != 0 {
			t.Errorf("Stats: got %+v, want empty", got)
		}
		h.checkInvariants()
	})
}

func TestIdleTimeoutManyConns(t *testing.T) {
	// 10 000 idle connections over 100 keys leave on time, in LRU order.
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{IdleTimeout: time.Minute})
		defer h.p.Close()
		var conns []*Conn[string, *fakeConn]
		for i := range 10000 {
			conns = append(conns, h.get(string(rune('a'+i%100))))
		}
		for i, c := range conns {
			h.p.Put(c)
			if i%100 == 99 {
				time.Sleep(time.Second)
			}
		}
		// Now is 100s; the connections of second s time out at s+60s. At 109.5s those
		// of seconds 0 to 49 have gone.
		time.Sleep(9500 * time.Millisecond)
		synctest.Wait()
		h.mu.Lock()
		n := len(h.retired)
		ok := n == 5000
		for i, r := range h.retired {
			ok = ok && r == retired{id(conns[i]), IdleTimeout}
		}
		h.mu.Unlock()
		if !ok {
			t.Errorf("retired: got %v in LRU order %v, want %v", n, ok, 5000)
		}
	})
}

func TestLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lifetime := time.Minute
		cfg := Config[string, *fakeConn]{Lifetime: func() time.Duration { return lifetime }}
		h := newHarness(t, cfg)
		defer h.p.Close()
		idle, busy := h.get("k"), h.get("k")
		lifetime = 0 // for ever
		forever := h.get("k")
		h.p.Put(idle)
		h.p.Put(forever)

		time.Sleep(time.Minute - time.Millisecond)
		h.wantRetired()
		time.Sleep(time.Millisecond)
		h.wantRetired(retired{id(idle), MaxLifetime})
		h.wantKey("k", KeyStats{Conns: 2, Active: 1, Idle: 1, Uses: 1})
		// busy is past its lifetime: it does not go idle.
		h.p.Put(busy)
		h.wantRetired(retired{id(busy), MaxLifetime})
		time.Sleep(time.Hour)
		h.wantRetired()
		h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
	})
}

func TestLifetimeShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config[string, *fakeConn]{Lifetime: func() time.Duration { return time.Minute }}
		h := newHarness(t, cfg, capacity(3))
		defer h.p.Close()
		a := h.get("k")
		time.Sleep(time.Minute)
		// a is past its lifetime: it takes no new uses.
		if b := h.get("k"); b == a {
			t.Errorf("Get: got the expired connection, want a new one")
		}
		h.p.Put(a)
		h.wantRetired(retired{id(a), MaxLifetime})
	})
}

func TestStaleIdleNotHandedOut(t *testing.T) {
	// Get does not wait for the timer to notice a stale idle connection.
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{IdleTimeout: time.Second})
		defer h.p.Close()
		a := h.get("k")
		h.p.Put(a)
		h.p.mu.Lock()
		h.p.timer.Stop() // play a timer that runs late
		h.p.timerAt = time.Time{}
		h.p.mu.Unlock()
		time.Sleep(time.Second)
		if b := h.get("k"); b == a {
			t.Errorf("Get: got the timed out connection, want a new one")
		}
		h.wantRetired(retired{id(a), IdleTimeout})
	})
}

func TestCloseIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{})
		defer h.p.Close()
		a, b, c, busy := h.get("x"), h.get("y"), h.get("x"), h.get("x")
		h.p.Put(a)
		h.p.Put(b)
		h.p.Put(c)
		h.p.CloseIdle()
		h.wantRetired(retired{id(a), CloseIdle}, retired{id(b), CloseIdle}, retired{id(c), CloseIdle})
		h.wantKey("x", KeyStats{Conns: 1, Active: 1, Uses: 1})
		// The connection busy then, its last use ended before any Get, is retired too.
		h.p.Put(busy)
		h.wantRetired(retired{id(busy), CloseIdle})
		h.wantKey("x", KeyStats{})
		// A Get ends that: the pool keeps idle connections again.
		d := h.get("x")
		if d == busy {
			t.Fatalf("Get after CloseIdle: got the retired connection")
		}
		h.p.Put(d)
		h.wantRetired()
		h.wantKey("x", KeyStats{Conns: 1, Idle: 1})
		if got := h.get("x"); got != d {
			t.Errorf("Get: got %v, want the idle %v", got.Value, d.Value)
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1}, gated())
		idle := h.goGet(context.Background(), "idle")
		h.nextDial().complete(1)
		h.p.Put(idle.wantConn())
		busy := h.goGet(context.Background(), "busy")
		h.nextDial().complete(1)
		busy.wantConn()
		waiter := h.goGet(context.Background(), "busy")
		dialing := h.goGet(context.Background(), "dialing")
		d := h.nextDial()
		waiter.wantBlocked()
		dialing.wantBlocked()

		h.p.Close()
		waiter.wantErr(ErrClosed)
		dialing.wantErr(ErrClosed)
		h.wantRetired(retired{id(idle.c), Closed})
		if _, _, err := h.p.Get(context.Background(), "idle"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after Close: got error %v, want %v", err, ErrClosed)
		}
		d.complete(1) // a dial that ends after Close is retired
		h.wantRetired(retired{3, Closed})
		h.p.Put(busy.c) // so is a connection whose use ends
		h.wantRetired(retired{id(busy.c), Closed})
		h.p.Remove(busy.c)
		h.p.Close()
		if got := h.p.Stats(); got.Conns != 0 || len(got.Keys) != 0 {
			t.Errorf("Stats: got %+v, want empty", got)
		}
	})
}

// TestCloseAndTakeIdle: CloseAndTakeIdle closes the pool as Close does, but hands the idle
// connections to its caller, least recently used first, instead of retiring them; a
// connection whose last use ends later is retired as after Close.
func TestCloseAndTakeIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{})
		older, newer, busy := h.get("a"), h.get("b"), h.get("a")
		h.p.Put(older)
		time.Sleep(time.Second)
		h.p.Put(newer)
		got := h.p.CloseAndTakeIdle()
		if want := []*fakeConn{older.Value, newer.Value}; !slices.Equal(got, want) {
			t.Errorf("CloseAndTakeIdle: got %v, want %v (least recently used first)", got, want)
		}
		h.wantRetired() // the caller ends them
		if _, _, err := h.p.Get(context.Background(), "a"); !errors.Is(err, ErrClosed) {
			t.Errorf("Get after CloseAndTakeIdle: got error %v, want %v", err, ErrClosed)
		}
		h.p.Put(busy)
		h.wantRetired(retired{id(busy), Closed})
		if got := h.p.CloseAndTakeIdle(); got != nil {
			t.Errorf("CloseAndTakeIdle again: got %v, want nil", got)
		}
		h.p.Close()
		h.wantRetired()
	})
}

func TestShared(t *testing.T) {
	tests := []struct {
		name      string
		maxPerKey int
		wantDials int // after the fourth Get
	}{
		{"fourth waits", 1, 1},
		{"fourth dials", 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: tt.maxPerKey}, capacity(3))
				defer h.p.Close()
				a := h.get("k")
				for i := range 2 {
					c, info, err := h.p.Get(context.Background(), "k")
					if err != nil || c != a || info != (GetInfo{Reused: true}) {
						t.Fatalf("Get %d: got (%v, %+v, %v), want (%v, %+v, nil)", i, c.Value, info, err, a.Value, GetInfo{Reused: true})
					}
				}
				h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 3})
				g := h.goGet(context.Background(), "k")
				if got := h.numDials(); got != tt.wantDials {
					t.Errorf("dials: got %v, want %v", got, tt.wantDials)
				}
				if tt.maxPerKey == 1 {
					g.wantBlocked()
					h.p.Put(a)
					if got := g.wantConn(); got != a {
						t.Errorf("waiter: got %v, want %v", got.Value, a.Value)
					}
				} else {
					h.p.Put(g.wantConn())
				}
				h.p.Put(a)
				h.p.Put(a)
				h.wantKey("k", KeyStats{Conns: tt.wantDials, Active: 1, Idle: tt.wantDials - 1, Uses: 1})
				h.p.Put(a)
				h.wantKey("k", KeyStats{Conns: tt.wantDials, Idle: tt.wantDials})
				h.wantRetired()
			})
		})
	}
}

func TestShareDials(t *testing.T) {
	tests := []struct {
		name       string
		shareDials func(string) bool
		knownCap   int // dial and drop a connection of this capacity first; 0: none
		capacity   int
		wantDials  int // for 5 concurrent Gets
	}{
		{"share, capacity 3", func(string) bool { return true }, 0, 3, 2},
		{"share, capacity 10", func(string) bool { return true }, 0, 10, 1},
		{"share, capacity 1", func(string) bool { return true }, 0, 1, 5},
		{"ShareDials false", func(string) bool { return false }, 0, 3, 5},
		{"ShareDials nil", nil, 0, 3, 5},
		{"capacity known above 1", nil, 100, 3, 2},
		{"capacity known 1 beats ShareDials", func(string) bool { return true }, 1, 3, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, Config[string, *fakeConn]{ShareDials: tt.shareDials}, gated())
				defer h.p.Close()
				var keep *Conn[string, *fakeConn]
				if tt.knownCap > 0 {
					g := h.goGet(context.Background(), "k")
					h.nextDial().complete(tt.knownCap)
					keep = g.wantConn()
					for range tt.knownCap - 1 { // fill it, so the Gets below dial
						h.get("k")
					}
				}
				var calls []*getCall
				for range 5 {
					calls = append(calls, h.goGet(context.Background(), "k"))
				}
				dials := 0
				for {
					synctest.Wait()
					select {
					case d := <-h.dials:
						dials++
						d.complete(tt.capacity)
						continue
					default:
					}
					break
				}
				if dials != tt.wantDials {
					t.Errorf("dials: got %v, want %v", dials, tt.wantDials)
				}
				uses := map[*Conn[string, *fakeConn]]int{}
				for _, g := range calls {
					uses[g.wantConn()]++
				}
				for c, n := range uses {
					if n > c.capacity {
						t.Errorf("%v: got %v uses, want at most %v", c.Value, n, c.capacity)
					}
				}
				if keep != nil && uses[keep] != 0 {
					t.Errorf("the full connection got %v uses, want 0", uses[keep])
				}
			})
		})
	}
}

func TestSetCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1})
		defer h.p.Close()
		a := h.get("k")
		g1 := h.goGet(context.Background(), "k")
		g2 := h.goGet(context.Background(), "k")
		g3 := h.goGet(context.Background(), "k")
		h.p.SetCapacity(a, 3) // serves two waiters at once, in order
		g1.wantConn()
		g2.wantConn()
		g3.wantBlocked()
		if g1.c != a || g2.c != a {
			t.Errorf("waiters: got %v and %v, want %v", g1.c.Value, g2.c.Value, a.Value)
		}
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 3, Waiting: 1})

		h.p.SetCapacity(a, 0) // counts as 1: no new uses until only one is left
		h.p.Put(a)
		h.p.Put(a)
		g3.wantBlocked()
		h.p.Put(a)
		if got := g3.wantConn(); got != a {
			t.Errorf("last waiter: got %v, want %v", got.Value, a.Value)
		}
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		h.p.Put(a)
		h.p.SetCapacity(a, 2) // idle: nothing to serve
		h.wantKey("k", KeyStats{Conns: 1, Idle: 1})
	})
}

func TestUnshare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 2}, capacity(2))
		defer h.p.Close()
		a := h.get("k")
		if a2 := h.get("k"); a2 != a {
			t.Fatalf("Get: got %v, want the shared %v", a2.Value, a.Value)
		}
		if got := h.p.Unshare(a); got {
			t.Errorf("Unshare in use: got %v, want %v", got, false)
		}
		h.p.Unshare(a) // twice is fine
		b := h.get("k")
		if b == a {
			t.Errorf("Get after Unshare: got the unshared connection, want a new one")
		}
		// a has a spare use but takes none: b serves the next Get, a waiter the one after.
		h.get("k")
		g := h.goGet(context.Background(), "k")
		g.wantBlocked()
		if got := h.p.Put(a); got {
			t.Errorf("Put of a use not the last: got %v, want %v", got, false)
		}
		g.wantBlocked()
		if got := h.p.Put(a); !got {
			t.Errorf("Put of the last use: got %v, want %v", got, true)
		}
		// a left and freed its slot: the waiter dials.
		if got := g.wantConn(); got == a || got == b {
			t.Errorf("waiter: got %v, want a new connection", got.Value)
		}
		h.wantRetired()
		if got := h.p.Put(a); got {
			t.Errorf("Put after the last: got %v, want %v", got, false)
		}
		h.p.Put(g.c)
		h.wantKey("k", KeyStats{Conns: 2, Active: 1, Idle: 1, Uses: 2})
		// An idle connection leaves at once.
		if got := h.p.Unshare(g.c); !got {
			t.Errorf("Unshare idle: got %v, want %v", got, true)
		}
		if got := h.p.Unshare(g.c); got {
			t.Errorf("Unshare again: got %v, want %v", got, false)
		}
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 2})
		h.wantRetired()
	})
}

func TestRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 1})
		defer h.p.Close()
		a := h.get("k")
		g := h.goGet(context.Background(), "k")
		g.wantBlocked()
		h.p.Remove(a)
		if got := g.wantConn(); got == a {
			t.Errorf("waiter: got the removed connection, want a new one")
		}
		h.p.Remove(a)
		if got := h.p.Put(a); got {
			t.Errorf("Put after Remove: got %v, want %v", got, false)
		}
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		h.p.Put(g.c)
		h.p.Remove(g.c) // idle
		h.wantRetired()
		if got := len(h.p.Stats().Keys); got != 0 {
			t.Errorf("keys: got %v, want %v", got, 0)
		}
	})
}

func TestTakeIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{})
		defer h.p.Close()
		a, b := h.get("k"), h.get("k")
		h.p.Put(a)
		if got := h.p.TakeIdle(b); got {
			t.Errorf("TakeIdle in use: got %v, want %v", got, false)
		}
		if got := h.p.TakeIdle(a); !got {
			t.Errorf("TakeIdle idle: got %v, want %v", got, true)
		}
		if got := h.p.TakeIdle(a); got {
			t.Errorf("TakeIdle again: got %v, want %v", got, false)
		}
		h.wantKey("k", KeyStats{Conns: 1, Active: 1, Uses: 1})
		h.wantRetired()
	})
}

func TestStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, Config[string, *fakeConn]{MaxPerKey: 2}, gated())
		defer h.p.Close()
		g1 := h.goGet(context.Background(), "a")
		h.nextDial().complete(2)
		a := g1.wantConn()
		h.get("a")
		g2 := h.goGet(context.Background(), "a")
		d := h.nextDial()
		g3 := h.goGet(context.Background(), "a")
		g4 := h.goGet(context.Background(), "b")
		db := h.nextDial()
		got := h.p.Stats()
		want := Stats[string]{
			KeyStats: KeyStats{Conns: 3, Active: 1, Dialing: 2, Waiting: 3, Uses: 2},
			Keys: map[string]KeyStats{
				"a": {Conns: 2, Active: 1, Dialing: 1, Waiting: 2, Uses: 2},
				"b": {Conns: 1, Dialing: 1, Waiting: 1},
			},
		}
		if got.KeyStats != want.KeyStats || len(got.Keys) != 2 || got.Keys["a"] != want.Keys["a"] || got.Keys["b"] != want.Keys["b"] {
			t.Errorf("Stats: got %+v, want %+v", got, want)
		}
		h.p.Put(a)
		d.complete(1)
		db.complete(1)
		for _, g := range []*getCall{g2, g3, g4} {
			h.p.Put(g.wantConn())
		}
		h.p.Put(a)
		h.wantKey("a", KeyStats{Conns: 2, Idle: 2})
		h.wantKey("b", KeyStats{Conns: 1, Idle: 1})
	})
}

func TestGetPutAllocs(t *testing.T) {
	h := newHarness(t, Config[string, *fakeConn]{MaxIdle: 10, IdleTimeout: time.Minute, Lifetime: func() time.Duration { return time.Hour }})
	defer h.p.Close()
	h.p.Put(h.get("k"))
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		c, _, err := h.p.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		h.p.Put(c)
	})
	if allocs != 0 {
		t.Errorf("allocs per Get+Put: got %v, want %v", allocs, 0)
	}
}
