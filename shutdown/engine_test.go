package shutdown

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestBudgetCutsBlockedLayer: a graceful layer that blocks forever is cut at exactly the
// budget, by the bottom layer's abort, whichever layer of the stack is blocked.
func TestBudgetCutsBlockedLayer(t *testing.T) {
	tests := []struct {
		name   string
		budget time.Duration
		want   time.Duration
		layers []string
	}{
		{"zero budget means the default", 0, DefaultBudget, []string{"tcp"}},
		{"short budget", 100 * time.Millisecond, 100 * time.Millisecond, []string{"tcp"}},
		{"negative budget means the default", -time.Second, DefaultBudget, []string{"tcp"}},
		{"top layer blocked, bottom abort unblocks it", 300 * time.Millisecond, 300 * time.Millisecond, []string{"tls", "tcp"}},
		{"three layers", 5 * time.Second, 5 * time.Second, []string{"h2", "tls", "tcp"}},
		// A layer may return on its own once ctx is done, before the backstop's abort.
		{"layer returns when ctx is done", time.Second, time.Second, []string{"ctx", "tcp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &callLog{}
				start := time.Now()
				layers := blockingStack(log, tt.layers...)
				if tt.layers[0] == "ctx" {
					layers[0].(*fakeLayer).graceful = func(ctx context.Context, p *Progress) error {
						<-ctx.Done()
						return context.Cause(ctx)
					}
				}
				r := Run(t.Context(), Job{Layers: layers, Mode: Graceful, Reason: "idle_timeout", Budget: tt.budget})
				if got := time.Since(start); got != tt.want {
					t.Errorf("elapsed: got %v, want %v", got, tt.want)
				}
				if r.Duration != tt.want {
					t.Errorf("duration: got %v, want %v", r.Duration, tt.want)
				}
				if !r.Start.Equal(start) {
					t.Errorf("start: got %v, want %v", r.Start, start)
				}
				wantForced(t, r, start.Add(tt.want), ErrBudget)
				var te interface{ Timeout() bool }
				if !errors.As(r.Err, &te) || !te.Timeout() {
					t.Errorf("err %v: got no Timeout() == true, want one", r.Err)
				}
				if r.Mode != Graceful || r.Reason != "idle_timeout" {
					t.Errorf("mode, reason: got %v, %q, want %v, %q", r.Mode, r.Reason, Graceful, "idle_timeout")
				}
				// Only the top layer ran its graceful verb: it failed when the socket was
				// closed under it, and the rest were aborted.
				top := tt.layers[0]
				if got := log.got(); !slices.Contains(got, top+".graceful") || !slices.Contains(got, tt.layers[len(tt.layers)-1]+".abort") {
					t.Errorf("calls: got %v, want %s.graceful and the bottom's abort", got, top)
				}
				for _, name := range tt.layers[1:] {
					if slices.Contains(log.got(), name+".graceful") {
						t.Errorf("calls: got %v, want no %s.graceful after the cut", log.got(), name)
					}
				}
			})
		})
	}
}

// TestLayerFailureAbortsLayersBelow: the first failure turns the remaining layers into
// aborts, top-down, and the outcome is Failed with that error.
func TestLayerFailureAbortsLayersBelow(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name  string
		fails string
		want  []string
	}{
		{"top fails", "h2", []string{"h2.graceful", "h2.abort", "tls.abort", "tcp.abort"}},
		{"middle fails", "tls", []string{"h2.graceful", "tls.graceful", "tls.abort", "tcp.abort"}},
		{"bottom fails", "tcp", []string{"h2.graceful", "tls.graceful", "tcp.graceful", "tcp.abort"}},
		{"none fails", "", []string{"h2.graceful", "tls.graceful", "tcp.graceful", "tcp.abort"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &callLog{}
				var layers []Layer
				for _, name := range []string{"h2", "tls", "tcp"} {
					l := &fakeLayer{name: name, log: log}
					if name == tt.fails {
						l.graceful = func(context.Context, *Progress) error { return errBoom }
					}
					if name == "tcp" {
						l.graceful = func(ctx context.Context, p *Progress) error {
							p.Note(FINSent)
							p.Note(FINReceived)
							if tt.fails == "tcp" {
								return errBoom
							}
							return nil
						}
					}
					layers = append(layers, l)
				}
				r := Run(t.Context(), Job{Layers: layers, Mode: Graceful})
				if got := log.got(); !slices.Equal(got, tt.want) {
					t.Errorf("calls: got %v, want %v", got, tt.want)
				}
				wantOutcome, wantErr := Failed, errBoom
				if tt.fails == "" {
					wantOutcome, wantErr = Clean, nil
				}
				if r.Outcome != wantOutcome {
					t.Errorf("outcome: got %v, want %v", r.Outcome, wantOutcome)
				}
				if r.Err != wantErr {
					t.Errorf("err: got %v, want %v", r.Err, wantErr)
				}
				if hasStep(r, Forced) {
					t.Errorf("events: got %v, want no %v", steps(r), Forced)
				}
				if r.Duration != 0 {
					t.Errorf("duration: got %v, want 0", r.Duration)
				}
			})
		})
	}
}

