package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeConn is the connection type of the tests.
type fakeConn struct {
	id  int
	key string
}

func (c *fakeConn) String() string { return fmt.Sprintf("%s#%d", c.key, c.id) }

// retired is one call of Config.Retire.
type retired struct {
	id  int
	why Reason
}

// pendingDial is a gated dial waiting for the test to complete it.
type pendingDial struct {
	key      string
	ctx      context.Context
	reply    chan dialReply
	returned chan struct{} // closed when Dial returns
}

type dialReply struct {
	capacity int
	err      error
}

// complete makes the dial succeed with capacity.
func (d *pendingDial) complete(capacity int) { d.reply <- dialReply{capacity: capacity} }

// fail makes the dial fail with err.
func (d *pendingDial) fail(err error) { d.reply <- dialReply{err: err} }

// wantCancelled wants the dial's ctx done, with cause want.
func (d *pendingDial) wantCancelled(t *testing.T, want error) {
	t.Helper()
	synctest.Wait()
	if err := d.ctx.Err(); err == nil {
		t.Fatalf("dial ctx of %q: got no error, want it cancelled with cause %v", d.key, want)
	}
	if got := context.Cause(d.ctx); got != want {
		t.Fatalf("dial ctx cause of %q: got %v, want %v", d.key, got, want)
	}
}

// wantLive wants the dial's ctx not done.
func (d *pendingDial) wantLive(t *testing.T) {
	t.Helper()
	synctest.Wait()
	if err := d.ctx.Err(); err != nil {
		t.Fatalf("dial ctx of %q: got error %v (cause %v), want nil", d.key, err, context.Cause(d.ctx))
	}
}

// wantReturned wants Dial to have returned.
func (d *pendingDial) wantReturned(t *testing.T) {
	t.Helper()
	synctest.Wait()
	select {
	case <-d.returned:
	default:
		t.Fatalf("dial of %q: still running, want it returned", d.key)
	}
}

// harness runs a pool over fakeConns, counts dials and records retirements.
type harness struct {
	t     *testing.T
	p     *Pool[string, *fakeConn]
	gated bool              // dials wait for the test (dial, complete, fail)
	hang  bool              // gated dials also return when their ctx is done
	dials chan *pendingDial // gated dials
	slow  time.Duration     // how long Retire takes

	mu       sync.Mutex // guards the following
	ids      int
	capacity int // capacity of ungated dials
	retired  []retired
	conns    []*fakeConn // every connection dialled
}

type harnessOption func(*harness, *Config[string, *fakeConn])

// gated makes every dial wait for the test to complete or fail it.
func gated() harnessOption { return func(h *harness, _ *Config[string, *fakeConn]) { h.gated = true } }

// hanging makes every dial wait for the test, as gated does, or for its ctx to be done: it
// then fails with the ctx's cause, as a dial to a server that never answers does.
func hanging() harnessOption {
	return func(h *harness, _ *Config[string, *fakeConn]) { h.gated, h.hang = true, true }
}

// slowRetire makes every Retire call take d before it records the retirement.
func slowRetire(d time.Duration) harnessOption {
	return func(h *harness, _ *Config[string, *fakeConn]) { h.slow = d }
}

// capacity sets the capacity of ungated dials (default 1).
func capacity(n int) harnessOption {
	return func(h *harness, _ *Config[string, *fakeConn]) { h.capacity = n }
}

func newHarness(t *testing.T, cfg Config[string, *fakeConn], opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, capacity: 1, dials: make(chan *pendingDial, 100)}
	for _, o := range opts {
		o(h, &cfg)
	}
	cfg.Dial = h.dial
	cfg.Retire = h.retire
	h.p = New(cfg)
	return h
}

