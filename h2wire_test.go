package endwell

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
)

// gateConn is the connection under an h2Wire in these tests: each Write waits for the test
// to hand it its result through gate, and the writes that succeed are logged.
type gateConn struct {
	net.Conn // nil: the wire only writes and sets read deadlines here
	gate     chan error

	mu           sync.Mutex
	writes       [][]byte
	readDeadline time.Time
}

func newGateConn() *gateConn { return &gateConn{gate: make(chan error)} }

func (c *gateConn) Write(p []byte) (int, error) {
	if err := <-c.gate; err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *gateConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return nil
}

func (c *gateConn) log() ([][]byte, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.readDeadline
}

// h2FrameBytes returns the frames that write makes with an x/net Framer.
func h2FrameBytes(t *testing.T, write func(fr *http2.Framer) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(http2.NewFramer(&b, nil)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func wireWrite(t *testing.T, w *h2Wire, p []byte) {
	t.Helper()
	if n, err := w.Write(p); n != len(p) || err != nil {
		t.Fatalf("Write: got %d, %v, want %d, nil", n, err, len(p))
	}
}

// TestH2WireWritesBehind: what x/net writes while the socket is busy returns at once and
// leaves in the next single write, in order, with GOAWAY's Last-Stream-ID set to 0; the
// GOAWAY counts as sent once that write succeeded; settle waits for it; the flusher is gone
// afterwards (synctest fails a test that leaves a goroutine blocked).
func TestH2WireWritesBehind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gc := newGateConn()
		w := newH2Wire(gc)
		ping1 := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) })
		ping2 := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{2}) })
		goAway := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WriteGoAway(5, http2.ErrCodeNo, nil) })
		wantGoAway := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })

		wireWrite(t, w, []byte(http2.ClientPreface))
		synctest.Wait() // the flusher is in the socket's Write with the preface
		wireWrite(t, w, ping1)
		wireWrite(t, w, ping2)
		wireWrite(t, w, goAway)
		if w.goAwaySent.Load() {
			t.Error("GOAWAY counted as sent before it was written")
		}
		done := make(chan error, 1)
		go func() { done <- w.settle(context.Background()) }()
		gc.gate <- nil // the preface
		gc.gate <- nil // the rest, in one write
		if err := <-done; err != nil {
			t.Fatalf("settle: %v", err)
		}
		writes, _ := gc.log()
		want := [][]byte{[]byte(http2.ClientPreface), bytes.Join([][]byte{ping1, ping2, wantGoAway}, nil)}
		if len(writes) != len(want) {
			t.Fatalf("socket writes: got %d (%q), want %d", len(writes), writes, len(want))
		}
		for i := range want {
			if !bytes.Equal(writes[i], want[i]) {
				t.Errorf("socket write %d: got %x, want %x", i, writes[i], want[i])
			}
		}
		if !w.goAwaySent.Load() || w.goAwayCode.Load() != uint32(http2.ErrCodeNo) {
			t.Errorf("GOAWAY sent: got %v code %d, want true, NO_ERROR", w.goAwaySent.Load(), w.goAwayCode.Load())
		}
		// Idle again: a write starts a flusher of its own.
		wireWrite(t, w, ping1)
		gc.gate <- nil
		if err := w.settle(context.Background()); err != nil {
			t.Fatalf("settle: %v", err)
		}
		if writes, _ := gc.log(); len(writes) != 3 || !bytes.Equal(writes[2], ping1) {
			t.Errorf("socket writes: got %q, want a third with the PING", writes)
		}
	})
}

// TestH2WireBoundsWhatItHolds: a writer that runs more than maxWriteBehind ahead of the
// socket waits for it, as it waited for the socket itself without the wire.
func TestH2WireBoundsWhatItHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gc := newGateConn()
		w := newH2Wire(gc)
		w.out.skip = 0
		wireWrite(t, w, h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{}) }))
		synctest.Wait() // the flusher holds the PING, blocked
		chunk := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WriteData(1, false, make([]byte, 16<<10)) })
		var taken atomic.Int32
		writer := make(chan struct{})
		go func() {
			defer close(writer)
			for range 8 {
				if _, err := w.Write(chunk); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				taken.Add(1)
			}
		}()
		synctest.Wait()
		wantTaken := int32((maxWriteBehind + len(chunk) - 1) / len(chunk)) // until pend reaches the bound
		if got := taken.Load(); got != wantTaken {
			t.Errorf("chunks taken while the socket is blocked: got %d, want %d", got, wantTaken)
		}
		for range 3 { // the PING, then the held chunks, then the rest
			gc.gate <- nil
		}
		<-writer
		if err := w.settle(context.Background()); err != nil {
			t.Fatal(err)
		}
		var total int
		writes, _ := gc.log()
		for _, b := range writes[1:] {
			total += len(b)
		}
		if want := 8 * len(chunk); total != want || len(writes) != 3 {
			t.Errorf("socket writes: got %d writes, %d bytes after the PING, want 3 writes, %d bytes", len(writes), total, want)
		}
	})
}

// TestH2WireWriteError: a failed write is x/net's next Write's error, ends x/net's read loop
// (a read deadline in the past), and what was waiting behind it is dropped, a GOAWAY among
// it not counted as sent.
func TestH2WireWriteError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gc := newGateConn()
		w := newH2Wire(gc)
		w.out.skip = 0
		ping := h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{}) })
		wireWrite(t, w, ping)
		synctest.Wait()
		wireWrite(t, w, h2FrameBytes(t, func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeNo, nil) }))
		boom := errors.New("connection reset by peer")
		gc.gate <- boom
		if err := w.settle(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := w.writeError(); err != boom {
			t.Errorf("writeError: got %v, want %v", err, boom)
		}
		if _, rd := gc.log(); !rd.Equal(aLongTimeAgo) {
			t.Errorf("read deadline: got %v, want %v (x/net's read loop stopped)", rd, aLongTimeAgo)
		}
		if n, err := w.Write(ping); n != 0 || err != boom {
			t.Errorf("Write after the error: got %d, %v, want 0, %v", n, err, boom)
		}
		if writes, _ := gc.log(); len(writes) != 0 {
			t.Errorf("socket writes: got %q, want none", writes)
		}
		if w.goAwaySent.Load() {
			t.Error("a GOAWAY that was never written counted as sent")
		}
	})
}

// TestH2WireSettleGivesUp: settle ends with its context when the socket never takes the
// data (a peer that reads nothing); the teardown then aborts, which unblocks the write.
func TestH2WireSettleGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gc := newGateConn()
		w := newH2Wire(gc)
		wireWrite(t, w, []byte(http2.ClientPreface))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if err := w.settle(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("settle: got %v, want %v", err, context.DeadlineExceeded)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("settle gave up after %v, want 2s", d)
		}
		gc.gate <- net.ErrClosed // the abort closes the socket under the write
		synctest.Wait()
		if err := w.writeError(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("writeError: got %v, want %v", err, net.ErrClosed)
		}
	})
}
