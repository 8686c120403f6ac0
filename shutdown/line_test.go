package shutdown

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// lineProbe is a layer whose goodbye takes work of fake time, then waits on a peer that
// answers after peer: it records when each teardown began to speak and how many spoke
// at once.
type lineProbe struct {
	work, peer time.Duration
	mu         sync.Mutex
	starts     map[string]time.Time
	order      []string
	speaking   atomic.Int32
	maxAtOnce  atomic.Int32
}

func newLineProbe(work, peer time.Duration) *lineProbe {
	return &lineProbe{work: work, peer: peer, starts: map[string]time.Time{}}
}

// start returns when the teardown named name began to speak.
func (lp *lineProbe) start(name string) time.Time {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.starts[name]
}

// started returns the names of the teardowns that spoke, in order.
func (lp *lineProbe) started() []string {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return slices.Clone(lp.order)
}

func (lp *lineProbe) layer(name string) Layer {
	return &fakeLayer{name: name, log: &callLog{}, graceful: func(ctx context.Context, p *Progress) error {
		lp.mu.Lock()
		lp.starts[name] = time.Now()
		lp.order = append(lp.order, name)
		lp.mu.Unlock()
		n := lp.speaking.Add(1)
		for {
			m := lp.maxAtOnce.Load()
			if n <= m || lp.maxAtOnce.CompareAndSwap(m, n) {
				break
			}
		}
		select { // the goodbye's CPU work
		case <-time.After(lp.work):
		case <-ctx.Done():
		}
		lp.speaking.Add(-1)
		p.Waiting()
		select {
		case <-time.After(lp.peer):
			p.Note(FINSent)
			p.Note(FINReceived)
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}}
}

// TestLineSpreadsAMassClose: two hundred teardowns started together speak one at a time,
// in order; while more than a crowd wait, each starts after a pause three times as long
// as the last goodbye; the last crowd goes as fast as its turn allows. All end clean.
func TestLineSpreadsAMassClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		lp := newLineProbe(time.Millisecond, 10*time.Millisecond)
		sink := &recordSink{}
		start := time.Now()
		// The pacer starts as soon as the first is in line: a first teardown that holds
		// its turn until all are in line makes the line's length the same in every run.
		release := make(chan struct{})
		e.Go(t.Context(), Job{Layers: []Layer{&fakeLayer{name: "hold", log: &callLog{}, graceful: func(context.Context, *Progress) error {
			<-release
			return nil
		}}}, Mode: Graceful})
		const n = 200
		for i := range n {
			e.Go(t.Context(), Job{Layers: []Layer{lp.layer(fmt.Sprint(i))}, Mode: Graceful, Reason: fmt.Sprint(i), Done: sink.done})
		}
		close(release)
		if got := time.Since(start); got != 0 {
			t.Errorf("Go took %v of fake time, want 0", got)
		}
		if err := e.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := make([]string, n)
		for i := range n {
			want[i] = fmt.Sprint(i)
		}
		if !slices.Equal(lp.started(), want) {
			t.Errorf("order: got %v, want 0..%d", lp.started(), n-1)
		}
		if got := lp.maxAtOnce.Load(); got != 1 {
			t.Errorf("teardowns speaking at once: got %d, want 1", got)
		}
		// The first starts at once, the second when the first gives its turn back
		// (nothing to pace by yet), then 4 ms apart (1 ms of goodbye, 3 of pause) while
		// more than 64 wait, then 1 ms apart. The pacer keeps a schedule, which allows a
		// millisecond of catching up (timers are coarse): the third comes as soon as
		// 3 ms after the second. 0.6 s in all: the budget's half (1 s) does not hurry them.
		if got := lp.start("0").Sub(start); got != 0 {
			t.Errorf("first start: got +%v, want +0", got)
		}
		if got := lp.start("1").Sub(start); got != time.Millisecond {
			t.Errorf("second start: got +%v, want +1ms", got)
		}
		for i := 2; i < n; i++ {
			want := 4 * time.Millisecond
			switch {
			case i == 2:
				want = 3 * time.Millisecond
			case n-(i-1) <= crowd: // the line was a crowd or less when i-1 started
				want = time.Millisecond
			}
			if gap := lp.start(fmt.Sprint(i)).Sub(lp.start(fmt.Sprint(i - 1))); gap != want {
				t.Errorf("start %d: %v after the one before, want %v", i, gap, want)
			}
		}
		for i := range n {
			r := sink.byReason(t, fmt.Sprint(i))
			if r.Outcome != Clean {
				t.Errorf("%d: outcome %v, want clean", i, r.Outcome)
			}
			// The record counts from the decision, the wait in line included.
			if !r.Start.Equal(start) {
				t.Errorf("%d: record start +%v, want +0", i, r.Start.Sub(start))
			}
		}
	})
}

