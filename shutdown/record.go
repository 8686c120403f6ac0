// Package shutdown is endwell's teardown engine: it ends a connection by walking a stack of
// layers (HTTP/2, TLS, TCP) top-down under a time budget, in the background, and records
// what each ending put on the wire.
//
// The package knows nothing of HTTP or of endwell's pool: a connection's owner builds its
// stack of [Layer]s and hands it to an [Engine] (or to [Run]) with a [Mode] and a reason.
// Each layer has a graceful verb that may block on I/O and an abort verb that never blocks.
// The driver walks the stack from the top; the first failure turns the remaining layers into
// aborts; when the budget runs out the bottom layer is aborted, which closes the socket and so
// unblocks every layer above it. That is the only way to bound crypto/tls, whose close_notify
// write carries its own 5 second deadline that overrides the caller's.
package shutdown

import (
	"errors"
	"time"
)

// Mode says how a connection ends.
type Mode uint8

const (
	// Graceful says goodbye at every layer: GOAWAY, close_notify, FIN, then drains what the
	// peer still sends until its own goodbye, within the budget.
	Graceful Mode = iota + 1
	// Abort closes the socket at once and says no goodbye: no close_notify, so the peer can
	// never take a truncated transfer for a complete one.
	Abort
)

// String returns "graceful" or "abort".
func (m Mode) String() string {
	switch m {
	case Graceful:
		return "graceful"
	case Abort:
		return "abort"
	}
	return "unknown"
}

// Outcome says how a teardown went.
type Outcome uint8

const (
	// Clean means every goodbye of the stack was exchanged: ours and the peer's FIN, over
	// TLS ours and the peer's close_notify, and whatever else a layer expects (see
	// [Progress.Expect]: our HTTP/2 GOAWAY), with no reset from the peer, which would say
	// that ours were not read.
	Clean Outcome = iota + 1
	// PeerSilent means the teardown ended on its own, without a failure of ours, but the
	// goodbyes were not all exchanged: most often ours was said and the peer closed without
	// its own close_notify; or the peer reset the connection, before ours could be said or
	// rather than read it (a peer that closes its socket right after its own goodbye, as
	// nginx does: [Record.RSTReceived] says so).
	PeerSilent
	// TimedOut means the teardown was forced: the budget ran out, or its context ended.
	TimedOut
	// Aborted means the teardown was an abort by design.
	Aborted
	// Failed means a layer failed during a graceful teardown (a reset, a write error); the
	// remaining layers were aborted.
	Failed
)

