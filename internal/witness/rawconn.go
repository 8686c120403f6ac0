package witness

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rawConn wraps the accepted TCP connection, under TLS if any, and records
// the first end of TCP the client showed: FIN or RST.
//
// Linux reports an RST to one system call only. When a write consumes it,
// the reads that follow return io.EOF as if a FIN had come. So a read's EOF
// that overlaps a write in flight is held back until that write returns: if
// the write says ECONNRESET, the RST came first. (A client that sends FIN
// and then, during that same write, RST is therefore reported as RST.)
type rawConn struct {
	net.Conn
	readEOF atomic.Bool // a Read returned io.EOF
	closed  atomic.Bool // Close was called

	mu         sync.Mutex // guards the fields below
	writing    int        // writes in flight
	eofPending bool       // a Read returned io.EOF while writing > 0
	eofAt      time.Time  // when, if eofPending
	end        ClientEnd  // the first end settled, EndOpen until then
	endAt      time.Time
}

func (r *rawConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if err != nil {
		now := time.Now()
		switch {
		case err == io.EOF:
			r.readEOF.Store(true)
			r.mu.Lock()
			if r.writing > 0 {
				if !r.eofPending {
					r.eofPending, r.eofAt = true, now
				}
			} else {
				r.setEndLocked(EndFIN, now)
			}
			r.mu.Unlock()
		case isReset(err):
			r.mu.Lock()
			r.setEndLocked(EndRST, now)
			r.mu.Unlock()
		}
	}
	return n, err
}

func (r *rawConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.writing++
	r.mu.Unlock()
	n, err := r.Conn.Write(p)
	r.mu.Lock()
	r.writing--
	if err != nil && isReset(err) {
		r.setEndLocked(EndRST, time.Now())
	} else if r.eofPending && r.writing == 0 {
		r.setEndLocked(EndFIN, r.eofAt)
	}
	r.mu.Unlock()
	return n, err
}

func (r *rawConn) Close() error {
	r.closed.Store(true)
	return r.Conn.Close()
}

// setEndLocked records e unless an end was recorded already.
func (r *rawConn) setEndLocked(e ClientEnd, at time.Time) {
	if r.end == EndOpen {
		r.end, r.endAt = e, at
	}
}

// clientEnd returns the first end seen and when. A FIN still held back by
// a write in flight counts as a FIN.
func (r *rawConn) clientEnd() (ClientEnd, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.end == EndOpen && r.eofPending {
		return EndFIN, r.eofAt
	}
	return r.end, r.endAt
}

// isReset reports whether err says the peer reset the connection.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// isTimeout reports whether err is a deadline error.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// inboxMax is how many unread bytes the reader goroutine buffers before it
// waits for the request parser (backpressure).
const inboxMax = 1 << 20

// errReaderStopped ends the inbox of a NoRead connection.
var errReaderStopped = errors.New("witness: reading stopped")

// errConnAborted is what inbox reads return once the connection is torn down.
var errConnAborted = errors.New("witness: connection aborted")

// inbox carries bytes from a connection's reader goroutine to its request
// parser, so that the reader can watch for close_notify, FIN and RST while a
// handler writes.
type inbox struct {
	mu  sync.Mutex // guards buf and err
	buf bytes.Buffer
	err error // why the reader stopped; reported once buf is empty

	ready chan struct{} // capacity 1: signalled when data arrives or err is set
	space chan struct{} // capacity 1: signalled when the parser takes data
}

func newInbox() *inbox {
	return &inbox{ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// signal wakes one waiter on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push appends p, waiting while the inbox is full. It returns false if
// stop or done closed first.
func (b *inbox) push(p []byte, stop, done <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.buf.Len() < inboxMax {
			b.buf.Write(p)
			b.mu.Unlock()
			signal(b.ready)
			return true
		}
		b.mu.Unlock()
		select {
		case <-b.space:
		case <-stop:
			return false
		case <-done:
			return false
		}
	}
}

// close records why the reader stopped; the first reason wins.
func (b *inbox) close(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	signal(b.ready)
}

// pending reports whether a read would not block: data is buffered or the
// reader has stopped.
func (b *inbox) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len() > 0 || b.err != nil
}

// closed reports whether the reader has stopped.
func (b *inbox) closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil
}

// read reads buffered bytes, waiting for some until the reader stops or
// done is closed.
func (b *inbox) read(p []byte, done <-chan struct{}) (int, error) {
	for {
		b.mu.Lock()
		if b.buf.Len() > 0 {
			n, _ := b.buf.Read(p)
			b.mu.Unlock()
			signal(b.space)
			return n, nil
		}
		err := b.err
		b.mu.Unlock()
		if err != nil {
			return 0, err
		}
		select {
		case <-b.ready:
		case <-done:
			return 0, errConnAborted
		}
	}
}
