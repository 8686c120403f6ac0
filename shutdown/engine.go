package shutdown

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBudget is the budget of a graceful teardown whose [Job.Budget] is zero.
const DefaultBudget = 2 * time.Second

// Layer is one level of a connection's teardown stack: HTTP/2, TLS, TCP, a proxy tunnel's
// TLS. A stack is a slice of layers, top first; the last one owns the socket.
type Layer interface {
	// Graceful says this layer's goodbye. It may block on I/O, until ctx is done at the
	// latest: when the budget runs out, the driver aborts the bottom layer, which must make
	// every blocked call of the layers above it return.
	Graceful(ctx context.Context, p *Progress) error
	// Abort ends this layer without a goodbye. It never blocks, may be called more than
	// once, and may be called while Graceful of any layer is running in another goroutine.
	Abort()
}

// Job is one connection's teardown.
type Job struct {
	// Layers is the connection's stack, top first. The last layer owns the socket.
	Layers []Layer
	// Mode is Graceful or Abort.
	Mode Mode
	// Reason is why the connection ends; the engine records it and does not read it.
	Reason string
	// Budget bounds a graceful teardown, from its start: the call of Run or Do, or of Go
	// (its wait in the engine's line counts). Zero means DefaultBudget. The teardown also
	// ends when the context it runs under is done, whichever comes first.
	Budget time.Duration
	// Deadline, if set, bounds the teardown instead of Budget: a caller that decided to
	// close at some moment counts the budget from then, not from when the teardown's
	// goroutine got to run.
	Deadline time.Time
	// Done, if set, is called once the socket is closed, in the teardown's goroutine, with
	// the context the job was started with.
	Done func(ctx context.Context, r *Record)
}

// deadlineFrom is when j's budget runs out for a teardown started at start: Deadline if
// set, else start plus Budget (DefaultBudget if zero).
func (j Job) deadlineFrom(start time.Time) time.Time {
	if !j.Deadline.IsZero() {
		return j.Deadline
	}
	budget := j.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	return start.Add(budget)
}

// Run runs j in the calling goroutine and returns its record once the socket is closed.
// A graceful job ends within its budget, or when ctx is done, whichever is first: then the
// bottom layer is aborted and the record says TimedOut. An abort never blocks.
func Run(ctx context.Context, j Job) *Record {
	rec := run(ctx, j, nil, nil, time.Time{})
	if j.Done != nil {
		j.Done(ctx, rec)
	}
	return rec
}

// run drives the stack. If force is non-nil, the job can also be forced by closing it
// (the engine's ForceAll), with the cause stored beside it. If t is non-nil, the job holds
// an engine's turn, given back when a layer waits on the peer or the job ends.
// start is when the teardown was decided: zero means now.
func run(ctx context.Context, j Job, forced *forceSignal, t *turn, start time.Time) *Record {
	if start.IsZero() {
		start = time.Now()
	}
	rec := &Record{Mode: j.Mode, Reason: j.Reason, Start: start}
	p := &Progress{rec: rec, turn: t}
	defer p.Waiting()
	if len(j.Layers) == 0 {
		rec.Outcome = Aborted
		return rec
	}
	bottom := j.Layers[len(j.Layers)-1]
	if j.Mode != Graceful {
		for _, l := range j.Layers {
			l.Abort()
		}
		rec.Outcome = Aborted
		rec.Duration = time.Since(rec.Start)
		return rec
	}

	ctx, cancel := context.WithDeadlineCause(ctx, j.deadlineFrom(rec.Start), ErrBudget)
	defer cancel()
	if forced != nil {
		stopForce := context.AfterFunc(forced.ctx, func() { cancel() })
		defer stopForce()
	}
	// The budget's backstop: when ctx ends, close the socket underneath so that every
	// layer blocked on I/O returns. firedAt is written before fired is closed.
	var firedAt time.Time
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		firedAt = time.Now()
		bottom.Abort()
		close(fired)
	})

	var failed error
	if forced != nil && forced.ctx.Err() != nil {
		cancel() // forced already: now, not when the AfterFunc's goroutine gets to run
	}
	if ctx.Err() != nil {
		// Forced, or out of budget, before a word was said (ForceAll or the context
		// reached it in the engine's line): no layer speaks, not even a close_notify
		// that the socket's close might not yet have stopped.
		failed = context.Cause(ctx)
	}
	for _, l := range j.Layers {
		if failed != nil {
			l.Abort()
			continue
		}
		if err := l.Graceful(ctx, p); err != nil {
			failed = err
			l.Abort()
		}
	}
	wasForced := !stop()
	bottom.Abort() // closes the socket if no layer did; a no-op otherwise

	switch {
	case wasForced:
		// The AfterFunc has started, but a layer may have returned on its own once ctx
		// was done, before the AfterFunc ran: wait for it (Abort never blocks).
		<-fired
		rec.Events = append(rec.Events, Event{Step: Forced, At: firedAt})
		rec.Outcome = TimedOut
		rec.Err = context.Cause(ctx)
		if forced != nil && forced.ctx.Err() != nil {
			rec.Err = context.Cause(forced.ctx)
		}
	case failed != nil:
		rec.Outcome = Failed
		rec.Err = failed
	case p.clean():
		rec.Outcome = Clean
	default:
		rec.Outcome = PeerSilent
	}
	rec.Duration = time.Since(rec.Start)
	return rec
}