// String returns the outcome's name as endwell's spans and metrics spell it.
func (o Outcome) String() string {
	switch o {
	case Clean:
		return "clean"
	case PeerSilent:
		return "peer_silent"
	case TimedOut:
		return "timed_out"
	case Aborted:
		return "aborted"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Step is one thing a teardown did or saw on the wire.
type Step uint8

const (
	GoAwaySent Step = iota + 1
	CloseNotifySent
	FINSent
	CloseNotifyReceived
	FINReceived
	Forced
	// RSTReceived: the peer reset the connection (an RST, seen as ECONNRESET or EPIPE).
	RSTReceived
	// ConnectionCloseSent: a QUIC CONNECTION_CLOSE of ours went out (see
	// Record.QUICCloseCode). ConnectionCloseReceived: the peer's arrived first (draining).
	ConnectionCloseSent
	ConnectionCloseReceived
	// ClosingPeriodOver: the closing period after our CONNECTION_CLOSE ran its course
	// (RFC 9000, section 10.2), answering the peer's late packets, before the socket was
	// released.
	ClosingPeriodOver
)

// String returns the step's name as endwell's span events spell it.
func (s Step) String() string {
	switch s {
	case GoAwaySent:
		return "goaway_sent"
	case CloseNotifySent:
		return "close_notify_sent"
	case FINSent:
		return "fin_sent"
	case CloseNotifyReceived:
		return "close_notify_received"
	case FINReceived:
		return "fin_received"
	case Forced:
		return "forced"
	case RSTReceived:
		return "rst_received"
	case ConnectionCloseSent:
		return "connection_close_sent"
	case ConnectionCloseReceived:
		return "connection_close_received"
	case ClosingPeriodOver:
		return "closing_period_over"
	}
	return "unknown"
}

// Event is a step and when it happened.
type Event struct {
	Step Step
	At   time.Time
}

// Record is what one teardown did. The engine fills it; layers add to it through
// [Progress]. It is plain data for tracing and statistics.
type Record struct {
	Mode    Mode
	Reason  string
	Outcome Outcome

	CloseNotifySent     bool
	CloseNotifyReceived bool
	GoAwaySent          bool
	FINSent             bool
	FINReceived         bool
	// RSTReceived says the peer reset the connection, before or during the teardown: a
	// peer that closed its socket answers what arrives after (our close_notify, say)
	// with a reset, which may also take the place of its FIN. It says nothing of whose
	// failure that was; Outcome does.
	RSTReceived bool
	// DrainBytes counts the bytes read from the peer while draining.
	DrainBytes int64

	// QUIC: ConnectionCloseSent says a CONNECTION_CLOSE of ours went out, with the code
	// QUICCloseCode (an application code for HTTP/3: H3_NO_ERROR 0x100 for a goodbye,
	// H3_REQUEST_CANCELLED 0x10c for an abort); ConnectionCloseReceived says the peer's
	// came first. ClosingPeriod is how long the socket was kept after ours, answering the
	// peer's late packets; ClosingPeriodOver says it ran its course.
	ConnectionCloseSent     bool
	ConnectionCloseReceived bool
	ClosingPeriodOver       bool
	QUICCloseCode           uint64
	ClosingPeriod           time.Duration

	// Start is when the teardown was decided: for an engine's graceful teardown, when Go
	// was called, so that its wait in the engine's line counts. Duration runs from Start
	// to the closed socket.
	Start    time.Time
	Duration time.Duration
	// Err is the first error of the teardown: a layer's failure, or the cause that forced it
	// (an [ErrBudget] for the budget). Nil for a clean, silent or aborted ending.
	Err error
	// Events lists the steps in the order they happened.
	Events []Event
}

// Progress is a teardown's record under construction, handed to each layer's graceful verb.
// It is used by the driver's goroutine only.
type Progress struct {
	rec *Record
	// expected holds the steps that layers said a clean ending needs (see Expect), one
	// bit per Step.
	expected uint32
	// turn is the engine's turn this teardown holds, if any.
	turn *turn
}

// Waiting says the layer has said its goodbye and is about to wait on the peer (a drain,
// open streams to finish): the teardown gives its turn back, so that the next one in an
// [Engine]'s line may speak. Layers call it before any wait that may last; calling it
// more than once, or outside an engine, does nothing.
func (p *Progress) Waiting() {
	if t := p.turn; t != nil {
		p.turn = nil
		t.timer.Stop()
		t.give()
	}
}

// Note records that step happened now. Noting a step twice records it once.
func (p *Progress) Note(step Step) {
	r := p.rec
	if flag := r.flag(step); flag != nil {
		if *flag {
			return
		}
		*flag = true
	}
	r.Events = append(r.Events, Event{Step: step, At: time.Now()})
}

// Noted reports whether step was recorded.
func (p *Progress) Noted(step Step) bool {
	f := p.rec.flag(step)
	return f != nil && *f
}

// NoteQUICClose records a CONNECTION_CLOSE of ours, with its code (the ConnectionCloseSent
// step).
func (p *Progress) NoteQUICClose(code uint64) {
	p.rec.QUICCloseCode = code
	p.Note(ConnectionCloseSent)
}

// NoteClosingPeriod records how long the closing period lasted (and the ClosingPeriodOver
// step if over says it ran its course).
func (p *Progress) NoteClosingPeriod(d time.Duration, over bool) {
	p.rec.ClosingPeriod = d
	if over {
		p.Note(ClosingPeriodOver)
	}
}

// AddDrained counts n bytes read from the peer while draining.
func (p *Progress) AddDrained(n int) { p.rec.DrainBytes += int64(n) }

// Expect says that the ending is clean only if each of steps is noted, besides the
// peer's FIN: a layer calls it for the goodbyes it says (a TCP layer its FIN, an HTTP/2
// layer its GOAWAY) and those it waits for.
func (p *Progress) Expect(steps ...Step) {
	for _, s := range steps {
		p.expected |= 1 << s
	}
}

// ExpectCloseNotify says the connection speaks TLS: its ending is clean only if our
// close_notify was sent and the peer's arrived.
func (p *Progress) ExpectCloseNotify() { p.Expect(CloseNotifySent, CloseNotifyReceived) }

// clean reports whether every expected step was noted (a TCP stack expects both FINs, a
// TLS one both close_notify alerts, a QUIC one its close and closing period), and no
// reset. A stack whose layers expect nothing is clean on the peer's FIN.
func (p *Progress) clean() bool {
	if p.rec.RSTReceived {
		return false
	}
	if p.expected == 0 {
		return p.rec.FINReceived
	}
	for s := Step(0); s < 32; s++ {
		if p.expected&(1<<s) != 0 && !p.Noted(s) {
			return false
		}
	}
	return true
}

func (r *Record) flag(step Step) *bool {
	switch step {
	case GoAwaySent:
		return &r.GoAwaySent
	case CloseNotifySent:
		return &r.CloseNotifySent
	case FINSent:
		return &r.FINSent
	case CloseNotifyReceived:
		return &r.CloseNotifyReceived
	case FINReceived:
		return &r.FINReceived
	case RSTReceived:
		return &r.RSTReceived
	case ConnectionCloseSent:
		return &r.ConnectionCloseSent
	case ConnectionCloseReceived:
		return &r.ConnectionCloseReceived
	case ClosingPeriodOver:
		return &r.ClosingPeriodOver
	}
	return nil
}

// ErrBudget is the cause recorded when a graceful teardown ran out of its budget and its
// socket was closed underneath. It reports Timeout() == true.
var ErrBudget error = budgetError{}

type budgetError struct{}

func (budgetError) Error() string   { return "shutdown: budget exceeded, socket closed underneath" }
func (budgetError) Timeout() bool   { return true }
func (budgetError) Temporary() bool { return false }

// ErrDrainLimit is returned by the TCP layer when the peer sent more than the drain cap
// after our goodbye; the connection is then cut off.
var ErrDrainLimit = errors.New("shutdown: peer sent more than the drain limit after our goodbye")
