package h3

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// body is a response body: it counts its request out of flight once, at its end (EOF or
// an error), at Close, or when the request's context is done; and closed before its end,
// it cancels the stream both ways.
type body struct {
	rc     io.ReadCloser // quic-go's body
	c      *Conn
	cancel context.CancelFunc // cancels the context quic-go's request runs under

	mu      sync.Mutex  // guards stopCtx, set by RoundTrip while the watch may already fire
	stopCtx func() bool // stops the watch on that context

	eof      atomic.Bool // Read returned io.EOF
	doneOnce sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		if err == io.EOF {
			b.eof.Store(true)
		}
		b.finish()
	}
	return n, err
}

// Close closes the body. Before the body's end, it aborts the stream: quic-go's own Close
// only sends STOP_SENDING; cancelling the request's context makes quic-go reset the
// request stream too (RESET_STREAM), both with H3_REQUEST_CANCELLED, as net/http's
// HTTP/2 resets a stream both ways.
func (b *body) Close() error {
	if !b.eof.Load() {
		b.cancel()
	}
	err := b.rc.Close()
	b.finish()
	return err
}

// finish counts the request out of flight, once. After the body's end, quic-go's
// watcher of the request context has returned (its done channel was closed before our
// Read returned), so the cancel below sends nothing: it only frees the context.
func (b *body) finish() {
	b.doneOnce.Do(func() {
		b.mu.Lock()
		stop := b.stopCtx
		b.mu.Unlock()
		if stop != nil {
			stop()
		}
		b.cancel()
		b.c.releaseRequest()
	})
}

// onceCloser closes a request body once: quic-go closes it after sending it, and
// RoundTrip closes it on errors, as an http.RoundTripper must.
type onceCloser struct {
	io.ReadCloser
	once sync.Once
	err  error
}

func (o *onceCloser) Close() error {
	o.once.Do(func() { o.err = o.ReadCloser.Close() })
	return o.err
}