// TestOutcomeFromWhatThePeerSaid: the outcome of a teardown that was neither forced nor
// failed depends on the peer's goodbye: close_notify for TLS, FIN for plain TCP.
func TestOutcomeFromWhatThePeerSaid(t *testing.T) {
	tests := []struct {
		name    string
		tls     bool
		notes   []Step
		outcome Outcome
	}{
		{"tcp, FIN back", false, []Step{FINSent, FINReceived}, Clean},
		{"tcp, no FIN back", false, []Step{FINSent}, PeerSilent},
		{"tls, close_notify back", true, []Step{CloseNotifySent, FINSent, CloseNotifyReceived, FINReceived}, Clean},
		{"tls, bare FIN back", true, []Step{CloseNotifySent, FINSent, FINReceived}, PeerSilent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &fakeLayer{name: "l", log: &callLog{}, graceful: func(ctx context.Context, p *Progress) error {
				if tt.tls {
					p.ExpectCloseNotify()
				}
				for _, s := range tt.notes {
					p.Note(s)
					p.Note(s) // noting twice records once
					if !p.Noted(s) {
						t.Errorf("Noted(%v): got false, want true", s)
					}
				}
				return nil
			}}
			r := Run(t.Context(), Job{Layers: []Layer{l}, Mode: Graceful})
			if r.Outcome != tt.outcome {
				t.Errorf("outcome: got %v, want %v", r.Outcome, tt.outcome)
			}
			if got := steps(r); !slices.Equal(got, tt.notes) {
				t.Errorf("events: got %v, want %v", got, tt.notes)
			}
			if r.Err != nil {
				t.Errorf("err: got %v, want nil", r.Err)
			}
		})
	}
}

// TestAbortNeverCallsGraceful: an abort calls every layer's Abort, never Graceful, and
// takes no time.
func TestAbortNeverCallsGraceful(t *testing.T) {
	tests := []struct {
		name   string
		engine bool
	}{
		{"Run", false},
		{"Engine.Do", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &callLog{}
				j := Job{Layers: blockingStack(log, "tls", "tcp"), Mode: Abort, Reason: "body_closed_early"}
				start := time.Now()
				var r *Record
				if tt.engine {
					var e Engine
					r = e.Do(t.Context(), j)
				} else {
					r = Run(t.Context(), j)
				}
				if got, want := log.got(), []string{"tls.abort", "tcp.abort"}; !slices.Equal(got, want) {
					t.Errorf("calls: got %v, want %v", got, want)
				}
				if got := time.Since(start); got != 0 {
					t.Errorf("elapsed: got %v, want 0", got)
				}
				if r.Outcome != Aborted || r.Mode != Abort || r.Err != nil {
					t.Errorf("outcome, mode, err: got %v, %v, %v, want %v, %v, nil", r.Outcome, r.Mode, r.Err, Aborted, Abort)
				}
				if r.CloseNotifySent || r.FINSent || len(r.Events) != 0 {
					t.Errorf("record: got %+v, want nothing sent", r)
				}
			})
		})
	}
}

// TestEmptyStack: a job with no layers has nothing to close.
func TestEmptyStack(t *testing.T) {
	r := Run(t.Context(), Job{Mode: Graceful})
	if r.Outcome != Aborted {
		t.Errorf("outcome: got %v, want %v", r.Outcome, Aborted)
	}
}

