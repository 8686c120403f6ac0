// Package pool is a keyed connection pool that knows nothing of protocols.
//
// A [Pool] holds connections of any type C under keys of any comparable type K: typically
// a struct of scheme, host and port, plus whatever else makes connections interchangeable
// (a proxy, a protocol), from which Dial knows where to go. It decides which connection
// serves a request and which connection leaves: it keeps idle lists, per-key limits, FIFO
// queues of waiting requests, idle timeouts and lifetimes. It never does I/O itself: it
// makes connections through [Config.Dial] and hands the ones it drops to [Config.Retire],
// which decides how they end. Dials belong to the pool too: it cancels those that no
// request waits for any more, and [Pool.WaitDials] waits for them.
//
// A connection may serve several requests at once (HTTP/2 streams): its capacity says how
// many. Each [Pool.Get] takes one use of a connection and each [Pool.Put] gives one back.
package pool

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// Reason says why the pool retired a connection that no request was using.
type Reason uint8

const (
	// IdleTimeout means the connection was idle longer than Config.IdleTimeout.
	IdleTimeout Reason = iota + 1
	// IdleLimit means the idle list of its key or of the pool overflowed
	// (Config.MaxIdlePerKey, Config.MaxIdle): the least recently used leave first.
	IdleLimit
	// MaxLifetime means the connection was past its lifetime (Config.Lifetime) when it
	// would have gone idle, or while it was idle.
	MaxLifetime
	// CloseIdle means Pool.CloseIdle was called while the connection was idle, or before
	// it went idle with no Get since (see Pool.CloseIdle).
	CloseIdle
	// Closed means the pool was closed (Pool.Close).
	Closed
)

var reasonNames = [...]string{
	IdleTimeout: "idle_timeout",
	IdleLimit:   "idle_limit",
	MaxLifetime: "max_lifetime",
	CloseIdle:   "close_idle",
	Closed:      "closed",
}