func (h *harness) dial(ctx context.Context, key string) (*fakeConn, int, error) {
	h.mu.Lock()
	n := h.capacity
	h.mu.Unlock()
	if h.gated {
		d := &pendingDial{key: key, ctx: ctx, reply: make(chan dialReply), returned: make(chan struct{})}
		defer close(d.returned)
		h.dials <- d
		var done <-chan struct{}
		if h.hang {
			done = ctx.Done()
		}
		var r dialReply
		select {
		case r = <-d.reply:
		case <-done:
			r.err = context.Cause(ctx)
		}
		if r.err != nil {
			return nil, 0, r.err
		}
		n = r.capacity
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids++
	c := &fakeConn{id: h.ids, key: key}
	h.conns = append(h.conns, c)
	return c, n, nil
}

func (h *harness) retire(c *fakeConn, why Reason) {
	if !lockFree(&h.p.mu) {
		h.t.Errorf("Retire(%v, %v) called with the pool's lock held", c, why)
	}
	time.Sleep(h.slow)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retired = append(h.retired, retired{c.id, why})
}

// lockFree reports whether mu can be locked soon: another goroutine holds the pool's lock
// only for moments, so a lock that stays held is held by the caller.
func lockFree(mu *sync.Mutex) bool {
	for range 10000 {
		if mu.TryLock() {
			mu.Unlock()
			return true
		}
		runtime.Gosched()
	}
	return false
}

// numDials returns how many dials have succeeded.
func (h *harness) numDials() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// get calls Get, which must succeed at once.
func (h *harness) get(key string) *Conn[string, *fakeConn] {
	h.t.Helper()
	c, _, err := h.p.Get(context.Background(), key)
	if err != nil {
		h.t.Fatalf("Get(%q): got error %v, want nil", key, err)
	}
	return c
}

// getCall is a Get running in a goroutine of its own.
type getCall struct {
	h    *harness
	key  string
	done chan struct{}
	c    *Conn[string, *fakeConn]
	info GetInfo
	err  error
}

// goGet starts Get(ctx, key) and waits until it has either returned or blocked.
func (h *harness) goGet(ctx context.Context, key string) *getCall {
	g := &getCall{h: h, key: key, done: make(chan struct{})}
	go func() { // the Get under test; exits when Get returns
		defer close(g.done)
		g.c, g.info, g.err = h.p.Get(ctx, key)
	}()
	synctest.Wait()
	return g
}

// finished reports whether the Get has returned.
func (g *getCall) finished() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// wantBlocked fails the test if the Get has returned.
func (g *getCall) wantBlocked() {
	g.h.t.Helper()
	synctest.Wait()
	if g.finished() {
		g.h.t.Fatalf("Get(%q) returned (%v, %v), want it blocked", g.key, g.c, g.err)
	}
}

// wantConn waits for the Get to finish and wants a connection.
func (g *getCall) wantConn() *Conn[string, *fakeConn] {
	g.h.t.Helper()
	synctest.Wait()
	if !g.finished() {
		g.h.t.Fatalf("Get(%q) blocked, want a connection", g.key)
	}
	if g.err != nil {
		g.h.t.Fatalf("Get(%q): got error %v, want nil", g.key, g.err)
	}
	return g.c
}

// wantErr waits for the Get to finish and wants an error that is want.
func (g *getCall) wantErr(want error) {
	g.h.t.Helper()
	synctest.Wait()
	if !g.finished() {
		g.h.t.Fatalf("Get(%q) blocked, want error %v", g.key, want)
	}
	if !errors.Is(g.err, want) {
		g.h.t.Fatalf("Get(%q): got (%v, %v), want error %v", g.key, g.c, g.err, want)
	}
}

// nextDial returns the gated dial in progress that came first.
func (h *harness) nextDial() *pendingDial {
	h.t.Helper()
	synctest.Wait()
	select {
	case d := <-h.dials:
		return d
	default:
		h.t.Fatalf("no dial in progress, want one")
		return nil
	}
}

// wantNoDial fails the test if a gated dial is waiting.
func (h *harness) wantNoDial() {
	h.t.Helper()
	synctest.Wait()
	select {
	case d := <-h.dials:
		h.t.Fatalf("got a dial for %q, want none", d.key)
	default:
	}
}

// wantRetired wants exactly these retirements since the last call, in order.
func (h *harness) wantRetired(want ...retired) {
	h.t.Helper()
	synctest.Wait()
	h.mu.Lock()
	got := h.retired
	h.retired = nil
	h.mu.Unlock()
	if !slices.Equal(got, want) {
		h.t.Fatalf("retired: got %v, want %v", got, want)
	}
}

// wantKey wants the stats of key.
func (h *harness) wantKey(key string, want KeyStats) {
	h.t.Helper()
	synctest.Wait()
	if got := h.p.Stats().Keys[key]; got != want {
		h.t.Fatalf("Stats().Keys[%q]: got %+v, want %+v", key, got, want)
	}
	h.checkInvariants()
}

// id returns the id of c's value.
func id(c *Conn[string, *fakeConn]) int { return c.Value.id }

// checkInvariants checks the pool's bookkeeping against every connection dialled.
func (h *harness) checkInvariants() {
	h.t.Helper()
	if err := h.p.invariantErr(); err != nil {
		h.t.Fatal(err)
	}
}

// invariantErr checks that the lists, heap and counters of p agree with each other.
func (p *Pool[K, C]) invariantErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := 0
	var last time.Time
	for c := p.idle.head; c != nil; c = c.glink.next {
		if c.state != stateIdle || c.uses != 0 {
			return fmt.Errorf("idle list holds a connection in state %v with %d uses", c.state, c.uses)
		}
		if !last.IsZero() && c.idleSince.After(last) {
			return fmt.Errorf("idle list not in LRU order")
		}
		last = c.idleSince
		seen++
	}
	if seen != p.idle.len {
		return fmt.Errorf("idle list: got %d connections, want its len %d", seen, p.idle.len)
	}
	for i, c := range p.life {
		if c.heapIndex != i {
			return fmt.Errorf("life heap: got index %d, want %d", c.heapIndex, i)
		}
		if c.state == stateGone {
			return fmt.Errorf("life heap holds a connection out of the pool")
		}
	}
	idle, dials := 0, 0
	for key, ks := range p.keys {
		if ks.key != key {
			return fmt.Errorf("key %v holds the state of %v", key, ks.key)
		}
		n := 0
		for c := ks.idle.head; c != nil; c = c.klink.next {
			if c.ks != ks || c.state != stateIdle {
				return fmt.Errorf("key %v: idle list holds a stranger", key)
			}
			n++
		}
		if n != ks.idle.len {
			return fmt.Errorf("key %v: got %d idle, want %d", key, n, ks.idle.len)
		}
		idle += n
		for c := ks.shared.head; c != nil; c = c.klink.next {
			if !c.inShared || c.state != stateActive || c.uses == 0 || c.uses >= c.capacity || c.unshared || c.expired {
				return fmt.Errorf("key %v: shared list holds %d/%d uses unshared=%v expired=%v", key, c.uses, c.capacity, c.unshared, c.expired)
			}
		}
		if ks.conns != len(ks.dials)+ks.active+ks.idle.len {
			return fmt.Errorf("key %v: conns %d != dialing %d + active %d + idle %d", key, ks.conns, len(ks.dials), ks.active, ks.idle.len)
		}
		abandoned := 0
		for i, d := range ks.dials {
			if d.index != i {
				return fmt.Errorf("key %v: dial at %d has index %d", key, i, d.index)
			}
			if d.w.ks != ks {
				return fmt.Errorf("key %v: dial for a waiter of %v", key, d.w.ks.key)
			}
			if d.cancelled {
				abandoned++
				if d.w.el != nil {
					return fmt.Errorf("key %v: cancelled dial whose waiter still waits", key)
				}
			}
		}
		if abandoned != ks.abandoned {
			return fmt.Errorf("key %v: got %d cancelled dials, want abandoned %d", key, abandoned, ks.abandoned)
		}
		dials += len(ks.dials)
		if p.cfg.MaxPerKey > 0 && ks.conns > p.cfg.MaxPerKey {
			return fmt.Errorf("key %v: got %d conns, want at most %d", key, ks.conns, p.cfg.MaxPerKey)
		}
		if ks.waiters.Len() > 0 && (ks.idle.len > 0 || ks.shared.len > 0) {
			return fmt.Errorf("key %v: %d waiters while %d idle and %d shared", key, ks.waiters.Len(), ks.idle.len, ks.shared.len)
		}
		if ks.conns == 0 && ks.waiters.Len() == 0 {
			return fmt.Errorf("key %v: empty state kept", key)
		}
	}
	if idle != p.idle.len {
		return fmt.Errorf("got %d idle over keys, want %d", idle, p.idle.len)
	}
	if p.dialsRunning < dials {
		return fmt.Errorf("got %d dial goroutines running, want at least the %d dials in progress", p.dialsRunning, dials)
	}
	if p.dialsRunning == 0 && p.dialsDone != nil {
		return fmt.Errorf("dialsDone kept with no dial running")
	}
	return nil
}
