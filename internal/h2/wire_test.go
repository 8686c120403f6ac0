package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
)

func TestH2FrameScannerZeroesGoAwayLastStreamID(t *testing.T) {
	// The client preface, SETTINGS, a GOAWAY(last 7, PROTOCOL_ERROR, debug "xy"), a PING.
	var stream bytes.Buffer
	stream.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&stream, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	fr.WriteGoAway(7, http2.ErrCodeProtocol, []byte("xy"))
	fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	in := stream.Bytes()

	want := append([]byte(nil), in...)
	gi := len(http2.ClientPreface) + 9 + 6 // the GOAWAY frame
	copy(want[gi+9:gi+13], []byte{0, 0, 0, 0})

	for _, size := range []int{1, 2, 3, 5, 7, 9, 13, 64, len(in)} {
		t.Run(fmt.Sprint("writes of ", size), func(t *testing.T) {
			s := frameScanner{skip: clientPrefaceLen}
			var types []byte
			var code []byte
			s.onFrame = func(typ, flags byte, head []byte) {
				types = append(types, typ)
				if typ == frameGoAway {
					code = append([]byte(nil), head[4:8]...)
				}
			}
			var out, scratch []byte
			orig := append([]byte(nil), in...)
			for i := 0; i < len(in); i += size {
				p := in[i:min(i+size, len(in))]
				out = append(out, s.scan(p, true, &scratch)...)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("got %x, want %x", out, want)
			}
			if !bytes.Equal(in, orig) {
				t.Errorf("scan modified its input")
			}
			if got, want := fmt.Sprint(types), fmt.Sprint([]byte{frameSettings, frameGoAway, 0x6}); got != want {
				t.Errorf("frames: got %s, want %s", got, want)
			}
			if !bytes.Equal(code, []byte{0, 0, 0, 1}) {
				t.Errorf("GOAWAY code: got %x, want 00000001", code)
			}
		})
	}
}

// TestH2WireGoAwayAtFrameBoundary: endwell's own GOAWAY never cuts into a frame that x/net
// is writing in several parts: it waits for the frame's end, then goes out whole.
func TestH2WireGoAwayAtFrameBoundary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cside, sside := net.Pipe()
		defer cside.Close()
		var got bytes.Buffer
		readDone := make(chan struct{})
		// The peer: it reads everything until the pipe closes.
		go func() {
			defer close(readDone)
			io.Copy(&got, sside)
		}()
		w := newWire(cside)
		var frames bytes.Buffer
		frames.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&frames, nil)
		fr.WriteData(1, false, bytes.Repeat([]byte("d"), 100))
		all := frames.Bytes()
		half := clientPrefaceLen + 9 + 50
		if _, err := w.Write(all[:half]); err != nil {
			t.Fatal(err)
		}
		sent := make(chan error, 1)
		go func() { sent <- w.sendGoAway(context.Background(), http2.ErrCodeNo) }()
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		select {
		case err := <-sent:
			t.Fatalf("GOAWAY written in the middle of a DATA frame (err %v)", err)
		default:
		}
		if _, err := w.Write(all[half:]); err != nil {
			t.Fatal(err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("sendGoAway: %v", err)
		}
		cside.Close()
		<-readDone
		want := append(bytes.Clone(all), 0, 0, 8, frameGoAway, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("on the wire:\n got %x\nwant %x", got.Bytes(), want)
		}
		if !w.goAwaySent.Load() {
			t.Errorf("goAwaySent not set")
		}
	})
}

// TestH2WireGoAwayBoundedByBlockedWrite: a write of x/net's blocked on a peer that reads
// nothing holds the wire; endwell's GOAWAY gives up when its context ends instead of
// waiting for it (on a connection error, nothing else would unblock it).
func TestH2WireGoAwayBoundedByBlockedWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cside, sside := net.Pipe() // nobody reads sside: writes block
		defer sside.Close()
		w := newWire(cside)
		var frames bytes.Buffer
		frames.WriteString(http2.ClientPreface)
		http2.NewFramer(&frames, nil).WriteData(1, false, []byte("stuck"))
		writeDone := make(chan struct{})
		go func() {
			defer close(writeDone)
			w.Write(frames.Bytes())
		}()
		synctest.Wait() // the write is blocked, holding the wire
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := w.sendGoAway(ctx, http2.ErrCodeProtocol)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 250*time.Millisecond {
			t.Errorf("sendGoAway: got %v after %v, want the context's deadline after 250ms", err, time.Since(start))
		}
		cside.Close()
		<-writeDone
	})
}

// FuzzH2FrameScanner feeds the frame scanner what a hostile server may send, cut into reads
// of any sizes: it never panics, reports exactly the frames a whole-buffer parse finds
// (type, flags, stream, length, first payload bytes), and never changes what it reads;
// the wire's own bookkeeping of the server's frames (flow control, GOAWAY, resets) runs
// over the same bytes without panicking.
func FuzzH2FrameScanner(f *testing.F) {
	var seed bytes.Buffer
	fr := http2.NewFramer(&seed, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 3})
	fr.WriteWindowUpdate(0, 1<<30)
	fr.WriteData(1, true, []byte("hello"))
	fr.WriteRSTStream(3, http2.ErrCodeProtocol)
	fr.WriteGoAway(5, http2.ErrCodeEnhanceYourCalm, []byte("bye"))
	f.Add(seed.Bytes(), []byte{1, 7, 3})
	f.Add([]byte{0, 0, 5, frameSettings, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5}, []byte{2})
	f.Add([]byte{0xff, 0xff, 0xff, frameGoAway, 0xff, 0xff, 0xff, 0xff, 0xff}, []byte{0})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		type frame struct {
			typ, flags byte
			stream     uint32
			length     int
			head       string
		}
		// The reference: the frames of the whole buffer, parsed at once. A frame whose
		// payload is cut short is reported once its first 8 payload bytes are in (or
		// never, if fewer arrive).
		var want []frame
		for i := 0; i+frameHeaderLen <= len(in); {
			h := in[i : i+frameHeaderLen]
			length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			payload := in[i+frameHeaderLen : min(i+frameHeaderLen+length, len(in))]
			if len(payload) >= 8 || len(payload) == length {
				want = append(want, frame{h[3], h[4], binary.BigEndian.Uint32(h[5:9]) & (1<<31 - 1), length, string(payload[:min(8, len(payload))])})
			}
			i += frameHeaderLen + length
		}
		var got []frame
		s := frameScanner{}
		s.onFrame = func(typ, flags byte, head []byte) {
			got = append(got, frame{typ, flags, s.streamID(), s.length(), string(head)})
		}
		var settings int
		s.onSetting = func(id uint16, val uint32) { settings++ }
		w := newWire(nil)
		orig := bytes.Clone(in)
		for i, k := 0, 0; i < len(in); k++ {
			n := len(in) - i
			if len(cuts) > 0 {
				n = min(n, int(cuts[k%len(cuts)])+1)
			}
			p := in[i : i+n]
			if out := s.scan(p, false, nil); !bytes.Equal(out, p) {
				t.Fatalf("scan changed what it read")
			}
			w.in.scan(p, false, nil)
			i += n
		}
		if !bytes.Equal(in, orig) {
			t.Fatalf("scan modified its input")
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("frames:\n got %v\nwant %v", got, want)
		}
		w.flow.broken()
	})
}