// String returns the reason as a snake_case word, as tracing reports it: "idle_timeout",
// "idle_limit", "max_lifetime", "close_idle" or "closed".
func (r Reason) String() string {
	if r >= IdleTimeout && r <= Closed {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// ErrClosed is the error of a Get after Close, and of a Get that was waiting when the
// pool closed. It is also the cause (context.Cause) of the context of every dial that
// was in progress when the pool closed.
var ErrClosed = errors.New("pool: closed")

// ErrDialAbandoned is the cause (context.Cause) of the context of a dial that no request
// waits for any more: the last Get waiting for its key gave up, or CloseIdle was called
// while no Get waited for its key. No Get ever returns it.
var ErrDialAbandoned = errors.New("pool: dial abandoned: no request waits for it")

// Config configures a [Pool]. The zero value of every field but Dial is valid and means
// what its doc says.
type Config[K comparable, C any] struct {
	// MaxIdle limits the idle connections over all keys; when a connection going idle
	// would exceed it, the least recently used idle connection of any key is retired
	// (IdleLimit). Zero or less means no limit.
	MaxIdle int

	// MaxIdlePerKey limits the idle connections of one key, as MaxIdle does for the pool.
	// Zero or less means no limit.
	MaxIdlePerKey int

	// MaxPerKey limits the connections of one key: those dialling, in use and idle. A Get
	// that finds no connection and no free slot waits. Zero or less means no limit.
	MaxPerKey int

	// IdleTimeout is how long a connection may stay idle before it is retired
	// (IdleTimeout). Zero or less means idle connections never time out.
	IdleTimeout time.Duration

	// Lifetime, if set, is called once for each new connection (without the pool's lock)
	// and returns how long that connection may live; the caller adds any jitter. A
	// connection past its lifetime takes no new uses, and is retired (MaxLifetime) instead
	// of going idle, or while idle. A result of zero or less, or a nil Lifetime, means
	// connections live for ever.
	Lifetime func() time.Duration

	// Dial makes a new connection for key. It must be set. key must say all that Dial
	// needs to know: a dial serves whichever Get of key comes first, not only the one
	// that started it.
	//
	// ctx carries the values of the request that caused the dial, but not its deadline
	// nor its cancellation (context.WithoutCancel): a dial outlives the Get that started
	// it while other Gets of key wait, and serves the first of them, or goes idle. The
	// pool cancels ctx itself, with a cause (context.Cause) that says why, when the dial
	// can serve no one:
	//   - when the last Get waiting for key gives up (its ctx is done) while the dial
	//     is in progress ([ErrDialAbandoned]);
	//   - on CloseIdle, if no Get waits for key ([ErrDialAbandoned]);
	//   - on Close ([ErrClosed]).
	// Dial should return promptly once ctx is done, and should still bound its own time
	// (a handshake timeout): while any Get of key waits, nothing cancels ctx. An error
	// returned after ctx was cancelled is reported to no one; a connection returned after
	// it (a race) is used as any other: it serves a waiter, goes idle, or after Close is
	// retired (Closed). ctx is for the dial alone: the connection Dial returns must not
	// depend on it, for the pool may still cancel it between Dial's return and the moment
	// it places the connection (never later). Each dial runs in a goroutine of its own;
	// [Pool.WaitDials] waits for them.
	//
	// capacity is how many requests may use the connection at once: 1 for HTTP/1.1, the
	// server's MAX_CONCURRENT_STREAMS for HTTP/2. Less than 1 counts as 1.
	Dial func(ctx context.Context, key K) (c C, capacity int, err error)

	// Retire, if set, is called for each connection the pool drops on its own, with the
	// reason. The connection is already out of the pool and belongs to Retire, which
	// should end it (in the background: Retire must not block for long).
	//
	// Retire is called without the pool's lock held, from the goroutine whose call caused
	// it (Get, Put, CloseIdle, Close), from the goroutine of the dial that made the
	// connection, or from the pool's timer goroutine. It may call the pool's methods,
	// except WaitDials, which waits for the Retire calls made by dial goroutines.
	// Connections that leave through Remove, TakeIdle, CloseAndTakeIdle, or the true
	// result of Put or Unshare are not retired: their caller ends them.
	Retire func(c C, why Reason)

	// ShareDials, if set, reports whether Gets for key may share a dial in progress
	// before any connection of key has told its capacity (typically: true when HTTP/2 is
	// likely, as for https). When it says true, a Get that finds a dial in progress for
	// key waits for that dial instead of dialling its own; if the connection comes back
	// with capacity above 1, up to that many Gets share it, and the others go on as usual
	// (dial if MaxPerKey allows, else wait). Once a connection of the key has been
	// dialled, its capacity decides instead: above 1, Gets share dials in progress. The
	// pool forgets a key, and what it learnt of it, when it has no connection and no
	// waiter left. ShareDials is called without the pool's lock, at most about once per
	// key. Nil means never share before a capacity is known.
	ShareDials func(key K) bool
}

// Conn is a connection held by the pool. Get hands it out; the caller gives it back with
// Put, or takes it out of the pool with Remove. The fields must not be changed.
type Conn[K comparable, C any] struct {
	// Value is the connection, as Config.Dial returned it.
	Value C
	// Key is the key the connection was dialled for.
	Key K

	// The following fields are guarded by the pool's mu.
	ks        *keyState[K, C] // the state of Key; lives at least as long as the connection is in the pool
	state     connState
	uses      int  // requests using the connection now
	capacity  int  // the most uses at once, >= 1
	served    bool // a Get has had the connection before
	unshared  bool // Unshare: takes no new uses
	expired   bool // past its lifetime: takes no new uses
	inShared  bool // on ks.shared
	idleSince time.Time
	expires   time.Time  // end of lifetime; zero means never
	heapIndex int        // in Pool.life, or -1
	glink     link[K, C] // Pool.idle
	klink     link[K, C] // keyState.idle or keyState.shared
}

type connState uint8

const (
	stateActive connState = iota // in use (uses > 0) outside the lock
	stateIdle                    // on the idle lists, uses == 0
	stateGone                    // out of the pool
)

// GetInfo describes the connection a Get returned.
type GetInfo struct {
	// Reused reports whether the connection served an earlier request (or serves one now).
	Reused bool
	// WasIdle reports whether the connection came from the idle list.
	WasIdle bool
	// IdleTime is how long the connection was idle, if WasIdle; zero otherwise.
	IdleTime time.Duration
}

// KeyStats counts the connections and waiters of one key.
type KeyStats struct {
	Conns   int // connections counted against MaxPerKey: Dialing + Active + Idle
	Active  int // connections in use by at least one request
	Idle    int // connections on the idle list
	Dialing int // dials in progress, cancelled ones included until Dial returns
	Waiting int // Gets waiting for a connection
	Uses    int // requests using connections now (more than Active when shared)
}

// Stats is a snapshot of the pool: totals over all keys, and the counts of each key the
// pool knows.
type Stats[K comparable] struct {
	KeyStats                // totals over all keys
	Keys     map[K]KeyStats // per key; keys with no connection and no waiter are absent
}

// Pool is a pool of connections of type C under keys of type K. Create one with [New].
//
// Pool is safe for concurrent use by multiple goroutines.
type Pool[K comparable, C any] struct {
	cfg Config[K, C]

	mu     sync.Mutex // guards the following, and the unexported fields of every Conn
	closed bool
	// closeIdle is set by CloseIdle and cleared by the next Get: meanwhile a connection
	// whose last use ends is retired rather than kept idle.
	closeIdle bool
	keys      map[K]*keyState[K, C]
	idle      connList[K, C] // every idle connection, most recently used first, so oldest last
	life      lifeHeap[K, C] // connections with a lifetime that have not been found past it
	timer     *time.Timer    // runs onTimer; nil until first needed
	timerAt   time.Time      // when timer fires; zero if it is not armed

	// dialsRunning counts the dial goroutines that have not finished (see WaitDials).
	// It outlives the dial's entry in keyState.dials: a goroutine finishes only once it
	// has handed its connection to Retire, after releasing mu.
	dialsRunning int
	dialsDone    chan struct{} // closed when dialsRunning falls to 0; nil if no one waits
}

// keyState is what the pool keeps for one key. It exists while the key has connections
// (dialling included) or waiters. All fields are guarded by Pool.mu.
type keyState[K comparable, C any] struct {
	key     K
	conns   int // len(dials) + active + idle: what MaxPerKey limits
	active  int // connections with uses > 0
	uses    int // sum of uses
	lastCap int // capacity of the last connection dialled (or SetCapacity); 0 if none yet
	share   shareState
	idle    connList[K, C] // most recently used first
	shared  connList[K, C] // in use, with spare capacity, taking new uses

	dials     []*dialJob[K, C] // dials in progress, in no order (dialJob.index)
	abandoned int              // how many of dials are cancelled: no new Get shares those

	waiters   list.List // *waiter[K, C]: every waiting Get, in arrival order
	dialWait  list.List // *waiter[K, C]: waiters with no dial, for want of a slot (MaxPerKey)
	shareWait list.List // *waiter[K, C]: waiters with no dial, sharing a dial in progress
}

type shareState uint8

const (
	shareUnknown shareState = iota
	shareNo
	shareYes
)

// waiter is a Get waiting for a connection.
type waiter[K comparable, C any] struct {
	ctx   context.Context
	ks    *keyState[K, C]
	ch    chan result[K, C] // buffered; receives exactly one result, under mu
	el    *list.Element     // in ks.waiters; nil once the waiter is woken or gone
	sub   *list.Element     // in subOf (ks.dialWait or ks.shareWait), or nil
	subOf *list.List
}

// dialJob is a dial in progress. It is on its key's dials from startDialLocked until its
// goroutine places the result. Its fields are guarded by Pool.mu.
type dialJob[K comparable, C any] struct {
	w         *waiter[K, C]           // the Get the dial was started for; w.el is nil once it is gone
	cancel    context.CancelCauseFunc // cancels the ctx given to Config.Dial
	cancelled bool                    // cancel was called
	index     int                     // in keyState.dials
}

type result[K comparable, C any] struct {
	c    *Conn[K, C]
	info GetInfo
	err  error
}

// retirement is a connection to hand to Config.Retire once the lock is released.
type retirement[K comparable, C any] struct {
	c   *Conn[K, C]
	why Reason
}

// New returns a pool that makes and retires connections as cfg says. cfg.Dial must not
// be nil. The pool starts no goroutine until it needs one.
func New[K comparable, C any](cfg Config[K, C]) *Pool[K, C] {
	if cfg.Dial == nil {
		panic("pool: Config.Dial is nil")
	}
	return &Pool[K, C]{
		cfg:  cfg,
		keys: make(map[K]*keyState[K, C]),
		idle: connList[K, C]{global: true},
	}
}

// Get returns a connection for key, with one use of it taken: a connection in use with
// spare capacity if there is one, else the most recently used idle one, else a new one
// if MaxPerKey allows (see also Config.ShareDials). Otherwise it waits in a FIFO queue of
// the key until a connection or a slot frees, ctx is done (it then returns
// context.Cause(ctx)), or the pool closes ([ErrClosed]).
//
// A dial's error is returned to the Get that started the dial only, if it is still
// waiting; other waiters keep waiting, and may dial. A Get that started a dial may be
// served first by a connection that frees up, or give up; its dial then goes on and
// serves the next waiter, or goes idle. But when the last Get waiting for key gives up,
// every dial of key in progress is cancelled ([ErrDialAbandoned]; see Config.Dial): no
// request waits for it. If ctx is done when Get is called, Get returns its error at once.
//
// The caller gives the use back with Put, or drops the connection with Remove.
func (p *Pool[K, C]) Get(ctx context.Context, key K) (*Conn[K, C], GetInfo, error) {
	if ctx.Err() != nil {
		return nil, GetInfo{}, context.Cause(ctx)
	}
	var buf [4]retirement[K, C]
	rs := buf[:0]
	share := shareUnknown
	p.mu.Lock()
	p.closeIdle = false // a connection may be wanted again
	var ks *keyState[K, C]
	for {
		if p.closed {
			p.mu.Unlock()
			p.retire(rs)
			return nil, GetInfo{}, ErrClosed
		}
		ks = p.keys[key]
		if ks != nil {
			if c := ks.shared.head; c != nil {
				if !c.expires.IsZero() && !time.Now().Before(c.expires) {
					// Past its lifetime, and the timer has not run yet.
					c.expired = true
					p.fixSharedLocked(c)
					continue
				}
				info := GetInfo{Reused: c.served}
				p.acquireLocked(c)
				p.mu.Unlock()
				p.retire(rs)
				return c, info, nil
			}
			if ks.idle.head != nil {
				now := time.Now()
				for c := ks.idle.head; c != nil; c = ks.idle.head {
					if why := p.staleLocked(c, now); why != 0 {
						p.dropLocked(c)
						rs = append(rs, retirement[K, C]{c, why})
						continue
					}
					p.unidleLocked(c)
					info := GetInfo{Reused: c.served, WasIdle: true, IdleTime: now.Sub(c.idleSince)}
					p.acquireLocked(c)
					p.mu.Unlock()
					p.retire(rs)
					return c, info, nil
				}
				ks = p.keys[key] // dropping stale connections may have forgotten the key
			}
		}
		if ks == nil {
			ks = &keyState[K, C]{key: key}
			p.keys[key] = ks
		}
		if ks.share == shareUnknown && share != shareUnknown {
			ks.share = share
		}
		if ks.share == shareUnknown && ks.liveDials() > 0 && ks.lastCap == 0 && p.cfg.ShareDials != nil {
			// Ask outside the lock, then look again: things may have moved meanwhile.
			p.mu.Unlock()
			share = shareNo
			if p.cfg.ShareDials(key) {
				share = shareYes
			}
			p.mu.Lock()
			continue
		}
		break
	}

	w := &waiter[K, C]{ctx: ctx, ks: ks, ch: make(chan result[K, C], 1)}
	w.el = ks.waiters.PushBack(w)
	switch {
	case p.shareDialLocked(ks):
		w.sub, w.subOf = ks.shareWait.PushBack(w), &ks.shareWait
	case p.canDialLocked(ks):
		p.startDialLocked(ks, w)
	default:
		w.sub, w.subOf = ks.dialWait.PushBack(w), &ks.dialWait
	}
	p.mu.Unlock()
	p.retire(rs)

	select {
	case r := <-w.ch:
		return r.c, r.info, r.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.el != nil {
		p.unqueueLocked(w)
		if ks.waiters.Len() == 0 {
			// The last waiter of ks gave up: its dials serve no one now. While others
			// wait, every dial goes on, this one's included: see abandonDialsLocked.
			p.abandonDialsLocked(ks, ErrDialAbandoned)
		}
		p.maybeForgetLocked(ks)
		p.mu.Unlock()
		return nil, GetInfo{}, context.Cause(ctx)
	}
	p.mu.Unlock()
	// The waiter was woken while ctx was ending: the result is in the channel. Return
	// it rather than lose a connection.
	r := <-w.ch
	return r.c, r.info, r.err
}

// Put gives back one use of c, taken by Get. When c has other uses, or spare capacity,
// the use goes to the first waiter of its key. When its last use ends, c goes to the
// first waiter of its key, else to the front of the idle list, after which the idle
// limits retire the least recently used idle connections (IdleLimit); a connection past
// its lifetime is retired (MaxLifetime) instead, and after Close it is retired (Closed).
//
// Put reports whether the use it ended was the last use of a connection marked with
// Unshare: the pool has then dropped c, which is neither idled, handed on nor retired,
// and the caller must end it. Put of a connection that is no longer in the pool (Remove,
// TakeIdle) does nothing and reports false.
func (p *Pool[K, C]) Put(c *Conn[K, C]) (drop bool) {
	var buf [2]retirement[K, C]
	rs := buf[:0]
	p.mu.Lock()
	if c.state != stateActive || c.uses == 0 {
		p.mu.Unlock()
		return false
	}
	ks := c.ks
	c.uses--
	ks.uses--
	if c.uses > 0 {
		if p.shareableLocked(c) {
			p.offerLocked(c)
		}
		p.fixSharedLocked(c)
		p.mu.Unlock()
		return false
	}
	ks.active--
	p.fixSharedLocked(c)
	switch {
	case c.unshared:
		p.dropLocked(c)
		drop = true
	case p.closed:
		p.dropLocked(c)
		rs = append(rs, retirement[K, C]{c, Closed})
	default:
		now := time.Now()
		if c.expired || !c.expires.IsZero() && !now.Before(c.expires) {
			p.dropLocked(c)
			rs = append(rs, retirement[K, C]{c, MaxLifetime})
			break
		}
		p.offerLocked(c)
		switch {
		case c.uses > 0:
			// A waiting Get took it.
		case p.closeIdle:
			p.dropLocked(c)
			rs = append(rs, retirement[K, C]{c, CloseIdle})
		default:
			rs = p.idleLocked(c, now, rs)
		}
	}
	p.mu.Unlock()
	p.retire(rs)
	return drop
}

// Remove drops c from the pool for good, wherever it is (in use or idle), because it is
// broken or closing, and frees its slot so that a waiter of its key can dial. The caller
// ends c; Retire is not called. Uses of c still held end with Put, which then does
// nothing. Remove is safe to call more than once, and after Close.
func (p *Pool[K, C]) Remove(c *Conn[K, C]) {
	p.mu.Lock()
	if c.state != stateGone {
		p.dropLocked(c)
	}
	p.mu.Unlock()
}

// TakeIdle removes c from the pool if it is idle, and reports whether it did. It is for a
// connection that the peer closed while idle: if a Get raced and took c first, TakeIdle
// reports false and the Get's caller finds out. When TakeIdle reports true the caller
// ends c; Retire is not called.
func (p *Pool[K, C]) TakeIdle(c *Conn[K, C]) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.state != stateIdle {
		return false
	}
	p.dropLocked(c)
	return true
}

// SetCapacity changes how many requests may use c at once (HTTP/2 SETTINGS); n less than
// 1 counts as 1. A larger capacity serves waiters of c's key at once. A smaller one takes
// no use away: it only stops new uses until the uses fall under it. The new capacity also
// decides whether Gets of c's key share dials in progress (see Config.ShareDials).
func (p *Pool[K, C]) SetCapacity(c *Conn[K, C], n int) {
	n = max(n, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.state == stateGone {
		return
	}
	c.capacity = n
	c.ks.lastCap = n
	if c.state == stateActive && p.shareableLocked(c) {
		p.offerLocked(c)
	}
	p.fixSharedLocked(c)
}

// Unshare marks c as taking no new uses, because it must not be reused (HTTP/2 GOAWAY
// received, Connection: close). Its current uses go on. When the last of them ends, the
// Put that ends it reports true and the caller ends c. If c has no uses (it is idle),
// Unshare drops it from the pool at once and reports true, and the caller ends c.
// Otherwise, or if c is no longer in the pool, Unshare reports false. So, unless Remove
// or TakeIdle intervene, exactly one of Unshare and the Puts of c reports true.
func (p *Pool[K, C]) Unshare(c *Conn[K, C]) (drop bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch c.state {
	case stateGone:
		return false
	case stateIdle:
		p.dropLocked(c)
		return true
	}
	c.unshared = true
	p.fixSharedLocked(c)
	return false
}

// CloseIdle retires every idle connection (CloseIdle), least recently used first, and
// cancels the dials in progress of every key that no Get waits for ([ErrDialAbandoned]):
// they would only have gone idle. Dials of keys with waiters go on. Until the next Get, a
// connection whose last use ends is retired too, rather than kept idle (as net/http's
// CloseIdleConnections: a caller closing idle connections at its end does not find those
// that were busy then left open). CloseIdle does not wait for the connections to end,
// which is Retire's business, nor for the cancelled dials to return (see WaitDials).
func (p *Pool[K, C]) CloseIdle() {
	p.mu.Lock()
	p.closeIdle = true
	rs := make([]retirement[K, C], 0, p.idle.len)
	for c := p.idle.tail; c != nil; c = p.idle.tail {
		p.dropLocked(c)
		rs = append(rs, retirement[K, C]{c, CloseIdle})
	}
	for _, ks := range p.keys {
		if ks.waiters.Len() == 0 {
			p.abandonDialsLocked(ks, ErrDialAbandoned)
		}
	}
	p.mu.Unlock()
	p.retire(rs)
}

// Close closes the pool: from now on Get fails with ErrClosed, Gets waiting wake with
// ErrClosed, every dial in progress is cancelled ([ErrClosed]), idle connections are
// retired (Closed), and so are connections whose last use ends later (Put) or whose dial
// completes later. No dial starts after Close. Close does not wait for connections in use,
// nor for the dials to return: WaitDials does. Remove, Stats and WaitDials keep working.
// Close is safe to call more than once.
func (p *Pool[K, C]) Close() {
	idle := p.close()
	if p.cfg.Retire == nil {
		return
	}
	for _, c := range idle {
		p.cfg.Retire(c, Closed)
	}
}

// CloseAndTakeIdle closes the pool as Close does, but hands the idle connections to its
// caller, least recently used first, instead of retiring them: they are out of the pool,
// and the caller ends them, as it would end a connection TakeIdle took. It is for a
// caller that ends them otherwise than Retire would (a graceful shutdown under a deadline
// of its own, say). Connections that leave the pool later (their last Put, a dial that
// completes) are retired (Closed), as after Close. After the first call it returns nil.
func (p *Pool[K, C]) CloseAndTakeIdle() []C { return p.close() }

// close closes the pool for Close and CloseAndTakeIdle, and returns the idle connections
// it dropped, least recently used first; nil if the pool was closed already.
func (p *Pool[K, C]) close() []C {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timerAt = time.Time{}
	idle := make([]C, 0, p.idle.len)
	for c := p.idle.tail; c != nil; c = p.idle.tail {
		p.dropLocked(c)
		idle = append(idle, c.Value)
	}
	for _, ks := range p.keys {
		for e := ks.waiters.Front(); e != nil; e = ks.waiters.Front() {
			p.wakeLocked(e.Value.(*waiter[K, C]), result[K, C]{err: ErrClosed})
		}
		p.abandonDialsLocked(ks, ErrClosed)
		p.maybeForgetLocked(ks)
	}
	p.mu.Unlock()
	return idle
}

// WaitDials waits until no dial is in progress: every dial goroutine has returned from
// Config.Dial and placed its result (handed its connection to a Get, put it on the idle
// list, or passed it to Config.Retire and seen Retire return). It returns nil then, or
// context.Cause(ctx) if ctx is done first. If no dial is in progress it returns nil at
// once, whatever ctx.
//
// WaitDials is safe to call concurrently with every other method, but until Close, Gets
// may start new dials at any moment: it only reports that there was a moment with none.
// After Close no dial starts, and the dials in progress are cancelled, so WaitDials
// returns once each Dial has honoured its cancelled ctx. Retire and Dial must not call
// WaitDials: it would wait for the very goroutine that calls it.
func (p *Pool[K, C]) WaitDials(ctx context.Context) error {
	p.mu.Lock()
	if p.dialsRunning == 0 {
		p.mu.Unlock()
		return nil
	}
	if p.dialsDone == nil {
		p.dialsDone = make(chan struct{})
	}
	done := p.dialsDone
	p.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Stats returns a snapshot of the pool's counts. It allocates only the map it returns.
func (p *Pool[K, C]) Stats() Stats[K] {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats[K]{Keys: make(map[K]KeyStats, len(p.keys))}
	for key, ks := range p.keys {
		k := KeyStats{
			Conns:   ks.conns,
			Active:  ks.active,
			Idle:    ks.idle.len,
			Dialing: len(ks.dials),
			Waiting: ks.waiters.Len(),
			Uses:    ks.uses,
		}
		s.Keys[key] = k
		s.Conns += k.Conns
		s.Active += k.Active
		s.Idle += k.Idle
		s.Dialing += k.Dialing
		s.Waiting += k.Waiting
		s.Uses += k.Uses
	}
	return s
}

// dial runs one Config.Dial for ks, as job d, and places its result. It runs in a
// goroutine of its own, started by startDialLocked, so that the dial outlives a Get
// that gives up while others wait; it exits once Dial has returned and its result is
// placed, and counts itself out of dialsRunning last, for WaitDials.
//
// If d was cancelled, its Get is gone: the pool cancels only dials of keys with no
// waiter (abandonDialsLocked) or after Close, which woke every waiter, and a Get that
// left never comes back. So an error after cancellation goes to no one, and a connection
// after cancellation serves whoever waits now, or goes idle, or is retired after Close.
func (p *Pool[K, C]) dial(ctx context.Context, ks *keyState[K, C], d *dialJob[K, C]) {
	v, capacity, err := p.cfg.Dial(ctx, ks.key)
	var life time.Duration
	if err == nil && p.cfg.Lifetime != nil {
		life = p.cfg.Lifetime()
	}
	var buf [4]retirement[K, C]
	rs := buf[:0]

	p.mu.Lock()
	now := time.Now() // under the lock, so that the idle list stays in time order
	ks.removeDial(d)
	w := d.w
	if err != nil {
		ks.conns--
		if w.el != nil {
			p.wakeLocked(w, result[K, C]{err: err})
		}
		p.scheduleLocked(ks)
		p.maybeForgetLocked(ks)
		p.dialDoneLocked()
		p.mu.Unlock()
		return
	}
	c := &Conn[K, C]{Value: v, Key: ks.key, ks: ks, capacity: max(capacity, 1), heapIndex: -1}
	ks.lastCap = c.capacity
	if life > 0 {
		c.expires = now.Add(life)
		heap.Push(&p.life, c)
	}
	if p.closed {
		p.dropLocked(c)
		rs = append(rs, retirement[K, C]{c, Closed})
	} else {
		if w.el != nil {
			p.serveLocked(w, c)
		}
		p.offerLocked(c)
		if c.uses == 0 {
			rs = p.idleLocked(c, now, rs)
		} else {
			p.armLocked(now) // for the lifetime
		}
		p.scheduleLocked(ks) // waiters that shared this dial in vain go on
	}
	if len(rs) == 0 {
		p.dialDoneLocked()
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.retire(rs)
	p.mu.Lock()
	p.dialDoneLocked()
	p.mu.Unlock()
}

// dialDoneLocked counts a dial goroutine out, and wakes WaitDials when it was the last.
func (p *Pool[K, C]) dialDoneLocked() {
	p.dialsRunning--
	if p.dialsRunning == 0 && p.dialsDone != nil {
		close(p.dialsDone)
		p.dialsDone = nil
	}
}

// onTimer retires the idle connections past their idle timeout or lifetime, marks the
// connections in use past their lifetime, and rearms the timer. It runs in the goroutine
// of the pool's one time.AfterFunc timer, which exists so that idle connections leave on
// time with no request to notice; it exits when done.
func (p *Pool[K, C]) onTimer() {
	var rs []retirement[K, C]
	p.mu.Lock()
	p.timerAt = time.Time{}
	if p.closed {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	if p.cfg.IdleTimeout > 0 {
		// The idle list is in the order connections went idle: the oldest is last.
		for c := p.idle.tail; c != nil && !now.Before(c.idleSince.Add(p.cfg.IdleTimeout)); c = p.idle.tail {
			p.dropLocked(c)
			rs = append(rs, retirement[K, C]{c, IdleTimeout})
		}
	}
	for len(p.life) > 0 && !now.Before(p.life[0].expires) {
		c := heap.Pop(&p.life).(*Conn[K, C])
		if c.state == stateIdle {
			p.dropLocked(c)
			rs = append(rs, retirement[K, C]{c, MaxLifetime})
			continue
		}
		c.expired = true // Put retires it when its last use ends
		p.fixSharedLocked(c)
	}
	p.armLocked(now)
	p.mu.Unlock()
	p.retire(rs)
}

// retire hands rs to Config.Retire. It must be called without the lock.
func (p *Pool[K, C]) retire(rs []retirement[K, C]) {
	if p.cfg.Retire == nil {
		return
	}
	for _, r := range rs {
		p.cfg.Retire(r.c.Value, r.why)
	}
}

// armLocked makes sure the timer fires no later than the earliest idle timeout or end of
// lifetime. It only ever brings the timer forward: a timer that fires early finds
// nothing to do and rearms itself (onTimer), which costs less than rearming on every Get.
func (p *Pool[K, C]) armLocked(now time.Time) {
	if p.closed {
		return
	}
	next := p.life.next()
	if p.cfg.IdleTimeout > 0 && p.idle.tail != nil {
		if t := p.idle.tail.idleSince.Add(p.cfg.IdleTimeout); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if next.IsZero() || !p.timerAt.IsZero() && !next.Before(p.timerAt) {
		return
	}
	p.timerAt = next
	if p.timer == nil {
		p.timer = time.AfterFunc(next.Sub(now), p.onTimer)
	} else {
		p.timer.Reset(next.Sub(now))
	}
}

// staleLocked reports why idle connection c must not be handed out at now, or 0.
func (p *Pool[K, C]) staleLocked(c *Conn[K, C], now time.Time) Reason {
	if !c.expires.IsZero() && !now.Before(c.expires) {
		return MaxLifetime
	}
	if p.cfg.IdleTimeout > 0 && now.Sub(c.idleSince) >= p.cfg.IdleTimeout {
		return IdleTimeout
	}
	return 0
}

// shareableLocked reports whether c may take new uses, capacity allowing.
func (p *Pool[K, C]) shareableLocked(c *Conn[K, C]) bool {
	return !c.unshared && !c.expired && !p.closed
}

// canDialLocked reports whether MaxPerKey leaves a slot free for ks.
func (p *Pool[K, C]) canDialLocked(ks *keyState[K, C]) bool {
	return p.cfg.MaxPerKey <= 0 || ks.conns < p.cfg.MaxPerKey
}

// shareDialLocked reports whether a new waiter of ks should wait for a dial in progress
// rather than dial its own. A cancelled dial is not one to wait for.
func (p *Pool[K, C]) shareDialLocked(ks *keyState[K, C]) bool {
	return ks.liveDials() > 0 && (ks.lastCap > 1 || ks.lastCap == 0 && ks.share == shareYes)
}

// startDialLocked takes a slot of ks and starts a dial on behalf of waiter w, under a
// context of its own: w's values, not its cancellation, so that the dial can outlive w,
// and a cancel for abandonDialsLocked.
func (p *Pool[K, C]) startDialLocked(ks *keyState[K, C], w *waiter[K, C]) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(w.ctx))
	d := &dialJob[K, C]{w: w, cancel: cancel, index: len(ks.dials)}
	ks.dials = append(ks.dials, d)
	ks.conns++
	p.dialsRunning++
	// The dial runs on its own so that it outlives w while other Gets of ks wait; it
	// exits when Dial returns and its result is placed.
	go p.dial(ctx, ks, d)
}

// abandonDialsLocked cancels, with cause, every dial of ks in progress. Callers call it
// when no Get waits for ks (its last waiter gave up, CloseIdle) or on Close.
//
// While any Get of ks waits, the pool cancels none of ks's dials, even when there are
// more dials than waiters (waiters that left, or were served by a connection that freed
// up, leave their dials behind). Which dial ends first is unknown, and with HTTP/2 one
// dial may serve every waiter, or none: cancelling a surplus dial could cancel the one
// about to serve, and make the Gets that remain wait for a slower one or dial again. A
// surplus connection goes idle and serves the next request, as net/http's do. The cost
// is bounded: one dial per Get that waited, each bounded by Dial's own timeouts, until
// the queue empties by giving up, CloseIdle or Close.
//
// Calling a context's cancel under mu is safe: it takes only the context package's own
// locks and runs no code of ours nor of Dial's (context.AfterFunc functions run in
// goroutines of their own).
func (p *Pool[K, C]) abandonDialsLocked(ks *keyState[K, C], cause error) {
	for _, d := range ks.dials {
		if !d.cancelled {
			d.cancelled = true
			ks.abandoned++
			d.cancel(cause)
		}
	}
}

// scheduleLocked starts the dials that waiters of ks may start now: those that waited
// for a slot, while slots are free, then those that waited to share a dial, if there is
// no longer a dial to share.
func (p *Pool[K, C]) scheduleLocked(ks *keyState[K, C]) {
	if p.closed {
		return
	}
	for ks.dialWait.Len() > 0 && p.canDialLocked(ks) {
		w := ks.dialWait.Front().Value.(*waiter[K, C])
		ks.dialWait.Remove(w.sub)
		w.sub, w.subOf = nil, nil
		p.startDialLocked(ks, w)
	}
	for ks.shareWait.Len() > 0 && !p.shareDialLocked(ks) {
		w := ks.shareWait.Front().Value.(*waiter[K, C])
		ks.shareWait.Remove(w.sub)
		w.sub, w.subOf = nil, nil
		if p.canDialLocked(ks) {
			p.startDialLocked(ks, w)
		} else {
			w.sub, w.subOf = ks.dialWait.PushBack(w), &ks.dialWait
		}
	}
}

// liveDials returns how many dials of ks are in progress and not cancelled.
func (ks *keyState[K, C]) liveDials() int { return len(ks.dials) - ks.abandoned }

// removeDial takes d, whose Dial has returned, off ks.dials.
func (ks *keyState[K, C]) removeDial(d *dialJob[K, C]) {
	last := len(ks.dials) - 1
	moved := ks.dials[last]
	ks.dials[d.index] = moved
	moved.index = d.index
	ks.dials[last] = nil
	ks.dials = ks.dials[:last]
	if d.cancelled {
		ks.abandoned--
	}
}

// acquireLocked takes one use of c, which is in use or was just taken off the idle list.
func (p *Pool[K, C]) acquireLocked(c *Conn[K, C]) {
	ks := c.ks
	if c.uses == 0 {
		ks.active++
	}
	c.state = stateActive
	c.uses++
	ks.uses++
	c.served = true
	p.fixSharedLocked(c)
}

// fixSharedLocked puts c on its key's shared list, or takes it off, as its uses,
// capacity and flags say.
func (p *Pool[K, C]) fixSharedLocked(c *Conn[K, C]) {
	want := c.state == stateActive && c.uses > 0 && c.uses < c.capacity && p.shareableLocked(c)
	if want == c.inShared {
		return
	}
	if want {
		c.ks.shared.pushFront(c)
	} else {
		c.ks.shared.remove(c)
	}
	c.inShared = want
}

// offerLocked gives uses of c, which may take new uses, to the waiters of its key, first
// come first served, while its capacity allows.
func (p *Pool[K, C]) offerLocked(c *Conn[K, C]) {
	ks := c.ks
	for c.uses < c.capacity && ks.waiters.Len() > 0 {
		p.serveLocked(ks.waiters.Front().Value.(*waiter[K, C]), c)
	}
}

// serveLocked gives one use of c to waiter w.
func (p *Pool[K, C]) serveLocked(w *waiter[K, C], c *Conn[K, C]) {
	info := GetInfo{Reused: c.served}
	p.acquireLocked(c)
	p.wakeLocked(w, result[K, C]{c: c, info: info})
}

// wakeLocked takes w out of the queues and sends it r.
func (p *Pool[K, C]) wakeLocked(w *waiter[K, C], r result[K, C]) {
	p.unqueueLocked(w)
	w.ch <- r
}

// unqueueLocked takes w out of the queues of its key.
func (p *Pool[K, C]) unqueueLocked(w *waiter[K, C]) {
	w.ks.waiters.Remove(w.el)
	w.el = nil
	if w.sub != nil {
		w.subOf.Remove(w.sub)
		w.sub, w.subOf = nil, nil
	}
}

// idleLocked puts c, which has no uses, at the front of the idle lists, retires the
// idle connections over the limits into rs, and returns rs.
func (p *Pool[K, C]) idleLocked(c *Conn[K, C], now time.Time, rs []retirement[K, C]) []retirement[K, C] {
	ks := c.ks
	c.state = stateIdle
	c.idleSince = now
	ks.idle.pushFront(c)
	p.idle.pushFront(c)
	if limit := p.cfg.MaxIdlePerKey; limit > 0 {
		for ks.idle.len > limit {
			old := ks.idle.tail
			p.dropLocked(old)
			rs = append(rs, retirement[K, C]{old, IdleLimit})
		}
	}
	if limit := p.cfg.MaxIdle; limit > 0 {
		for p.idle.len > limit {
			old := p.idle.tail
			p.dropLocked(old)
			rs = append(rs, retirement[K, C]{old, IdleLimit})
		}
	}
	p.armLocked(now)
	return rs
}

// unidleLocked takes idle connection c off the idle lists.
func (p *Pool[K, C]) unidleLocked(c *Conn[K, C]) {
	c.ks.idle.remove(c)
	p.idle.remove(c)
	c.state = stateActive
}

// dropLocked takes c out of the pool for good and frees its slot.
func (p *Pool[K, C]) dropLocked(c *Conn[K, C]) {
	ks := c.ks
	if c.state == stateIdle {
		p.unidleLocked(c)
	}
	if c.uses > 0 {
		ks.active--
		ks.uses -= c.uses
		c.uses = 0
	}
	c.state = stateGone
	p.fixSharedLocked(c)
	if c.heapIndex >= 0 {
		heap.Remove(&p.life, c.heapIndex)
	}
	ks.conns--
	p.scheduleLocked(ks)
	p.maybeForgetLocked(ks)
}

// maybeForgetLocked forgets ks if it has no connection and no waiter left.
func (p *Pool[K, C]) maybeForgetLocked(ks *keyState[K, C]) {
	if ks.conns == 0 && ks.waiters.Len() == 0 && p.keys[ks.key] == ks {
		delete(p.keys, ks.key)
	}
}
