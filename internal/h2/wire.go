package h2

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 frame types and flags that the wire watches (RFC 9113, section 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	flagAck           = 0x1
	flagEndStream     = 0x1

	settingInitialWindowSize = 0x4

	frameHeaderLen = 9
	// clientPrefaceLen is the length of "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", which opens the
	// client's side of every HTTP/2 connection.
	clientPrefaceLen = 24
)

// frameScanner follows the frame boundaries of one direction of an HTTP/2 connection
// across reads or writes of any size, without buffering the stream: it keeps the header of
// the current frame and the first bytes of its payload, and skips the rest.
//
// A frameScanner is used by one goroutine at a time.
type frameScanner struct {
	skip   int                  // bytes to pass over before the first frame (the client preface)
	hdr    [frameHeaderLen]byte // the header of the current frame
	nhdr   int                  // bytes of hdr seen; frameHeaderLen once it is complete
	remain int                  // payload bytes of the current frame still to come
	off    int                  // payload bytes of the current frame seen
	head   [8]byte              // the first payload bytes of the current frame
	told   bool                 // onFrame was called for the current frame

	// onFrame, if set, is called once per frame, when its first len(head) payload bytes
	// (or the whole payload, if shorter) have been seen. streamID and length tell the
	// frame's stream and payload length meanwhile.
	onFrame func(typ, flags byte, head []byte)
	// onSetting, if set, is called for each parameter of a SETTINGS frame that is not an
	// acknowledgement, as the parameter goes by.
	onSetting func(id uint16, val uint32)
	setting   [6]byte // the SETTINGS parameter being seen
}

// streamID returns the stream of the current frame, once its header is complete.
func (s *frameScanner) streamID() uint32 {
	return binary.BigEndian.Uint32(s.hdr[5:9]) & (1<<31 - 1)
}

// length returns the payload length of the current frame, once its header is complete.
func (s *frameScanner) length() int {
	return int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
}

// scan advances s over p, which is the next part of the stream. If zeroGoAway is set, it
// returns p with the Last-Stream-ID of every GOAWAY frame set to 0: a copy, made in
// *scratch, if anything had to change (p itself is never modified), else p.
func (s *frameScanner) scan(p []byte, zeroGoAway bool, scratch *[]byte) []byte {
	out := p
	copied := false
	for i := 0; i < len(p); {
		if s.skip > 0 {
			n := min(s.skip, len(p)-i)
			s.skip -= n
			i += n
			continue
		}
		if s.nhdr < frameHeaderLen {
			n := copy(s.hdr[s.nhdr:], p[i:])
			s.nhdr += n
			i += n
			if s.nhdr == frameHeaderLen {
				s.remain = s.length()
				s.off = 0
				s.told = false
				s.endOfPart()
			}
			continue
		}
		n := min(s.remain, len(p)-i)
		if s.onSetting != nil && s.hdr[3] == frameSettings && s.hdr[4]&flagAck == 0 {
			s.settings(p[i : i+n])
		}
		if s.off < len(s.head) {
			k := min(n, len(s.head)-s.off)
			copy(s.head[s.off:], p[i:i+k])
			if zeroGoAway && s.hdr[3] == frameGoAway && s.off < 4 {
				// The Last-Stream-ID is the first 4 payload bytes: zero those of them
				// that are in p.
				if !copied {
					out = append((*scratch)[:0], p...)
					*scratch = out
					copied = true
				}
				clear(out[i : i+min(k, 4-s.off)])
				clear(s.head[s.off:min(s.off+k, 4)])
			}
		}
		s.off += n
		s.remain -= n
		i += n
		s.endOfPart()
	}
	return out
}

// settings passes the SETTINGS parameters completed by p, the next payload bytes of the
// current frame, to onSetting.
func (s *frameScanner) settings(p []byte) {
	for k, b := range p {
		o := (s.off + k) % len(s.setting)
		s.setting[o] = b
		if o == len(s.setting)-1 {
			s.onSetting(binary.BigEndian.Uint16(s.setting[0:2]), binary.BigEndian.Uint32(s.setting[2:6]))
		}
	}
}

