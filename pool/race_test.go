package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// raceConn is the connection type of TestConcurrent: it counts its users.
type raceConn struct {
	capacity int
	users    atomic.Int32
	over     atomic.Bool // more users than capacity at some point
	retired  atomic.Int32
	removed  atomic.Bool
}

// TestConcurrent runs many goroutines doing Get, Put, Remove, Unshare, TakeIdle and
// CloseIdle on a few keys, with short timeouts and lifetimes, and dials that honour their
// ctx (the pool cancels those no Get waits for), and checks at the end that no connection
// had more users than its capacity, that no Get saw a cancelled dial's error, and that
// every connection is accounted for.
func TestConcurrent(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config[string, *raceConn]
	}{
		{"limits", Config[string, *raceConn]{MaxPerKey: 3, MaxIdle: 4, MaxIdlePerKey: 2}},
		{"timers", Config[string, *raceConn]{MaxPerKey: 4, IdleTimeout: 50 * time.Microsecond, Lifetime: func() time.Duration { return time.Duration(rand.IntN(300)) * time.Microsecond }}},
		{"no limits, shared dials", Config[string, *raceConn]{ShareDials: func(key string) bool { return key != "k0" }}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu      sync.Mutex
				all     []*raceConn
				dials   atomic.Int64
				aborted atomic.Int64 // dials that returned because the pool cancelled them
				retires atomic.Int64
				drops   atomic.Int64 // Remove, TakeIdle, Unshare or Put reporting true
			)
			errFlaky := errors.New("flaky dial")
			cfg := tt.cfg
			var p *Pool[string, *raceConn]
			cfg.Dial = func(ctx context.Context, key string) (*raceConn, int, error) {
				timer := time.NewTimer(time.Duration(rand.IntN(50)) * time.Microsecond)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
					if cause := context.Cause(ctx); cause != ErrDialAbandoned {
						t.Errorf("dial ctx cause: got %v, want %v", cause, ErrDialAbandoned)
					}
					aborted.Add(1)
					return nil, 0, context.Cause(ctx)
				}
				if rand.IntN(10) == 0 {
					return nil, 0, errFlaky
				}
				c := &raceConn{capacity: 1}
				if key != "k0" {
					c.capacity = 1 + rand.IntN(3)
				}
				mu.Lock()
				all = append(all, c)
				mu.Unlock()
				dials.Add(1)
				return c, c.capacity, nil
			}
			cfg.Retire = func(c *raceConn, why Reason) {
				if c.users.Load() != 0 {
					t.Errorf("retired %v with %d users, want 0", why, c.users.Load())
				}
				_ = p.Stats() // deadlocks (and times out) if Retire runs under the pool's lock
				c.retired.Add(1)
				retires.Add(1)
			}
			p = New(cfg)

			var wg sync.WaitGroup
			for g := range 32 {
				wg.Go(func() { // one client; exits after its iterations
					for i := range 300 {
						key := fmt.Sprintf("k%d", (g+i)%4)
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(500))*time.Microsecond)
						c, _, err := p.Get(ctx, key)
						cancel()
						if err != nil {
							if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errFlaky) {
								t.Errorf("Get: got error %v, want a deadline or dial error", err)
							}
							continue
						}
						if c.Key != key {
							t.Errorf("Get(%q): got a connection of %q", key, c.Key)
						}
						if n := c.Value.users.Add(1); int(n) > c.Value.capacity {
							c.Value.over.Store(true)
						}
						time.Sleep(time.Duration(rand.IntN(20)) * time.Microsecond)
						c.Value.users.Add(-1)
						switch r := rand.IntN(20); {
						case r == 0:
							if c.Value.removed.CompareAndSwap(false, true) {
								drops.Add(1)
							}
							p.Remove(c)
						case r == 1:
							if p.Unshare(c) {
								drops.Add(1)
							}
							if p.Put(c) {
								drops.Add(1)
							}
						case r == 2:
							if p.Put(c) {
								drops.Add(1)
							}
							if p.TakeIdle(c) {
								drops.Add(1)
							}
						case r == 3:
							if p.Put(c) {
								drops.Add(1)
							}
							p.CloseIdle()
						default:
							if p.Put(c) {
								drops.Add(1)
							}
						}
					}
				})
			}
			wg.Wait()
			// Dials started for Gets that were served meanwhile run on; let them land.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.WaitDials(ctx); err != nil {
				t.Fatalf("WaitDials: got %v, want nil", err)
			}
			t.Logf("%d dials, %d cancelled", dials.Load(), aborted.Load())
			if err := p.invariantErr(); err != nil {
				t.Fatal(err)
			}
			s := p.Stats()
			if s.Active != 0 || s.Uses != 0 || s.Dialing != 0 || s.Waiting != 0 || s.Conns != s.Idle {
				t.Errorf("Stats at rest: got %+v, want only idle connections", s.KeyStats)
			}
			if got, want := int64(s.Idle), dials.Load()-retires.Load()-drops.Load(); got != want {
				t.Errorf("idle: got %v, want dials - retired - dropped = %v", got, want)
			}
			p.Close()
			if got, want := retires.Load()+drops.Load(), dials.Load(); got != want {
				t.Errorf("retired + dropped after Close: got %v, want %v dialled", got, want)
			}
			if err := p.WaitDials(ctx); err != nil {
				t.Errorf("WaitDials after Close: got %v, want nil", err)
			}
			mu.Lock()
			defer mu.Unlock()
			for i, c := range all {
				if c.over.Load() {
					t.Errorf("conn %d: had more users than its capacity %d", i, c.capacity)
				}
				if n := c.retired.Load(); n > 1 {
					t.Errorf("conn %d: retired %d times, want at most once", i, n)
				}
			}
		})
	}
}

