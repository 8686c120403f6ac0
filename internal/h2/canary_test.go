//lint:file-ignore SA1019 the canaries drive x/net's deprecated ClientConn on purpose: endwell's HTTP/2 runs on it (see h2.go)

package h2

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Canaries: endwell's HTTP/2 reads some of x/net's behaviour that x/net does not promise
// (error texts, an unexported type, the names given to CountError, the frames it writes
// and when). Built by Go 1.27, x/net's ClientConn is a wrapper of net/http's own HTTP/2,
// so each canary runs on both engines (plain `go test` and GOTOOLCHAIN=go1.27.4). Each
// fails loudly, naming x/net's version and the Go release, when what endwell reads changed.

// xnetVersion names the x/net module and the Go release this test binary was built with.
func xnetVersion() string {
	v := "golang.org/x/net (version unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "golang.org/x/net" {
				v = d.Path + " " + d.Version
			}
		}
	}
	return v + " built by " + runtime.Version()
}

// canaryPeer is a scripted HTTP/2 server on the other end of a net.Pipe, for x/net's
// ClientConn driven directly (no endwell in between).
type canaryPeer struct {
	wmu    sync.Mutex // guards fr's writes, out, henc and hbuf
	fr     *http2.Framer
	out    bytes.Buffer // what fr writes, before it goes to writes
	writes chan []byte  // to the peer's writer: a net.Pipe has no buffer of its own
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	frames chan h2Frame // what the client sent, SETTINGS acks answered already
	closed chan struct{}
}

// canaryClientConn starts x/net's ClientConn over a pipe to a canaryPeer, which sends its
// SETTINGS and acknowledges the client's. closes counts the client's Close calls on its
// net.Conn.
func canaryClientConn(t *testing.T, tr *http2.Transport) (cc *http2.ClientConn, p *canaryPeer, closes *int32Counter) {
	t.Helper()
	cside, sside := net.Pipe()
	p = &canaryPeer{frames: make(chan h2Frame, 64), closed: make(chan struct{}), writes: make(chan []byte, 64)}
	p.fr = http2.NewFramer(&p.out, sside)
	p.henc = hpack.NewEncoder(&p.hbuf)
	// The peer's writer: it ends when the pipe closes.
	go func() {
		for {
			select {
			case b := <-p.writes:
				if _, err := sside.Write(b); err != nil {
					return
				}
			case <-p.closed:
				return
			}
		}
	}()
	// The peer's read loop: it ends when the pipe closes.
	go func() {
		defer close(p.closed)
		preface := make([]byte, clientPrefaceLen)
		if _, err := io.ReadFull(sside, preface); err != nil {
			return
		}
		p.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			lf := h2Frame{Type: f.Header().Type, StreamID: f.Header().StreamID, Flags: f.Header().Flags}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					p.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			case *http2.GoAwayFrame:
				lf.LastStreamID, lf.Code = f.LastStreamID, f.ErrCode
			case *http2.RSTStreamFrame:
				lf.Code = f.ErrCode
			}
			select {
			case p.frames <- lf:
			default:
			}
		}
	}()
	closes = &int32Counter{}
	cc, err := tr.NewClientConn(&closeCounting{Conn: cside, n: closes})
	if err != nil {
		t.Fatalf("%s: NewClientConn: %v", xnetVersion(), err)
	}
	t.Cleanup(func() {
		cc.Close()
		cside.Close()
		sside.Close()
		<-p.closed
	})
	return cc, p, closes
}

type int32Counter struct {
	mu sync.Mutex
	n  int
}

func (c *int32Counter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *int32Counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// closeCounting counts Close calls and closes nothing, as endwell's wire does.
type closeCounting struct {
	net.Conn
	n *int32Counter
}

func (c *closeCounting) Close() error { c.n.add(); return nil }

func (p *canaryPeer) write(w func(fr *http2.Framer) error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.out.Reset()
	w(p.fr)
	p.writes <- bytes.Clone(p.out.Bytes())
}

// respond sends a response's HEADERS on stream id, ending the stream if end.
func (p *canaryPeer) respond(id uint32, end bool) {
	p.write(func(fr *http2.Framer) error {
		p.hbuf.Reset()
		p.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndHeaders: true, EndStream: end})
	})
}