// endOfPart tells onFrame about the current frame once enough of it was seen, and moves on
// to the next frame at the end of this one.
func (s *frameScanner) endOfPart() {
	if !s.told && (s.off >= len(s.head) || s.remain == 0) {
		s.told = true
		if s.onFrame != nil {
			s.onFrame(s.hdr[3], s.hdr[4], s.head[:min(s.off, len(s.head))])
		}
	}
	if s.remain == 0 {
		s.nhdr = 0
	}
}

// wire is the net.Conn that x/net's client connection runs over: the TLS session (or TCP,
// for unencrypted HTTP/2) seen through endwell's eyes.
//
//   - It sees every frame x/net writes, and sets the Last-Stream-ID of each GOAWAY to 0:
//     a client accepts no push, and x/net's value (its next stream id) is a protocol error to
//     nghttp2 (golang/go#80759).
//   - It sees every frame the server sends: a GOAWAY is reported at once, before x/net
//     processes it, so that the pool stops handing out the connection.
//   - Its Close never closes anything: it tells endwell that x/net is done with the
//     connection, which then ends through the teardown engine (tls.Conn.Close would send
//     close_notify, aborts included).
type wire struct {
	net.Conn           // the *tls.Conn, or the TCP connection for unencrypted HTTP/2
	tls      *tls.Conn // nil for unencrypted HTTP/2

	// onPeerGoAway is called from x/net's read loop, inside Read, when a GOAWAY from the
	// server has arrived whole. onClose is called once, from Close.
	onPeerGoAway func()
	onClose      func()

	wmu     sync.Mutex // guards out and scratch, and serialises writes
	out     frameScanner
	scratch []byte
	// sentGoAway and sentCode are set by the out scanner, under wmu, for the frame being
	// written; they are published below once the write succeeded.
	sentGoAway bool
	sentCode   uint32

	in frameScanner // used by x/net's read loop only

	// flow keeps the flow-control windows as the frames say them: x/net reports no
	// error code when a flow-control violation ends its read loop.
	flow flowAccount

	settingsAcked chan struct{} // closed when x/net acknowledged the server's first SETTINGS
	acks          int           // SETTINGS acknowledgements written; guarded by wmu
	settingsDirty atomic.Bool   // a later SETTINGS was acknowledged: MAX_CONCURRENT_STREAMS may have changed

	writesOff  atomic.Bool   // the teardown owns the connection: x/net writes nothing more
	goAwaySent atomic.Bool   // a GOAWAY went out
	goAwayCode atomic.Uint32 // the error code of the last GOAWAY that went out
	peerGoAway atomic.Bool   // the server sent a GOAWAY
	// peerResetProtocol says the server reset a stream with PROTOCOL_ERROR: x/net takes
	// no new stream on the connection then (golang/go#47635), and closes it once idle.
	peerResetProtocol atomic.Bool
	peerCode          atomic.Uint32         // its error code
	readErr           atomic.Pointer[error] // the first error a Read returned
	writeErr          atomic.Pointer[error] // the first error a Write returned
	closed            atomic.Bool           // x/net called Close
	closeCalled       chan struct{}         // closed when x/net called Close

	readsOff atomic.Bool // stopReads was called: Read fails at once
	// reading holds a token while a Read is in the socket: stopReads takes it to know that
	// no Read is there, nor will be (x/net's read loop may also end without another Read:
	// net/http's engine, under Go 1.27, stops reading once closed).
	reading chan struct{} // buffered 1
}

// errWireClosed is what x/net's writes get once the teardown owns the connection. It
// unwraps to net.ErrClosed.
// aLongTimeAgo is a deadline in the past: it makes a blocked read return at once.
var aLongTimeAgo = time.Unix(1, 0)

var errWireClosed error = wireClosedError{}

type wireClosedError struct{}

func (wireClosedError) Error() string { return "endwell: HTTP/2 connection is being closed" }
func (wireClosedError) Unwrap() error { return net.ErrClosed }