// TestLineKeepsToTheBudget: when the pace would take the line past half of the budget, it
// speeds up: every teardown has started by then and none times out.
func TestLineKeepsToTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		// 1000 goodbyes of 0.5 ms each: 2 s at the quarter-CPU pace, 0.5 s back to back.
		lp := newLineProbe(500*time.Microsecond, 50*time.Millisecond)
		sink := &recordSink{}
		start := time.Now()
		const n = 1000
		for i := range n {
			e.Go(t.Context(), Job{Layers: []Layer{lp.layer(fmt.Sprint(i))}, Mode: Graceful, Reason: fmt.Sprint(i), Budget: 2 * time.Second, Done: sink.done})
		}
		if err := e.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		last := lp.start(fmt.Sprint(n - 1)).Sub(start)
		if last > time.Second {
			t.Errorf("last start: +%v, want by +1s (half the budget)", last)
		}
		if last < 900*time.Millisecond {
			t.Errorf("last start: +%v, want the line spread over about half the budget", last)
		}
		for i := range n {
			if r := sink.byReason(t, fmt.Sprint(i)); r.Outcome != Clean {
				t.Errorf("%d: outcome %v (%v), want clean", i, r.Outcome, r.Err)
			}
		}
		if got := lp.maxAtOnce.Load(); got != 1 {
			t.Errorf("teardowns speaking at once: got %d, want 1", got)
		}
	})
}

// TestLineWaitingCostsNoGoroutine: teardowns in line are not goroutines: a thousand of
// them wait behind one that holds its turn with a handful of goroutines in all.
func TestLineWaitingCostsNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		lp := newLineProbe(time.Second, 0) // a goodbye of a second: holds its turn
		base := runtime.NumGoroutine()
		for i := range 1000 {
			e.Go(t.Context(), Job{Layers: []Layer{lp.layer(fmt.Sprint(i))}, Mode: Graceful, Budget: time.Minute})
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		// The first teardown, its turn's timer, the pacer, and the teardowns started
		// each HoldLimit since: 1 ms in, HoldLimit is 5 ms.
		if got := runtime.NumGoroutine() - base; got > 4 {
			t.Errorf("goroutines with 1000 teardowns in line: %d more, want at most 4", got)
		}
		e.ForceAll(nil)
		e.Wait(context.Background())
	})
}

// TestLineHoldLimit: a teardown that keeps its turn (a goodbye that blocks) holds the
// line up for HoldLimit, no longer.
func TestLineHoldLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		stuck := newLineProbe(time.Hour, 0)
		quick := newLineProbe(0, time.Millisecond)
		start := time.Now()
		e.Go(t.Context(), Job{Layers: []Layer{stuck.layer("stuck")}, Mode: Graceful, Budget: time.Second})
		e.Go(t.Context(), Job{Layers: []Layer{quick.layer("next")}, Mode: Graceful, Budget: time.Second})
		time.Sleep(time.Hour)
		if got := quick.start("next").Sub(start); got != HoldLimit {
			t.Errorf("next start: +%v, want +%v", got, HoldLimit)
		}
		e.Wait(context.Background())
	})
}