// wait returns the next frame of type typ that the client sent.
func (p *canaryPeer) wait(t *testing.T, typ http2.FrameType) h2Frame {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case f := <-p.frames:
			if f.Type == typ {
				return f
			}
		case <-timeout:
			t.Fatalf("%s: the client sent no %v", xnetVersion(), typ)
		}
	}
}

func canaryRequest(method string) *http.Request {
	req, _ := http.NewRequest(method, "https://canary.test/", nil)
	return req
}

// roundTripAsync runs cc.RoundTrip(req) in a goroutine of its own and returns its result.
func roundTripAsync(cc *http2.ClientConn, req *http.Request) <-chan error {
	ch := make(chan error, 1)
	go func() {
		resp, err := cc.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		ch <- err
	}()
	return ch
}

// TestCanaryXnetNotSentErrors: h2NotSent recognises, by their text, x/net's errors for a
// stream the server never processed: above the Last-Stream-ID of the server's GOAWAY, and
// on a connection that is closed.
func TestCanaryXnetNotSentErrors(t *testing.T) {
	t.Run("stream above the server's GOAWAY", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cc, p, _ := canaryClientConn(t, &http2.Transport{})
			done := roundTripAsync(cc, canaryRequest("POST"))
			f := p.wait(t, http2.FrameHeaders)
			p.write(func(fr *http2.Framer) error { return fr.WriteGoAway(f.StreamID-1, http2.ErrCodeNo, nil) })
			err := <-done
			if err == nil || !h2NotSent(err) {
				t.Fatalf("%s: a stream above the GOAWAY's Last-Stream-ID failed with %q (%T), which h2NotSent does not recognise: update h2NotSent", xnetVersion(), err, err)
			}
		})
	})
	t.Run("closed connection", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cc, _, _ := canaryClientConn(t, &http2.Transport{})
			cc.Close()
			_, err := cc.RoundTrip(canaryRequest("POST"))
			if err == nil || !h2NotSent(err) {
				t.Fatalf("%s: RoundTrip on a closed ClientConn failed with %q (%T), which h2NotSent does not recognise: update h2NotSent", xnetVersion(), err, err)
			}
		})
	})
	t.Run("refused stream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			cc, p, _ := canaryClientConn(t, &http2.Transport{})
			done := roundTripAsync(cc, canaryRequest("POST"))
			f := p.wait(t, http2.FrameHeaders)
			p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream) })
			if err := <-done; err == nil || !h2NotSent(err) {
				t.Fatalf("%s: a REFUSED_STREAM failed with %q (%T), which h2NotSent does not recognise", xnetVersion(), err, err)
			}
		})
	})
}

// TestCanaryXnetNoBody: x/net's body for a response that ended with its headers (HEAD, or
// END_STREAM on the HEADERS) is recognised by isXnetNoBody, so that the stream's use is
// given back at once.
func TestCanaryXnetNoBody(t *testing.T) {
	for _, method := range []string{"HEAD", "GET"} {
		t.Run(method, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cc, p, _ := canaryClientConn(t, &http2.Transport{})
				type result struct {
					resp *http.Response
					err  error
				}
				ch := make(chan result, 1)
				go func() {
					resp, err := cc.RoundTrip(canaryRequest(method))
					ch <- result{resp, err}
				}()
				f := p.wait(t, http2.FrameHeaders)
				p.respond(f.StreamID, true)
				r := <-ch
				if r.err != nil {
					t.Fatalf("%s: %v", xnetVersion(), r.err)
				}
				defer r.resp.Body.Close()
				if !isXnetNoBody(r.resp.Body) {
					t.Fatalf("%s: the body of a response that ended with its headers is a %T, which isXnetNoBody does not recognise: update it", xnetVersion(), r.resp.Body)
				}
			})
		})
	}
}