// TestEngineWait: Wait returns nil once every teardown is done, and ctx's cause if ctx ends
// first; teardowns started while it waits are waited for too.
func TestEngineWait(t *testing.T) {
	errWaitBudget := errors.New("wait budget")
	tests := []struct {
		name    string
		budgets []time.Duration
		wait    time.Duration // Wait's ctx timeout; zero: none
		late    time.Duration // a job started while Wait waits, with this budget; zero: none
		want    error
		waited  time.Duration
	}{
		{"nothing ran", nil, 0, 0, nil, 0},
		{"all done", []time.Duration{time.Second, 3 * time.Second, 2 * time.Second}, 0, 0, nil, 3 * time.Second},
		{"ctx ends first", []time.Duration{time.Second, 3 * time.Second}, 2 * time.Second, 0, errWaitBudget, 2 * time.Second},
		{"job started while waiting", []time.Duration{time.Second}, 0, 5 * time.Second, nil, 5*time.Second + 500*time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var e Engine
				for _, b := range tt.budgets {
					e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Budget: b})
				}
				if tt.late > 0 {
					// Starts a job half a second into the wait, while the first is running.
					go func() {
						time.Sleep(500 * time.Millisecond)
						e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "late"), Mode: Graceful, Budget: tt.late})
					}()
				}
				ctx := t.Context()
				if tt.wait > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeoutCause(ctx, tt.wait, errWaitBudget)
					defer cancel()
				}
				start := time.Now()
				if err := e.Wait(ctx); err != tt.want {
					t.Errorf("Wait: got %v, want %v", err, tt.want)
				}
				if got := time.Since(start); got != tt.waited {
					t.Errorf("waited: got %v, want %v", got, tt.waited)
				}
				if err := e.Wait(t.Context()); err != nil {
					t.Errorf("second Wait: got %v, want nil", err)
				}
				if got := e.Running(); got != 0 {
					t.Errorf("Running: got %v, want 0", got)
				}
			})
		})
	}
}

// TestEngineForceAll: ForceAll forces every running teardown at once, with cause as its
// error; teardowns that are over are not touched, and later ones are not forced.
func TestEngineForceAll(t *testing.T) {
	errTransportClosed := errors.New("transport closed")
	tests := []struct {
		name  string
		cause error
	}{
		{"with a cause", errTransportClosed},
		{"nil cause", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var e Engine
				sink := &recordSink{}
				e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Reason: "a", Budget: 2 * time.Second, Done: sink.done})
				e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "tls", "tcp"), Mode: Graceful, Reason: "b", Budget: 10 * time.Second, Done: sink.done})
				e.Go(t.Context(), Job{Layers: []Layer{&fakeLayer{name: "quick", log: &callLog{}}}, Mode: Graceful, Reason: "quick", Done: sink.done})
				start := time.Now()
				time.Sleep(100 * time.Millisecond)
				synctest.Wait()
				if got := e.Running(); got != 2 {
					t.Errorf("Running before ForceAll: got %v, want 2", got)
				}
				e.ForceAll(tt.cause)
				synctest.Wait()
				if got := e.Running(); got != 0 {
					t.Errorf("Running after ForceAll: got %v, want 0", got)
				}
				if got := time.Since(start); got != 100*time.Millisecond {
					t.Errorf("elapsed: got %v, want 100ms", got)
				}
				for _, reason := range []string{"a", "b"} {
					r := sink.byReason(t, reason)
					want := tt.cause
					if want == nil {
						want = r.Err // any error, checked below
						if r.Err == nil || errors.Is(r.Err, ErrBudget) || errors.Is(r.Err, context.Canceled) {
							t.Errorf("%s: err: got %v, want ForceAll's own error", reason, r.Err)
						}
					}
					wantForced(t, r, start.Add(100*time.Millisecond), want)
					if r.Duration != 100*time.Millisecond {
						t.Errorf("%s: duration: got %v, want 100ms", reason, r.Duration)
					}
				}
				if r := sink.byReason(t, "quick"); r.Outcome != PeerSilent || r.Err != nil {
					t.Errorf("quick: got %v, %v, want %v, nil", r.Outcome, r.Err, PeerSilent)
				}
				// A teardown started after ForceAll runs to its own budget.
				e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Reason: "after", Budget: time.Second, Done: sink.done})
				if err := e.Wait(t.Context()); err != nil {
					t.Fatalf("Wait: got %v, want nil", err)
				}
				wantForced(t, sink.byReason(t, "after"), start.Add(1100*time.Millisecond), ErrBudget)
			})
		})
	}
}

// TestJobContextForces: the context a job runs under bounds it along with its budget;
// cancelling it mid-teardown forces the teardown with the context's cause.
func TestJobContextForces(t *testing.T) {
	errCallerGone := errors.New("caller gone")
	tests := []struct {
		name string
		how  string // "Run", "Go", "Do"
	}{
		{"Run", "Run"},
		{"Engine.Go", "Go"},
		{"Engine.Do", "Do"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancelCause(t.Context())
				time.AfterFunc(250*time.Millisecond, func() { cancel(errCallerGone) })
				var e Engine
				sink := &recordSink{}
				j := Job{Layers: blockingStack(&callLog{}, "tls", "tcp"), Mode: Graceful, Reason: "r", Done: sink.done}
				start := time.Now()
				switch tt.how {
				case "Run":
					Run(ctx, j)
				case "Do":
					e.Do(ctx, j)
				case "Go":
					e.Go(ctx, j)
					if err := e.Wait(t.Context()); err != nil {
						t.Fatalf("Wait: got %v, want nil", err)
					}
				}
				if got := time.Since(start); got != 250*time.Millisecond {
					t.Errorf("elapsed: got %v, want 250ms", got)
				}
				wantForced(t, sink.byReason(t, "r"), start.Add(250*time.Millisecond), errCallerGone)
			})
		})
	}
}