// TestConcurrentClose closes the pool while many goroutines Get and Put, over dials that
// hang until their ctx is done or a short while passes, and checks that Close cancels
// every dial, that WaitDials then returns, and that every connection dialled was retired
// or dropped: none is left in the pool, nor lost.
func TestConcurrentClose(t *testing.T) {
	var abandoned, closedDials, raced atomic.Int64 // over all runs, for the log
	defer func() {
		t.Logf("dials cancelled: %d abandoned, %d by Close; %d returned a connection all the same",
			abandoned.Load(), closedDials.Load(), raced.Load())
	}()
	for run := range 20 {
		var (
			dials   atomic.Int64
			retires atomic.Int64
			drops   atomic.Int64
			closed  atomic.Bool
		)
		p := New(Config[string, *raceConn]{
			MaxPerKey:  2,
			ShareDials: func(key string) bool { return key == "h2" },
			Dial: func(ctx context.Context, key string) (*raceConn, int, error) {
				timer := time.NewTimer(time.Duration(rand.IntN(200)) * time.Microsecond)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
					switch cause := context.Cause(ctx); cause {
					case ErrDialAbandoned:
						abandoned.Add(1)
					case ErrClosed:
						closedDials.Add(1)
					default:
						t.Errorf("dial ctx cause: got %v, want %v or %v", cause, ErrDialAbandoned, ErrClosed)
					}
					if rand.IntN(4) != 0 {
						return nil, 0, context.Cause(ctx)
					}
					// Else lose the race: return a connection all the same.
					raced.Add(1)
				}
				dials.Add(1)
				c := &raceConn{capacity: 1}
				if key == "h2" {
					c.capacity = 3
				}
				return c, c.capacity, nil
			},
			Retire: func(c *raceConn, why Reason) {
				if c.retired.Add(1) > 1 {
					t.Errorf("retired twice")
				}
				retires.Add(1)
			},
		})
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Go(func() { // one client; exits once the pool is closed
				for i := 0; ; i++ {
					key := []string{"h1", "h2", "other"}[(g+i)%3]
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(300))*time.Microsecond)
					c, _, err := p.Get(ctx, key)
					cancel()
					switch {
					case errors.Is(err, ErrClosed):
						return
					case err != nil:
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Errorf("Get: got error %v, want a deadline or ErrClosed", err)
						}
						if closed.Load() {
							return
						}
						continue
					}
					time.Sleep(time.Duration(rand.IntN(20)) * time.Microsecond)
					if rand.IntN(10) == 0 {
						if c.Value.removed.CompareAndSwap(false, true) { // shared: count it once
							drops.Add(1)
						}
						p.Remove(c)
						continue
					}
					if rand.IntN(10) == 0 {
						p.CloseIdle()
					}
					if p.Put(c) {
						drops.Add(1)
					}
				}
			})
		}
		time.Sleep(time.Duration(1+rand.IntN(5)) * time.Millisecond)
		p.Close()
		closed.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.WaitDials(ctx); err != nil {
			t.Fatalf("run %d: WaitDials after Close: got %v, want nil", run, err)
		}
		cancel()
		wg.Wait()
		if err := p.invariantErr(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if s := p.Stats(); s.Conns != 0 || s.Dialing != 0 || s.Waiting != 0 || len(s.Keys) != 0 {
			t.Errorf("run %d: Stats after Close and WaitDials: got %+v, want empty", run, s)
		}
		if got, want := retires.Load()+drops.Load(), dials.Load(); got != want {
			t.Errorf("run %d: retired + dropped: got %v, want %v dialled", run, got, want)
		}
	}
}

func BenchmarkGetPut(b *testing.B) {
	p := New(Config[string, int]{
		MaxIdle:     100,
		IdleTimeout: time.Minute,
		Dial:        func(context.Context, string) (int, int, error) { return 1, 1, nil },
	})
	defer p.Close()
	ctx := context.Background()
	c, _, _ := p.Get(ctx, "https://example.com:443")
	p.Put(c)
	b.ReportAllocs()
	for b.Loop() {
		c, _, err := p.Get(ctx, "https://example.com:443")
		if err != nil {
			b.Fatal(err)
		}
		p.Put(c)
	}
}

func BenchmarkGetPutParallel(b *testing.B) {
	p := New(Config[string, int]{
		IdleTimeout: time.Minute,
		Dial:        func(context.Context, string) (int, int, error) { return 1, 1, nil },
	})
	defer p.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, _, err := p.Get(ctx, "https://example.com:443")
			if err != nil {
				b.Error(err)
				return
			}
			p.Put(c)
		}
	})
}