type forceSignal struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// Engine runs teardowns in the background and keeps track of them, so that a transport can
// force them all or wait for them all. The zero Engine is ready to use. Engines are safe for
// concurrent use by multiple goroutines.
type Engine struct {
	// MaxStarting bounds how many graceful teardowns say their goodbyes at once (see
	// the line, in line.go): the others wait their turn, in order, at a pace that spreads
	// a mass close out without making any teardown outlive its budget. Zero means half of
	// GOMAXPROCS, at least one. Aborts never wait. Set it before the first teardown.
	MaxStarting int

	lastGoodbye atomic.Int64 // how long the last turn lasted, in nanoseconds

	mu      sync.Mutex // guards the following
	line    []*pending // graceful teardowns waiting to start, oldest first
	pacing  bool       // a pacer goroutine is running
	turns   chan struct{}
	wake    chan struct{}
	running map[*forceSignal]struct{}
	allDone chan struct{} // closed when running empties; nil while nothing ever ran
}

// Go starts j in a new goroutine and returns at once. ctx bounds the teardown along with
// its budget and carries values (a parent span) to j.Done; cancelling ctx forces the
// teardown (the bottom layer is aborted).
func (e *Engine) Go(ctx context.Context, j Job) { e.Reserve().Go(ctx, j) }

// Do runs j in the calling goroutine, tracked like the teardowns of Go, and returns its
// record. It suits aborts, which never block; a graceful job blocks up to its budget.
func (e *Engine) Do(ctx context.Context, j Job) *Record { return e.Reserve().Do(ctx, j) }

// Ticket is a teardown reserved with [Engine.Reserve]: Wait already waits for it and
// ForceAll already reaches it. Use it once, with Go, Do or Cancel.
type Ticket struct {
	e *Engine
	f *forceSignal
}

// Reserve registers a teardown that its caller is about to start, so that no Wait can
// return and no ForceAll can miss it in between: a connection's owner reserves before
// deciding how the connection ends, and cancels if another party decided first.
func (e *Engine) Reserve() Ticket { return Ticket{e, e.track()} }

// Cancel gives the reservation up.
func (k Ticket) Cancel() {
	k.f.cancel(nil)
	k.e.untrack(k.f)
}

// Go starts the reserved teardown in the background, as [Engine.Go] does. A graceful
// teardown waits its turn in the engine's line (see [Engine.MaxStarting]); its budget
// counts from the call.
func (k Ticket) Go(ctx context.Context, j Job) {
	e, f := k.e, k.f
	if j.Mode != Graceful || len(j.Layers) == 0 {
		go e.runTracked(ctx, j, f, nil, time.Time{})
		return
	}
	now := time.Now()
	j.Deadline = j.deadlineFrom(now)
	if d, ok := ctx.Deadline(); ok && d.Before(j.Deadline) {
		j.Deadline = d
	}
	e.enqueue(ctx, f, j, now)
}

// runTracked is a teardown's goroutine: it may block on the peer, up to the budget, so it
// must not run in the caller's. It exits when the socket is closed.
func (e *Engine) runTracked(ctx context.Context, j Job, f *forceSignal, t *turn, start time.Time) {
	rec := run(ctx, j, f, t, start)
	f.cancel(nil)
	if j.Done != nil {
		j.Done(ctx, rec)
	}
	e.untrack(f)
}

// Do runs the reserved teardown in the calling goroutine, as [Engine.Do] does.
func (k Ticket) Do(ctx context.Context, j Job) *Record {
	e, f := k.e, k.f
	rec := run(ctx, j, f, nil, time.Time{})
	f.cancel(nil)
	if j.Done != nil {
		j.Done(ctx, rec)
	}
	e.untrack(f)
	return rec
}

func (e *Engine) track() *forceSignal {
	f := &forceSignal{}
	f.ctx, f.cancel = context.WithCancelCause(context.Background())
	e.mu.Lock()
	if e.running == nil {
		e.running = make(map[*forceSignal]struct{})
	}
	if len(e.running) == 0 {
		e.allDone = make(chan struct{})
	}
	e.running[f] = struct{}{}
	e.mu.Unlock()
	return f
}

func (e *Engine) untrack(f *forceSignal) {
	e.mu.Lock()
	delete(e.running, f)
	if len(e.running) == 0 {
		close(e.allDone)
	}
	e.mu.Unlock()
}

// Running reports how many teardowns are in progress.
func (e *Engine) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.running)
}

// Wait blocks until no teardown is in progress, or ctx is done, in which case it returns
// ctx's cause. Teardowns started while it waits are waited for too.
func (e *Engine) Wait(ctx context.Context) error {
	for {
		e.mu.Lock()
		if len(e.running) == 0 {
			e.mu.Unlock()
			return nil
		}
		ch := e.allDone
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// ForceAll forces every teardown in progress: each closes its socket underneath at once and
// records TimedOut with cause as its error. It does not wait; use Wait for that.
func (e *Engine) ForceAll(cause error) {
	if cause == nil {
		cause = errors.New("shutdown: forced")
	}
	e.mu.Lock()
	fs := make([]*forceSignal, 0, len(e.running))
	for f := range e.running {
		fs = append(fs, f)
	}
	e.mu.Unlock()
	for _, f := range fs {
		f.cancel(cause)
	}
	e.flushLine()
}
