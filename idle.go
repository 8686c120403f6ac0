package endwell

import (
	"math/rand/v2"
	"time"

	"github.com/endwell/endwell/internal/proto"
	"github.com/endwell/endwell/pool"
)

// The idle lifecycle: a connection whose response is done goes back to the pool, where
// HTTP/1.1's idle watch (internal/h1/watch.go) notices a server closing it within 5 ms
// (never a socket left in CLOSE_WAIT); the pool retires it on idle timeout, idle limits and
// lifetime; each retirement is an outcome that ending.go's Report turns into a graceful
// close in the background with its reason (an abort once Transport.Close was called).

// Release is h1.Owner's: an HTTP/1.1 exchange is over. With nil the connection, its idle
// watch started, goes back to the pool; otherwise (it was ended) it only leaves the
// transport's active set.
func (pc *conn) Release(err error) {
	t := pc.t
	if err == nil {
		pc.setState(stateIdle)
		t.pool.Put(pc.entry.Load())
	}
	t.doneActive(pc)
}

// Detach is h1.Owner's: a 101 Switching Protocols handed the connection to the caller.
func (pc *conn) Detach() {
	if e := pc.entry.Load(); e != nil {
		pc.t.pool.Remove(e)
	}
}

// TakeIdle is h1.Owner's: the idle watch takes the connection from the idle list, which
// the server closed; false if a request took it first.
func (pc *conn) TakeIdle() bool { return pc.t.pool.TakeIdle(pc.entry.Load()) }

// retire is the pool's Retire: the pool dropped pc on its own. See retireBy.
func (t *Transport) retire(pc *conn, why pool.Reason) { t.retireBy(pc, why, time.Time{}) }

// retireBy reports pc, which left the pool for why without a request using it, as
// retired: Report ends it gracefully by deadline (zero: the budget from now), or aborts it
// once Transport.Close was called. Shutdown passes its deadline for the idle connections
// it takes from the pool.
func (t *Transport) retireBy(pc *conn, why pool.Reason, deadline time.Time) {
	pc.Report(proto.Outcome{Kind: proto.Retired, Reason: retireReason(why), Deadline: deadline})
}

// lifetime is the pool's Lifetime: MaxConnLifetime with ±10% jitter, so that connections
// made together do not all expire together (golang/go#79664).
func (t *Transport) lifetime() time.Duration {
	d := t.MaxConnLifetime
	if d <= 0 {
		return 0
	}
	return jitter(d, rand.Int64N(2001)-1000)
}

// jitter returns d scaled by 1 + basisPoints/10000: basisPoints in [-1000, 1000] is ±10%.
func jitter(d time.Duration, basisPoints int64) time.Duration {
	return d + time.Duration(int64(d)/10000*basisPoints)
}
