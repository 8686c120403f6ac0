package proto

import (
	"sync"
	"time"
)

// HeaderWait is ResponseHeaderTimeout's timer, for HTTP/1.1 and HTTP/2 alike. As net/http's,
// it runs from the end of the request's writing, its body included (a slow upload, or the
// wait for a 100 Continue, is no part of it), to the final response's header: the body's
// writer may arm it while the request's goroutine waits for the response. The zero value
// is ready.
type HeaderWait struct {
	mu    sync.Mutex
	timer *time.Timer
	over  bool // Disarm was called: no timer starts any more
}

// Arm starts the timer, which calls fire after d, unless it runs already or Disarm was
// called.
func (w *HeaderWait) Arm(d time.Duration, fire func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.over || w.timer != nil {
		return
	}
	w.timer = time.AfterFunc(d, fire)
}

// Disarm stops the timer for good; it reports whether the timer had fired.
func (w *HeaderWait) Disarm() (fired bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.over = true
	return w.timer != nil && !w.timer.Stop()
}