// TestEngineRunning: Running counts the teardowns in progress, of Go and Do alike.
func TestEngineRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var e Engine
		if got := e.Running(); got != 0 {
			t.Errorf("zero Engine: got %v, want 0", got)
		}
		for i := 1; i <= 3; i++ {
			e.Go(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Budget: time.Duration(i) * time.Second})
		}
		// Do blocks its caller: run it in a goroutine of its own, 4 s.
		go e.Do(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Budget: 4 * time.Second})
		synctest.Wait()
		start := time.Now()
		for _, want := range []int{4, 3, 2, 1, 0} {
			if got := e.Running(); got != want {
				t.Errorf("at %v: got %v, want %v", time.Since(start), got, want)
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
	})
}

// TestDoneCalledOnce: Done is called exactly once, with the job's context and the record
// that Run and Do return, after the socket is closed.
func TestDoneCalledOnce(t *testing.T) {
	type ctxKey struct{}
	tests := []struct {
		name string
		how  string
		mode Mode
	}{
		{"Run graceful", "Run", Graceful},
		{"Run abort", "Run", Abort},
		{"Go graceful", "Go", Graceful},
		{"Go abort", "Go", Abort},
		{"Do graceful", "Do", Graceful},
		{"Do abort", "Do", Abort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.WithValue(t.Context(), ctxKey{}, "span")
				sock := newFakeSocket()
				var closed atomic.Bool
				var calls atomic.Int32
				var got *Record
				var gotVal any
				j := Job{
					Layers: []Layer{&fakeLayer{name: "tcp", log: &callLog{}, abort: func() { closed.Store(true); sock.Close() }, graceful: func(ctx context.Context, p *Progress) error {
						_, err := sock.Read(make([]byte, 1))
						return err
					}}},
					Mode:   tt.mode,
					Reason: "done",
					Budget: time.Second,
					Done: func(ctx context.Context, r *Record) {
						calls.Add(1)
						got = r
						gotVal = ctx.Value(ctxKey{})
						if !closed.Load() {
							t.Errorf("Done called before the socket was closed")
						}
					},
				}
				var e Engine
				var ret *Record
				switch tt.how {
				case "Run":
					ret = Run(ctx, j)
				case "Do":
					ret = e.Do(ctx, j)
				case "Go":
					e.Go(ctx, j)
					if err := e.Wait(t.Context()); err != nil {
						t.Fatalf("Wait: got %v, want nil", err)
					}
				}
				synctest.Wait()
				if got := calls.Load(); got != 1 {
					t.Fatalf("Done calls: got %v, want 1", got)
				}
				if ret != nil && ret != got {
					t.Errorf("record: got %p from Done, want %p as returned", got, ret)
				}
				if gotVal != "span" {
					t.Errorf("ctx value: got %v, want %v", gotVal, "span")
				}
				if got.Reason != "done" || got.Mode != tt.mode {
					t.Errorf("record: got %v, %q, want %v, %q", got.Mode, got.Reason, tt.mode, "done")
				}
			})
		})
	}
}

// TestEngineDoTrackedByWait: a graceful Do blocks its caller up to its budget, and Wait
// waits for it.
func TestEngineDoTrackedByWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var e Engine
		sink := &recordSink{}
		go e.Do(t.Context(), Job{Layers: blockingStack(&callLog{}, "tcp"), Mode: Graceful, Reason: "do", Budget: 1500 * time.Millisecond, Done: sink.done})
		synctest.Wait()
		if got := e.Running(); got != 1 {
			t.Errorf("Running: got %v, want 1", got)
		}
		start := time.Now()
		if err := e.Wait(t.Context()); err != nil {
			t.Fatalf("Wait: got %v, want nil", err)
		}
		if got := time.Since(start); got != 1500*time.Millisecond {
			t.Errorf("waited: got %v, want 1.5s", got)
		}
		if got := sink.count("do"); got != 1 {
			t.Errorf("Done calls: got %v, want 1", got)
		}
	})
}