func newWire(nc net.Conn) *wire {
	w := &wire{
		Conn:          nc,
		settingsAcked: make(chan struct{}),
		closeCalled:   make(chan struct{}),
		reading:       make(chan struct{}, 1),
	}
	w.tls, _ = nc.(*tls.Conn)
	w.out.skip = clientPrefaceLen
	w.out.onFrame = w.sawOutgoing
	w.out.onSetting = w.flow.sentSetting
	w.in.onFrame = w.sawIncoming
	w.flow.init()
	return w
}

// sawOutgoing runs under wmu, from scan.
func (w *wire) sawOutgoing(typ, flags byte, head []byte) {
	w.flow.sent(typ, w.out.streamID(), w.out.length(), head)
	switch typ {
	case frameGoAway:
		w.sentGoAway = true
		if len(head) >= 8 {
			w.sentCode = binary.BigEndian.Uint32(head[4:8])
		}
	case frameSettings:
		if flags&flagAck != 0 {
			w.acks++
			if w.acks == 1 {
				close(w.settingsAcked)
			} else {
				w.settingsDirty.Store(true)
			}
		}
	}
}

// sawIncoming runs in x/net's read loop, from Read.
func (w *wire) sawIncoming(typ, flags byte, head []byte) {
	w.flow.received(typ, flags, w.in.streamID(), w.in.length(), head)
	if typ == frameRSTStream && len(head) >= 4 && binary.BigEndian.Uint32(head) == uint32(http2.ErrCodeProtocol) {
		// x/net reuses a connection no more after this, and closes it once idle.
		w.peerResetProtocol.Store(true)
	}
	if typ != frameGoAway || len(head) < 8 {
		return
	}
	w.peerCode.Store(binary.BigEndian.Uint32(head[4:8]))
	w.peerGoAway.Store(true)
	if w.onPeerGoAway != nil {
		w.onPeerGoAway()
	}
}

// Read reads from the connection, watching the server's frames. Its first error ends x/net's
// read loop.
func (w *wire) Read(p []byte) (int, error) {
	w.reading <- struct{}{}
	if w.readsOff.Load() {
		<-w.reading
		w.readEnded(errWireClosed)
		return 0, errWireClosed
	}
	n, err := w.Conn.Read(p)
	<-w.reading
	if n > 0 {
		w.in.scan(p[:n], false, nil)
	}
	if err != nil {
		w.readEnded(err)
	}
	return n, err
}

func (w *wire) readEnded(err error) {
	w.readErr.CompareAndSwap(nil, &err)
}