// TestCanaryXnetCountError: the names x/net gives CountError for the connection errors
// and the lost ping that countError reads.
func TestCanaryXnetCountError(t *testing.T) {
	cases := []struct {
		name    string
		tr      func(count func(string)) *http2.Transport
		provoke func(p *canaryPeer)
		want    string
	}{
		{
			name: "frame too large",
			tr:   func(count func(string)) *http2.Transport { return &http2.Transport{CountError: count} },
			provoke: func(p *canaryPeer) {
				// A frame header announcing 2 MiB, over the client's 1 MiB
				// SETTINGS_MAX_FRAME_SIZE (x/net's default, and net/http's).
				p.write(func(*http2.Framer) error {
					_, err := p.out.Write([]byte{0x20, 0, 0, byte(http2.FrameData), 0, 0, 0, 0, 1})
					return err
				})
			},
			want: "read_frame_too_large",
		},
		{
			name: "connection error",
			tr:   func(count func(string)) *http2.Transport { return &http2.Transport{CountError: count} },
			provoke: func(p *canaryPeer) {
				// A WINDOW_UPDATE on the connection with an increment of 0.
				p.write(func(fr *http2.Framer) error {
					return fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
				})
			},
			want: "read_frame_conn_error_PROTOCOL_ERROR",
		},
		{
			name: "lost ping",
			tr: func(count func(string)) *http2.Transport {
				return &http2.Transport{CountError: count, ReadIdleTimeout: time.Second, PingTimeout: time.Second}
			},
			provoke: func(p *canaryPeer) {}, // the peer never answers the client's PING
			want:    "conn_close_lost_ping",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				var got []string
				count := func(s string) { mu.Lock(); got = append(got, s); mu.Unlock() }
				cc, p, closes := canaryClientConn(t, tc.tr(count))
				done := roundTripAsync(cc, canaryRequest("GET"))
				p.wait(t, http2.FrameHeaders)
				tc.provoke(p)
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatalf("%s: the request outlived the connection error", xnetVersion())
				}
				synctest.Wait()
				mu.Lock()
				defer mu.Unlock()
				found := false
				for _, s := range got {
					found = found || s == tc.want
				}
				if !found {
					t.Errorf("%s: CountError got %q, want %q among them: update countError", xnetVersion(), got, tc.want)
				}
				if closes.get() == 0 {
					t.Errorf("%s: x/net did not Close its net.Conn after the error: endwell's closedByNet would never learn of it", xnetVersion())
				}
			})
		})
	}
}

// TestCanaryXnetWire: what the wire assumes of x/net's frames: it acknowledges the
// server's first SETTINGS (startH2 waits for that ACK), its Close writes no GOAWAY (an
// abort says nothing) and closes its net.Conn (closedByNet), and its Shutdown is never
// needed for endwell's GOAWAY (written by the wire itself).
func TestCanaryXnetWire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc, p, closes := canaryClientConn(t, &http2.Transport{})
		ack := p.wait(t, http2.FrameSettings)
		for ack.Flags&http2.FlagSettingsAck == 0 {
			ack = p.wait(t, http2.FrameSettings)
		}
		cc.Close()
		synctest.Wait()
		if closes.get() == 0 {
			t.Errorf("%s: ClientConn.Close did not close its net.Conn", xnetVersion())
		}
		for {
			select {
			case f := <-p.frames:
				if f.Type == http2.FrameGoAway {
					t.Errorf("%s: ClientConn.Close wrote %v: an abort would say goodbye", xnetVersion(), f)
				}
				continue
			default:
			}
			break
		}
	})
}

// TestCanaryXnetConnectionError: connectionErrorCode recognises the error x/net fails a
// stream with when its read loop ends on a connection error: x/net's ConnectionError built
// by Go 1.26, net/http's own (unexported) built by Go 1.27. Both the frame parser's errors
// (CountError names them) and the frame processing's (it does not: a flow-control
// violation) are tried.
func TestCanaryXnetConnectionError(t *testing.T) {
	cases := []struct {
		name    string
		provoke func(fr *http2.Framer) error
		want    http2.ErrCode
	}{
		{"frame parser", func(fr *http2.Framer) error {
			return fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
		}, http2.ErrCodeProtocol},
		{"frame processing", func(fr *http2.Framer) error {
			return fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cc, p, _ := canaryClientConn(t, &http2.Transport{})
				done := roundTripAsync(cc, canaryRequest("GET"))
				p.wait(t, http2.FrameHeaders)
				p.write(tc.provoke)
				err := <-done
				if code, ok := connectionErrorCode(err); !ok || code != tc.want {
					t.Fatalf("%s: the stream failed with %q (%T): connectionErrorCode says %v %v, want %v true: update it",
						xnetVersion(), err, err, code, ok, tc.want)
				}
			})
		})
	}
}

