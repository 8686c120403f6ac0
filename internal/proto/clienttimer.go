//lint:file-ignore SA1019 http.Client closes the deprecated Request.Cancel for transports it does not know: its timeout is told by it

package proto

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// AwaitClientTimer lets http.Client see its own Timeout in a request's deadline error.
//
// http.Client runs a request with a Timeout through a transport it does not know (any but
// net/http's) under two clocks at the same deadline: the request's context, and a timer of
// its own which marks the timeout, then closes req.Cancel. Only a marked timeout gets its
// message, "(Client.Timeout exceeded while awaiting headers)" or "(Client.Timeout or
// context cancellation while reading body)". endwell answers the context at once, often
// before the Client's timer has run: for an error of a request that has req.Cancel and
// whose deadline passed, it waits for req.Cancel to close, briefly (clientTimerWait): the
// Client's timer, due at the same instant, needs only to be scheduled. A deadline of the
// caller's own, earlier than the Client's, costs that wait.
func AwaitClientTimer(req *http.Request, err error) {
	if req == nil || req.Cancel == nil || err == nil {
		return
	}
	if !errors.Is(err, context.DeadlineExceeded) && req.Context().Err() != context.DeadlineExceeded {
		// Neither a deadline error nor one of a request past its deadline (HTTP/3's
		// stream reset, say).
		return
	}
	select {
	case <-req.Cancel:
		return
	default:
	}
	timer := time.NewTimer(clientTimerWait)
	defer timer.Stop()
	select {
	case <-req.Cancel:
	case <-timer.C:
	}
}

// clientTimerWait bounds AwaitClientTimer's wait.
const clientTimerWait = 50 * time.Millisecond