// stopReads ends x/net's reads, so that the teardown's layers below own the connection's
// reads (a reader blocked in the socket would also hold its read lock, which the TLS
// layer's peek needs). It waits for a Read in the socket to return, or ctx; a Read after
// it fails at once.
func (w *wire) stopReads(ctx context.Context) error {
	w.readsOff.Store(true)
	w.Conn.SetReadDeadline(aLongTimeAgo)
	defer w.Conn.SetReadDeadline(time.Time{})
	select {
	case w.reading <- struct{}{}:
		<-w.reading
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Write writes x/net's frames, with the Last-Stream-ID of GOAWAY frames set to 0. Once the
// teardown owns the connection it writes nothing.
//
// Write is in the deepest call chain of x/net's stream goroutines (writeRequest, the bufio
// flush, then tls.Conn.Write down to AES-GCM), whose stack depth is within a few dozen
// bytes of a 4 KiB stack's limit: a bigger frame here made every stream copy its stack to
// 8 KiB (runtime.newstack at gcmAesEnc, some 15% of the client's CPU). So its frame holds
// no more than w across the write: the locking and scanning before it, and the unlocking
// and bookkeeping after it, run out of line, and there is no defer (nothing below recovers
// from a panic in tls.Conn.Write, which ends the program anyway).
func (w *wire) Write(p []byte) (int, error) {
	if w.writesOff.Load() {
		return 0, errWireClosed
	}
	n, err := w.Conn.Write(w.startWrite(p))
	return w.endWrite(n, err)
}

// startWrite takes wmu and runs the out scanner over p. It returns what to write.
//
//go:noinline
func (w *wire) startWrite(p []byte) []byte {
	w.wmu.Lock()
	w.sentGoAway = false
	return w.out.scan(p, true, &w.scratch)
}

// endWrite records the end of the write begun by startWrite, releases wmu and returns
// n and err.
//
//go:noinline
func (w *wire) endWrite(n int, err error) (int, error) {
	if err != nil {
		e := err // a copy, so that err itself does not escape on every write
		w.writeErr.CompareAndSwap(nil, &e)
	} else if w.sentGoAway {
		w.goAwayCode.Store(w.sentCode)
		w.goAwaySent.Store(true)
	}
	w.wmu.Unlock()
	return n, err
}

// sendGoAway writes GOAWAY(last-stream-id 0, code) on its own, at a frame boundary,
// serialised with x/net's writes: endwell says its goodbye itself, on every Go release
// (x/net built by Go 1.27 wraps net/http's HTTP/2, whose Shutdown sends no GOAWAY at all;
// built by Go 1.26, its GOAWAY carries a Last-Stream-ID that nghttp2 rejects). If x/net is
// in the middle of a frame (a big DATA frame goes out in several writes), sendGoAway
// waits for the frame's end. ctx bounds the wait and the write: its deadline becomes the
// write's. It fails if the teardown already owns the wire or the write failed.
func (w *wire) sendGoAway(ctx context.Context, code http2.ErrCode) error {
	var f [frameHeaderLen + 8]byte
	f[2] = 8 // length
	f[3] = frameGoAway
	binary.BigEndian.PutUint32(f[frameHeaderLen+4:], uint32(code))
	for wait := time.Millisecond; ; wait = min(2*wait, 16*time.Millisecond) {
		if w.writesOff.Load() {
			return errWireClosed
		}
		// Never Lock: a write of x/net's blocked on a peer that stopped reading holds
		// wmu, and on a connection error nothing would close the socket under it before
		// this returns (the abort is launched after the GOAWAY): ctx bounds the wait.
		if w.wmu.TryLock() {
			if w.out.skip == 0 && w.out.nhdr == 0 {
				break // between frames; wmu is held
			}
			w.wmu.Unlock()
		}
		// A write under way, or mid-frame: x/net writes the rest of the frame next.
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return context.Cause(ctx)
		}
	}
	defer w.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		w.Conn.SetWriteDeadline(d)
		defer w.Conn.SetWriteDeadline(time.Time{})
	}
	if _, err := w.Conn.Write(f[:]); err != nil {
		e := err
		w.writeErr.CompareAndSwap(nil, &e)
		return err
	}
	w.goAwayCode.Store(uint32(code))
	w.goAwaySent.Store(true)
	return nil
}

// Close tells endwell that x/net is done with the connection. It closes nothing: the
// connection ends through the teardown engine, with the mode its story calls for.
func (w *wire) Close() error {
	if w.closed.CompareAndSwap(false, true) {
		close(w.closeCalled)
		if w.onClose != nil {
			w.onClose()
		}
	}
	return nil
}

// ConnectionState returns the TLS state, so that x/net fills [http.Response.TLS].
func (w *wire) ConnectionState() tls.ConnectionState {
	if w.tls == nil {
		return tls.ConnectionState{}
	}
	return w.tls.ConnectionState()
}