// TestCanaryXnetGoAwayErrorFirstStream: x/net fails the first stream of a connection above
// the Last-Stream-ID of a GOAWAY with an error code with an error of its own, which
// h2NotSent recognises by its text.
func TestCanaryXnetGoAwayErrorFirstStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc, p, _ := canaryClientConn(t, &http2.Transport{})
		done := roundTripAsync(cc, canaryRequest("POST"))
		p.wait(t, http2.FrameHeaders)
		p.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeProtocol, nil) })
		if err := <-done; err == nil || !h2NotSent(err) {
			t.Fatalf("%s: the first stream, above a GOAWAY(0, PROTOCOL_ERROR), failed with %q (%T), which h2NotSent does not recognise: update it",
				xnetVersion(), err, err)
		}
	})
}

// TestCanaryXnetStreamErrorAs: x/net's error for a stream the server reset is found by
// errors.As as x/net's http2.StreamError on both engines (built by Go 1.27, net/http's own
// StreamError converts itself).
func TestCanaryXnetStreamErrorAs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cc, p, _ := canaryClientConn(t, &http2.Transport{})
		done := roundTripAsync(cc, canaryRequest("GET"))
		f := p.wait(t, http2.FrameHeaders)
		p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(f.StreamID, http2.ErrCodeInternal) })
		err := <-done
		var se http2.StreamError
		if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal {
			t.Fatalf("%s: a reset stream failed with %q (%T), which errors.As does not find as an http2.StreamError: update streamErr",
				xnetVersion(), err, err)
		}
	})
}

// TestH2FlowAccount: the wire's account of the flow-control windows finds DATA beyond a
// stream's window or the connection's, and a WINDOW_UPDATE past 2^31-1, and nothing in a
// conversation that keeps to them.
func TestH2FlowAccount(t *testing.T) {
	const win = 1 << 16
	open := func() *flowAccount {
		f := &flowAccount{}
		f.init()
		f.sentSetting(settingInitialWindowSize, win)
		f.sent(frameWindowUpdate, 0, 4, []byte{0, 0x10, 0, 0}) // the connection: 65535 + 1 MiB
		f.sent(frameHeaders, 1, 10, nil)
		return f
	}
	data := func(f *flowAccount, stream uint32, n int, end bool) {
		var flags byte
		if end {
			flags = flagEndStream
		}
		f.received(frameData, flags, stream, n, nil)
	}
	t.Run("within the windows", func(t *testing.T) {
		f := open()
		data(f, 1, win, false)
		f.sent(frameWindowUpdate, 1, 4, []byte{0, 0, 0x10, 0}) // 4 KiB more
		data(f, 1, 4<<10, true)
		data(f, 7, 1000, false) // a stream we reset: the connection's window only
		if f.broken() {
			t.Error("broken: got true, want false")
		}
	})
	t.Run("beyond the stream's window", func(t *testing.T) {
		f := open()
		data(f, 1, win+1, false)
		if !f.broken() {
			t.Error("broken: got false, want true")
		}
	})
	t.Run("beyond the connection's window", func(t *testing.T) {
		f := open()
		for s := uint32(3); s < 3+2*20; s += 2 {
			f.sent(frameHeaders, s, 10, nil)
			data(f, s, win, true)
		}
		if !f.broken() {
			t.Error("broken: got false, want true")
		}
	})
	t.Run("WINDOW_UPDATE past 2^31-1", func(t *testing.T) {
		f := open()
		f.received(frameWindowUpdate, 0, 0, 4, []byte{0x7f, 0xff, 0xff, 0xff})
		if !f.broken() {
			t.Error("broken: got false, want true")
		}
	})
}

// h2Frame is what the canary peer logs of a frame it received.
type h2Frame struct {
	Type     http2.FrameType
	StreamID uint32
	Flags    http2.Flags
	// LastStreamID and Code are a GOAWAY's; Code is also an RST_STREAM's.
	LastStreamID uint32
	Code         http2.ErrCode
}
