package shutdown

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// callLog records the calls of fake layers in order. Abort may be called from the budget's
// backstop goroutine, so the log is locked.
type callLog struct {
	mu    sync.Mutex // guards calls
	calls []string
}

func (l *callLog) add(call string) {
	l.mu.Lock()
	l.calls = append(l.calls, call)
	l.mu.Unlock()
}

// got returns the calls with consecutive repeats folded into one: Abort may be called more
// than once, and how many times is not part of the contract.
func (l *callLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Compact(slices.Clone(l.calls))
}

// fakeLayer is a layer whose verbs log their calls and do what the test says.
type fakeLayer struct {
	name     string
	log      *callLog
	graceful func(ctx context.Context, p *Progress) error // nil: succeed at once
	abort    func()                                       // nil: nothing
}

func (l *fakeLayer) Graceful(ctx context.Context, p *Progress) error {
	l.log.add(l.name + ".graceful")
	if l.graceful == nil {
		return nil
	}
	return l.graceful(ctx, p)
}

func (l *fakeLayer) Abort() {
	l.log.add(l.name + ".abort")
	if l.abort != nil {
		l.abort()
	}
}

// fakeSocket is a connection whose reads block until it is closed: one end of a net.Pipe
// whose other end never writes. Made inside a synctest bubble, a reader blocked on it is
// durably blocked, so the bubble's clock runs to the next timer.
type fakeSocket struct {
	net.Conn
	peer net.Conn
}

func newFakeSocket() *fakeSocket {
	c, p := net.Pipe()
	return &fakeSocket{Conn: c, peer: p}
}

// Close closes both ends.
func (s *fakeSocket) Close() error {
	s.peer.Close()
	return s.Conn.Close()
}

// blockingStack returns a stack of n fake layers over one fake socket, top first. Every
// layer's graceful verb reads the socket and so blocks until it is closed; only the bottom
// layer's abort closes it, as a TCP layer does.
func blockingStack(log *callLog, names ...string) []Layer {
	sock := newFakeSocket()
	layers := make([]Layer, len(names))
	for i, name := range names {
		l := &fakeLayer{name: name, log: log, graceful: func(ctx context.Context, p *Progress) error {
			var b [1]byte
			_, err := sock.Read(b[:])
			return err
		}}
		if i == len(names)-1 {
			l.abort = func() { sock.Close() }
		}
		layers[i] = l
	}
	return layers
}

// halfConn is one end of a net.Pipe that the TCP layer can run over: CloseWrite records
// the FIN (a pipe cannot half-close). Its deadlines are the pipe's, which run on the
// bubble's clock.
type halfConn struct {
	net.Conn
	finSent atomic.Bool
}

func (c *halfConn) CloseWrite() error {
	c.finSent.Store(true)
	return nil
}

// recordSink collects the records handed to Done callbacks.
type recordSink struct {
	mu      sync.Mutex // guards the following
	records []*Record
	calls   map[string]int // Done calls per job reason
}

func (s *recordSink) done(ctx context.Context, r *Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = make(map[string]int)
	}
	s.records = append(s.records, r)
	s.calls[r.Reason]++
}

func (s *recordSink) byReason(t *testing.T, reason string) *Record {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.records {
		if r.Reason == reason {
			return r
		}
	}
	t.Fatalf("no record for %q", reason)
	return nil
}

func (s *recordSink) count(reason string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[reason]
}

// wantForced checks that r was forced at the given time with an error that is want.
func wantForced(t *testing.T, r *Record, at time.Time, want error) {
	t.Helper()
	if r.Outcome != TimedOut {
		t.Errorf("outcome: got %v, want %v", r.Outcome, TimedOut)
	}
	if !errors.Is(r.Err, want) {
		t.Errorf("err: got %v, want %v", r.Err, want)
	}
	if !hasStep(r, Forced) {
		t.Errorf("events: got %v, want a %v event", steps(r), Forced)
	}
	for _, e := range r.Events {
		if e.Step == Forced && !e.At.Equal(at) {
			t.Errorf("forced at: got %v, want %v", e.At, at)
		}
	}
}

func hasStep(r *Record, s Step) bool { return slices.Contains(steps(r), s) }

func steps(r *Record) []Step {
	var s []Step
	for _, e := range r.Events {
		s = append(s, e.Step)
	}
	return s
}
