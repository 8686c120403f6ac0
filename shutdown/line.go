package shutdown

import (
	"context"
	"runtime"
	"sync/atomic"
	"time"
)

// The line: how an engine starts its graceful teardowns.
//
// Closing ten thousand connections at once is a burst of CPU work (a close_notify to seal
// and write, the peer's to read, a socket to close, for every one of them) and, if each
// teardown had its own runnable goroutine from the start, a run queue ten thousand deep:
// every goroutine of the program that wakes from I/O meanwhile, a request's among them,
// would wait behind all of them. So graceful teardowns wait in a line, costing a few
// words each, and a pacer starts them:
//   - at most a few at a time say their goodbyes (turns: GOMAXPROCS/2, at least one); a
//     teardown gives its turn back as soon as it waits on the peer (Progress.Waiting), or
//     after HoldLimit, or when it ends;
//   - while more than a crowd (64) wait, the pacer pauses after each start three times as
//     long as the last goodbye took, divided by the number of turns, so that goodbyes take
//     about a quarter of the CPUs the turns stand for (a goodbye made slow by a busy
//     machine slows the line down further); a shorter line moves as fast as its turns;
//   - but never so slowly that the line would not be through before half of the budget of
//     the one at its head has passed: the budget bounds every teardown as before, counted
//     from the decision, and a teardown has at least half of it left when it starts (given
//     the CPU to keep up).
// A connection closed on its own (an idle timeout) meets an empty line and starts at
// once. Aborts never wait in line. ForceAll, and a teardown's context ending, start the
// ones concerned at once, forced.

// HoldLimit is the longest a teardown keeps its turn before the next one in line may
// start anyway: a goodbye that blocks (a close_notify write to a peer that reads nothing)
// slows the line down by this much, never stops it.
const HoldLimit = 5 * time.Millisecond

// crowd is the length of line from which the pacer pauses between starts: a few
// connections closing at once, or steady churn the CPUs keep up with, never wait.
const crowd = 64

// paceRatio is the pause the pacer makes after a goodbye, in multiples of the time the
// goodbye took.
const paceRatio = 3

// pending is a graceful teardown waiting in line.
type pending struct {
	f       *forceSignal
	ctx     context.Context
	j       Job // j.Deadline is set
	at      time.Time
	started atomic.Bool
	stopCtx func() bool // stops the watch on ctx, if any
}

// enqueue puts a graceful teardown in line, and starts a pacer if none is running. Called
// with e.mu unlocked.
func (e *Engine) enqueue(ctx context.Context, f *forceSignal, j Job, at time.Time) {
	p := &pending{f: f, ctx: ctx, j: j, at: at}
	if ctx.Done() != nil {
		// Read only by whoever takes p from the line under e.mu, after the append below.
		p.stopCtx = context.AfterFunc(ctx, func() {
			if p.started.CompareAndSwap(false, true) {
				e.launch(p, nil)
			}
		})
	}
	e.mu.Lock()
	e.line = append(e.line, p)
	if !e.pacing {
		e.pacing = true
		if e.turns == nil {
			n := e.MaxStarting
			if n <= 0 {
				n = max(1, runtime.GOMAXPROCS(0)/2)
			}
			e.turns = make(chan struct{}, n)
			e.wake = make(chan struct{}, 1)
		}
		go e.pace()
	}
	// A pacer already running needs no wake-up: its next start is as scheduled.
	e.mu.Unlock()
}

// pace starts the teardowns in line, in order, at the pace described above, and exits
// when the line is empty.
func (e *Engine) pace() {
	var timer *time.Timer
	var next time.Time // the earliest the next start may happen
	for {
		e.mu.Lock()
		for len(e.line) > 0 && e.line[0].started.Load() {
			e.popLocked()
		}
		if len(e.line) == 0 {
			e.pacing = false
			e.line = nil
			e.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return
		}
		head := e.line[0]
		waiting := len(e.line)
		now := time.Now()
		if now.Before(next) {
			e.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(next.Sub(now))
			} else {
				timer.Reset(next.Sub(now))
			}
			select {
			case <-timer.C:
			case <-e.wake:
				timer.Stop()
			}
			continue
		}
		e.popLocked()
		e.mu.Unlock()
		if !head.started.CompareAndSwap(false, true) {
			continue // started by ForceAll or its context
		}
		head.stopWatch()
		e.turns <- struct{}{}
		t := &turn{e: e, at: time.Now()}
		t.timer = time.AfterFunc(HoldLimit, t.give)
		e.launch(head, t)

		// The next start: after the last goodbye's length, and paceRatio times that
		// again, from this one; or sooner if the line would not be through before half
		// of the budget of the one just started. Timers are coarse (a millisecond,
		// often): the schedule runs on from the last scheduled start, so that a late
		// wake-up starts the ones due since, one after another, not one per wake-up.
		var gap time.Duration
		if waiting > crowd {
			gap = (1 + paceRatio) * time.Duration(e.lastGoodbye.Load()) / time.Duration(cap(e.turns))
		}
		half := head.at.Add(head.j.Deadline.Sub(head.at) / 2)
		if g := half.Sub(t.at) / time.Duration(waiting); g < gap {
			gap = g
		}
		if floor := t.at.Add(-time.Millisecond); next.Before(floor) {
			next = floor // no credit for a line that was empty
		}
		next = next.Add(max(gap, 0))
	}
}

func (e *Engine) popLocked() {
	e.line[0] = nil
	e.line = e.line[1:]
}

// stopWatch stops watching p's context: p is being started.
func (p *pending) stopWatch() {
	if p.stopCtx != nil {
		p.stopCtx()
	}
}

// launch runs p in its own goroutine, holding t if non-nil. The goroutine yields first: a
// new goroutine runs next on its parent's P, ahead of every goroutine already waiting
// there (a request's, woken by its response), and the pacer starts one every few dozen
// microseconds; yielding puts the goodbye behind them.
func (e *Engine) launch(p *pending, t *turn) {
	go func() {
		runtime.Gosched()
		e.runTracked(p.ctx, p.j, p.f, t, p.at)
	}()
}

// flushLine starts everything in line at once, without turns: ForceAll has forced them.
func (e *Engine) flushLine() {
	e.mu.Lock()
	line, wake := e.line, e.wake
	e.line = nil
	e.mu.Unlock()
	for _, p := range line {
		if p.started.CompareAndSwap(false, true) {
			p.stopWatch()
			e.launch(p, nil)
		}
	}
	select {
	case wake <- struct{}{}: // the pacer finds the line empty and exits (nil: none ever ran)
	default:
	}
}

// turn is one teardown's turn to say its goodbyes; give returns it, once.
type turn struct {
	e     *Engine
	given atomic.Bool
	timer *time.Timer
	at    time.Time
}

func (t *turn) give() {
	if t.given.CompareAndSwap(false, true) {
		t.e.lastGoodbye.Store(int64(time.Since(t.at)))
		<-t.e.turns
	}
}