// readError returns the first error a Read returned, or nil.
func (w *wire) readError() error {
	if p := w.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

// writeError returns the first error a Write returned, or nil.
func (w *wire) writeError() error {
	if p := w.writeErr.Load(); p != nil {
		return *p
	}
	return nil
}

var _ net.Conn = (*wire)(nil)

var errNoSettings = errors.New("no SETTINGS from the server")

// flowAccount keeps an HTTP/2 connection's flow-control windows as the frames on the wire
// say them (RFC 9113, section 6.9), to tell a server's flow-control violation: x/net's read
// loop ends on one with ConnectionError(FLOW_CONTROL_ERROR) that it neither reports (no
// CountError) nor sends (its GOAWAY stays in its buffer), and the streams it fails may be
// read by nobody.
//
// The account is of what went out on the wire: a WINDOW_UPDATE counts once written. x/net
// counts it a moment earlier, when it decides to send it, so its windows are never smaller
// than these: every violation x/net finds, the account finds too.
type flowAccount struct {
	mu sync.Mutex // guards the following
	// initial is the window of a new stream: our SETTINGS_INITIAL_WINDOW_SIZE.
	initial int64
	// recvConn and recvStreams are what the server may still send on the connection, and
	// on each open stream.
	recvConn    int64
	recvStreams map[uint32]int64
	lastStream  uint32 // the highest stream we opened
	// sendConn is what we may still send on the connection: it may not pass 2^31-1.
	sendConn int64
	violated bool // the server broke flow control
}

// defaultWindow is every window's size until SETTINGS or WINDOW_UPDATE change it.
const defaultWindow = 65535

const maxWindow = 1<<31 - 1

func (f *flowAccount) init() {
	f.initial, f.recvConn, f.sendConn = defaultWindow, defaultWindow, defaultWindow
}

// sentSetting notes a parameter of a SETTINGS frame we sent. A new initial window changes
// the windows of the open streams by the difference (RFC 9113, section 6.9.2).
func (f *flowAccount) sentSetting(id uint16, val uint32) {
	if id != settingInitialWindowSize {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delta := int64(val) - f.initial
	f.initial = int64(val)
	for id := range f.recvStreams {
		f.recvStreams[id] += delta
	}
}

// sent notes a frame we sent: a new stream, a WINDOW_UPDATE, a reset stream, DATA.
func (f *flowAccount) sent(typ byte, stream uint32, length int, head []byte) {
	switch typ {
	case frameHeaders, frameWindowUpdate, frameRSTStream, frameData:
	default:
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch typ {
	case frameHeaders:
		if stream > f.lastStream {
			f.lastStream = stream
			if f.recvStreams == nil {
				f.recvStreams = make(map[uint32]int64)
			}
			f.recvStreams[stream] = f.initial
		}
	case frameWindowUpdate:
		if len(head) < 4 {
			return
		}
		inc := int64(binary.BigEndian.Uint32(head[0:4]) & maxWindow)
		if stream == 0 {
			f.recvConn += inc
		} else if _, ok := f.recvStreams[stream]; ok {
			f.recvStreams[stream] += inc
		}
	case frameRSTStream:
		delete(f.recvStreams, stream)
	case frameData:
		f.sendConn -= int64(length)
	}
}

// received notes a frame the server sent, and whether it broke flow control: DATA beyond
// a window, or a WINDOW_UPDATE that takes the connection's send window past 2^31-1.
func (f *flowAccount) received(typ, flags byte, stream uint32, length int, head []byte) {
	switch typ {
	case frameData, frameHeaders, frameRSTStream, frameWindowUpdate:
	default:
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch typ {
	case frameData:
		f.recvConn -= int64(length)
		if f.recvConn < 0 {
			f.violated = true
		}
		if w, ok := f.recvStreams[stream]; ok {
			if w -= int64(length); w < 0 {
				f.violated = true
			}
			f.recvStreams[stream] = w
		}
		if flags&flagEndStream != 0 {
			delete(f.recvStreams, stream)
		}
	case frameHeaders:
		if flags&flagEndStream != 0 {
			delete(f.recvStreams, stream)
		}
	case frameRSTStream:
		delete(f.recvStreams, stream)
	case frameWindowUpdate:
		if stream == 0 && len(head) >= 4 {
			f.sendConn += int64(binary.BigEndian.Uint32(head[0:4]) & maxWindow)
			if f.sendConn > maxWindow {
				f.violated = true
			}
		}
	}
}

// broken reports whether the server broke flow control.
func (f *flowAccount) broken() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.violated
}