// TestLineForceAllAndContext: ForceAll starts everything in line at once, forced; a
// teardown whose context ends while in line starts at once, forced with its cause; aborts
// never wait in line.
func TestLineForceAllAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		lp := newLineProbe(10*time.Millisecond, time.Hour)
		sink := &recordSink{}
		start := time.Now()
		for i := range 50 {
			e.Go(t.Context(), Job{Layers: []Layer{lp.layer(fmt.Sprint(i))}, Mode: Graceful, Reason: fmt.Sprint(i), Budget: time.Minute, Done: sink.done})
		}
		ctx, cancel := context.WithCancel(t.Context())
		e.Go(ctx, Job{Layers: []Layer{lp.layer("ctx")}, Mode: Graceful, Reason: "ctx", Budget: time.Minute, Done: sink.done})
		e.Go(t.Context(), Job{Layers: []Layer{lp.layer("abort")}, Mode: Abort, Reason: "abort", Done: sink.done})
		synctest.Wait()
		if r := sink.byReason(t, "abort"); r.Outcome != Aborted || r.Duration != 0 {
			t.Errorf("abort: %v after %v, want aborted at once", r.Outcome, r.Duration)
		}
		time.Sleep(100 * time.Millisecond)
		cancel()
		synctest.Wait()
		if r := sink.byReason(t, "ctx"); r.Outcome != TimedOut || r.Err != context.Canceled || r.Duration != 100*time.Millisecond {
			t.Errorf("ctx: %v, %v after %v, want timed_out, context canceled after 100ms", r.Outcome, r.Err, r.Duration)
		}
		started := len(lp.started())
		if started >= 50 {
			t.Fatalf("%d started in 100ms, want the line still waiting", started)
		}
		time.Sleep(100 * time.Millisecond)
		e.ForceAll(errClosedForTest)
		synctest.Wait()
		if got := e.Running(); got != 0 {
			t.Errorf("Running after ForceAll: %d, want 0", got)
		}
		for i := range 50 {
			r := sink.byReason(t, fmt.Sprint(i))
			if r.Outcome != TimedOut || r.Err != errClosedForTest || time.Since(start) != 200*time.Millisecond {
				t.Errorf("%d: %v, %v, want timed_out by ForceAll at +200ms", i, r.Outcome, r.Err)
			}
		}
	})
}

var errClosedForTest = fmt.Errorf("closed for the test")

// TestLineTurns: with two turns, two teardowns speak at once, never three, and the pause
// is halved: goodbyes take a quarter of two CPUs.
func TestLineTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 2}
		lp := newLineProbe(4*time.Millisecond, time.Millisecond)
		const n = 200
		for i := range n {
			e.Go(t.Context(), Job{Layers: []Layer{lp.layer(fmt.Sprint(i))}, Mode: Graceful, Budget: time.Minute})
		}
		if err := e.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := lp.maxAtOnce.Load(); got != 2 {
			t.Errorf("teardowns speaking at once: got %d, want 2", got)
		}
		// Paced starts come 8 ms apart: (4 ms of goodbye + 12 ms of pause) / 2 turns.
		if gap := lp.start("100").Sub(lp.start("99")); gap != 8*time.Millisecond {
			t.Errorf("paced starts: %v apart, want 8ms", gap)
		}
	})
}

// TestLineForcedInLineSaysNothing: teardowns still in line when ForceAll comes (a
// Transport.Close after CloseIdleConnections) start forced, and none of their layers
// speaks: only aborts, no goodbye after the decision to abort.
func TestLineForcedInLineSaysNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := Engine{MaxStarting: 1}
		lp := newLineProbe(10*time.Millisecond, time.Hour)
		logs := make([]*callLog, 100)
		for i := range logs {
			logs[i] = &callLog{}
			l := lp.layer(fmt.Sprint(i)).(*fakeLayer)
			l.log = logs[i]
			e.Go(t.Context(), Job{Layers: []Layer{l}, Mode: Graceful, Budget: time.Minute})
		}
		time.Sleep(100 * time.Millisecond)
		spoke := len(lp.started())
		e.ForceAll(errClosedForTest)
		if err := e.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if spoke == 0 || spoke >= len(logs) {
			t.Fatalf("%d spoke before ForceAll, want some but not all", spoke)
		}
		if got := len(lp.started()); got != spoke {
			t.Errorf("%d spoke in all, %d before ForceAll: the ones in line spoke after it", got, spoke)
		}
		for i := spoke; i < len(logs); i++ {
			if got := logs[i].got(); !slices.Equal(got, []string{fmt.Sprint(i) + ".abort"}) {
				t.Errorf("%d: calls %v, want its abort only", i, got)
			}
		}
	})
}
