package endwell

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/endwell/endwell/shutdown"
	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hostileNetHTTP runs every case of the matrix through net/http's Transport too, and logs
// what it did beside endwell's result (go test -run TestHostileMatrix -v -hostile.nethttp).
var hostileNetHTTP = flag.Bool("hostile.nethttp", false, "also run the hostile-server matrix through net/http and log its results")

const (
	// hostileBudget is the transports' ShutdownTimeout in the matrix.
	hostileBudget = time.Second
	// hostileSlack is how long past its deadline a request may take to return.
	hostileSlack = time.Second
	// hostileStall is the deadline of the requests that a server leaves hanging.
	hostileStall = 300 * time.Millisecond
)

// hostileEnd is how the client must end the server's connections: after an abort no
// close_notify, after a complete exchange (then CloseIdleConnections) with close_notify.
type hostileEnd int

const (
	endAbort hostileEnd = iota
	endGraceful
)

// hostileCase is one hostile server and what a request to it must come to.
type hostileCase struct {
	name   string
	protos []hostileProto
	s      hsScripts

	// The request: req adjusts it (headers), got1xx adds httptrace's Got1xxResponse hook.
	req    func(*http.Request)
	got1xx bool
	// maxHeaderBytes and headerTimeout configure both transports, endwell's and net/http's.
	maxHeaderBytes   int64
	headerTimeout    time.Duration
	handshakeTimeout time.Duration
	// deadline is the request's; zero means 2 seconds.
	deadline time.Duration
	// run, if set, replaces the plain request: it returns the body read, or the error.
	run func(t *testing.T, rt http.RoundTripper, req *http.Request, srv *hostileServer) (string, error)

	// want says whether the request's error is the one expected; nil wants success with
	// body, read whole.
	want func(error) bool
	body string
	end  hostileEnd
	// h2Lives says that over HTTP/2 only the stream was aborted (RST_STREAM): the
	// connection lives on, and ends gracefully.
	h2Lives bool
	// goAway, if set, is the code of the GOAWAY the server must have received.
	goAway *http2.ErrCode
	// rst, if set, is the code of an RST_STREAM the server must receive (HTTP/2).
	rst *http2.ErrCode
	// reason, if set, is the reason of the first teardown, which must not wait for the
	// budget.
	reason string
	// sameConn says a second request then succeeds on the same connection (HTTP/2).
	sameConn bool
	// maxAlloc, if not zero, bounds the bytes the process allocates during the request.
	maxAlloc uint64
}

func code(c http2.ErrCode) *http2.ErrCode { return &c }

var (
	allProtos = []hostileProto{protoH1, protoH1TLS, protoH2, protoH2C}
	h1Protos  = []hostileProto{protoH1, protoH1TLS}
	h2Protos  = []hostileProto{protoH2, protoH2C}
	tlsProtos = []hostileProto{protoH1TLS, protoH2}
)

// What errors must be.

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

func isH2ConnError(c http2.ErrCode) func(error) bool {
	return func(err error) bool {
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			return false
		}
		got, ok := pe.HTTP2Code()
		return ok && got == c
	}
}

func isStreamError(c http2.ErrCode) func(error) bool {
	return func(err error) bool {
		var se *StreamError
		var xe http2.StreamError
		return errors.As(err, &se) && se.Code == c && errors.As(err, &xe) && xe.Code == c
	}
}

func isDeadline(err error) bool { return errors.Is(err, context.DeadlineExceeded) }

func isNotSent(err error) bool { return NotSent(err) }

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func isUnexpectedEOF(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }

func all(preds ...func(error) bool) func(error) bool {
	return func(err error) bool {
		for _, p := range preds {
			if !p(err) {
				return false
			}
		}
		return true
	}
}

// HTTP/1.1 scripts.

// h1Send writes resp, then waits for the client to go.
func h1Send(resp string) func(c *hsConn, req *http.Request, n int) {
	return func(c *hsConn, req *http.Request, n int) {
		c.writeString(resp)
		c.stall()
	}
}

// h1Flood writes head, then unit again and again until the client goes.
func h1Flood(head, unit string, times int) func(c *hsConn, req *http.Request, n int) {
	chunk := []byte(strings.Repeat(unit, times))
	return func(c *hsConn, req *http.Request, n int) {
		if c.writeString(head) == nil {
			c.flood(chunk)
		}
		c.stall()
	}
}

// HTTP/2 scripts.

// h2Frames runs w on the connection's framer, then waits for the client to go.
func h2Frames(w func(c *hsConn, fr *http2.Framer, id uint32) error) func(c *hsConn, id uint32, n int) {
	return func(c *hsConn, id uint32, n int) {
		c.write(func(fr *http2.Framer) error { return w(c, fr, id) })
		c.stall()
	}
}

// h2FirstThenOK plays first on the server's first request, and answers "ok" to the others.
func h2FirstThenOK(first func(c *hsConn, id uint32)) func(c *hsConn, id uint32, n int) {
	return func(c *hsConn, id uint32, n int) {
		if n > 1 {
			c.respond(id, "ok")
			return
		}
		first(c, id)
	}
}

// hpackField encodes one header field without the encoder's table.
func hpackField(name, value string) []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	e.SetMaxDynamicTableSizeLimit(0)
	e.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: true})
	return b.Bytes()
}

// tlsAlert is a TLS alert record: fatal handshake_failure.
var tlsAlert = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}

// readClientHello reads what the client sent first: its ClientHello.
func readClientHello(c *hsConn) {
	buf := make([]byte, 4096)
	c.raw.SetReadDeadline(time.Now().Add(h2Wait))
	c.raw.Read(buf)
	c.raw.SetReadDeadline(time.Time{})
}

// upgradeTo asks for an upgrade to proto.
func upgradeTo(proto string) func(*http.Request) {
	return func(req *http.Request) {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", proto)
	}
}

func hostileCases() []hostileCase {
	mib := func(n uint64) uint64 { return n << 20 }
	return []hostileCase{
		// HTTP/1.1 framing.
		{
			name: "conflicting Content-Length", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")},
			want: isProtocolError,
		},
		{
			// Transfer-Encoding overrides Content-Length (RFC 9112, section 6.3): the
			// body is the chunked one, never "hel" followed by a smuggled response.
			name: "Content-Length and chunked", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")},
			body: "hello", end: endGraceful,
		},
		{
			name: "bad chunk size", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")},
			want: isProtocolError,
		},
		{
			name: "overflowing chunk size", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n")},
			want: isProtocolError,
		},
		{
			name: "endless chunk extension", protos: h1Protos,
			s:    hsScripts{h1: h1Flood("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=", "a", 32<<10)},
			want: isProtocolError, maxAlloc: mib(32),
		},
		{
			name: "negative Content-Length", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc")},
			want: isProtocolError,
		},
		{
			name: "overflowing Content-Length", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc")},
			want: isProtocolError,
		},
		{
			name: "garbage status line", protos: h1Protos,
			s:    hsScripts{h1: h1Send("\x00\x01\x02 garbage \xff\r\n\r\n")},
			want: isProtocolError,
		},
		{
			name: "body cut by FIN", protos: h1Protos,
			s: hsScripts{h1: func(c *hsConn, req *http.Request, n int) {
				c.writeString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
				c.raw.Conn.(*net.TCPConn).CloseWrite()
				c.stall()
			}},
			want: isUnexpectedEOF,
		},
		{
			name: "reset mid-headers", protos: h1Protos,
			s: hsScripts{h1: func(c *hsConn, req *http.Request, n int) {
				c.writeString("HTTP/1.1 200 OK\r\nContent-Len")
				time.Sleep(20 * time.Millisecond) // the client reads it before the RST
				c.reset()
			}},
			want: isReset,
		},

		// Header bombs.
		{
			name: "headers over MaxResponseHeaderBytes", protos: h1Protos, maxHeaderBytes: 8 << 10,
			s:    hsScripts{h1: h1Send("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("x", 64<<10) + "\r\nContent-Length: 0\r\n\r\n")},
			want: isProtocolError,
		},
		{
			name: "endless stream of headers", protos: h1Protos,
			s:    hsScripts{h1: h1Flood("HTTP/1.1 200 OK\r\n", "X-Many: v\r\n", 4096)},
			want: isProtocolError, maxAlloc: mib(32),
		},
		{
			name: "header line without end", protos: h1Protos,
			s:    hsScripts{h1: h1Flood("HTTP/1.1 200 OK\r\nX-Endless: ", "a", 32<<10)},
			want: isProtocolError, maxAlloc: mib(32),
		},
		{
			name: "status line without end", protos: h1Protos,
			s:    hsScripts{h1: h1Flood("HTTP/1.1 200 ", "a", 32<<10)},
			want: isProtocolError, maxAlloc: mib(32),
		},

		// 1xx floods.
		{
			name: "1xx flood", protos: h1Protos,
			s:    hsScripts{h1: h1Flood("", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 512)},
			want: isProtocolError, maxAlloc: mib(64),
		},
		{
			// Each 1xx that a Got1xxResponse hook sees starts a new count of header
			// bytes, as in net/http: the flood lasts until the request's deadline.
			name: "1xx flood, Got1xxResponse hook", protos: h1Protos, got1xx: true, deadline: hostileStall,
			s:    hsScripts{h1: h1Flood("", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 512)},
			want: isDeadline,
		},

		// Upgrade abuse.
		{
			name: "101 to a request that asked for no upgrade", protos: h1Protos,
			s:    hsScripts{h1: h1Send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")},
			want: isProtocolError, reason: reasonProtocolError,
		},
		{
			name: "101 to another protocol than offered", protos: h1Protos, req: upgradeTo("websocket"),
			s:    hsScripts{h1: h1Send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")},
			want: isProtocolError,
		},
		{
			name: "101 without Upgrade", protos: h1Protos, req: upgradeTo("websocket"),
			s:    hsScripts{h1: h1Send("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n")},
			want: isProtocolError,
		},
		{
			name: "101, then Close while a Read is blocked", protos: h1Protos, req: upgradeTo("x-test"),
			s:   hsScripts{h1: h1Send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-test\r\nConnection: Upgrade\r\n\r\n")},
			run: runCloseBlockedSwitch, body: "read unblocked by Close", end: endGraceful, reason: reasonServerClose,
		},

		// Stalls.
		{
			name: "no response", protos: allProtos, deadline: hostileStall,
			s: hsScripts{
				h1: func(c *hsConn, req *http.Request, n int) { c.stall() },
				h2: func(c *hsConn, id uint32, n int) { c.stall() },
			},
			want: isDeadline, rst: code(http2.ErrCodeCancel), h2Lives: true,
		},
		{
			name: "no response, ResponseHeaderTimeout", protos: allProtos, headerTimeout: hostileStall,
			s: hsScripts{
				h1: func(c *hsConn, req *http.Request, n int) { c.stall() },
				h2: func(c *hsConn, id uint32, n int) { c.stall() },
			},
			want: all(isDeadline, func(err error) bool { return isTimeout(err) }), rst: code(http2.ErrCodeCancel), h2Lives: true,
		},
		{
			name: "headers then silence", protos: allProtos, deadline: hostileStall,
			s: hsScripts{
				h1: h1Send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
				h2: func(c *hsConn, id uint32, n int) {
					c.headers(id, false, "200")
					c.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, []byte("abc")) })
					c.stall()
				},
			},
			want: isDeadline, rst: code(http2.ErrCodeCancel), h2Lives: true,
		},
		{
			name: "body trickle", protos: allProtos, deadline: hostileStall,
			s: hsScripts{
				h1: func(c *hsConn, req *http.Request, n int) {
					c.writeString("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
					c.drip(make([]byte, 100000), 10*time.Millisecond)
					c.stall()
				},
				h2: func(c *hsConn, id uint32, n int) {
					c.headers(id, false, "200")
					for {
						if c.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, []byte("x")) }) != nil {
							break
						}
						select {
						case <-c.gone:
							return
						case <-time.After(10 * time.Millisecond):
						}
					}
					c.stall()
				},
			},
			want: isDeadline, rst: code(http2.ErrCodeCancel), h2Lives: true,
		},

		// TLS stalls and garbage.
		{
			name: "TLS: handshake stall", protos: tlsProtos, deadline: hostileStall,
			s:    hsScripts{raw: func(c *hsConn) {}},
			want: isDeadline,
		},
		{
			name: "TLS: handshake stall past TLSHandshakeTimeout", protos: tlsProtos, handshakeTimeout: hostileStall,
			s:    hsScripts{raw: func(c *hsConn) {}},
			want: all(isNotSent, func(err error) bool { return isTimeout(err) }),
		},
		{
			// The handshake completes; the server acknowledges the client's SETTINGS, but
			// never sends its own, which must open its side (RFC 9113, section 3.4).
			name: "SETTINGS ack but no SETTINGS", protos: h2Protos, handshakeTimeout: hostileStall,
			s:    hsScripts{h2Start: func(c *hsConn) {}},
			want: isNotSent,
		},
		{
			name: "TLS: garbage instead of ServerHello", protos: tlsProtos,
			s: hsScripts{raw: func(c *hsConn) {
				readClientHello(c)
				c.raw.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
			}},
			// As net/http returns it. NotSent does not know it (a value, which dial.go
			// cannot mark as its *net.OpError): see the report of issue 19.
			want: func(err error) bool { var rhe tls.RecordHeaderError; return errors.As(err, &rhe) },
		},
		{
			name: "TLS: alert instead of ServerHello", protos: tlsProtos,
			s: hsScripts{raw: func(c *hsConn) {
				readClientHello(c)
				c.raw.Write(tlsAlert)
			}},
			want: all(isNotSent, func(err error) bool { return strings.Contains(err.Error(), "handshake failure") }),
		},
		{
			name: "TLS: bad record after the handshake", protos: tlsProtos,
			s: hsScripts{raw: func(c *hsConn) {
				tc := tls.Server(c.raw, c.s.cfg)
				tc.SetDeadline(time.Now().Add(h2Wait))
				if tc.Handshake() != nil {
					return
				}
				tc.SetDeadline(time.Time{})
				c.tc, c.nc = tc, tc
				buf := make([]byte, 4096)
				tc.Read(buf) // the request, or HTTP/2's preface
				// An application-data record that fails authentication.
				c.raw.Write(append([]byte{0x17, 0x03, 0x03, 0x00, 0x20}, make([]byte, 32)...))
			}},
			want: func(err error) bool { return strings.Contains(err.Error(), "bad record MAC") },
		},

		// HTTP/2 floods.
		{
			name: "SETTINGS flood", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				for range 10000 {
					if c.write(func(fr *http2.Framer) error {
						return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
					}) != nil {
						return
					}
				}
				c.respond(id, "ok")
			}},
			body: "ok", end: endGraceful,
		},
		{
			name: "PING flood", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				for range 10000 {
					if c.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) }) != nil {
						return
					}
				}
				c.respond(id, "ok")
			}},
			body: "ok", end: endGraceful,
		},
		{
			name: "empty DATA flood", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				c.headers(id, false, "200")
				for range 10000 {
					if c.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, nil) }) != nil {
						return
					}
				}
				c.write(func(fr *http2.Framer) error { return fr.WriteData(id, true, []byte("ok")) })
			}},
			body: "ok", end: endGraceful,
		},
		{
			name: "CONTINUATION flood", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				field := hpackField("x-flood", strings.Repeat("a", 8<<10))
				err := c.write(func(fr *http2.Framer) error {
					return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.headerBlockLocked("200")})
				})
				for err == nil {
					select {
					case <-c.gone:
						return
					default:
					}
					err = c.write(func(fr *http2.Framer) error { return fr.WriteContinuation(id, false, field) })
				}
				c.stall()
			}},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol), maxAlloc: mib(32),
		},
		{
			// x/net's HPACK decoder refuses a string longer than the header list may be.
			name: "HEADERS over MaxResponseHeaderBytes", protos: h2Protos, maxHeaderBytes: 8 << 10,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				c.headers(id, true, "200", "x-big", strings.Repeat("b", 12<<10))
				c.stall()
			}},
			want: isH2ConnError(http2.ErrCodeCompression), goAway: code(http2.ErrCodeCompression),
		},
		{
			// A stream error: the connection lives on.
			name: "many HEADERS fields over MaxResponseHeaderBytes", protos: h2Protos, maxHeaderBytes: 8 << 10,
			s: hsScripts{h2: h2FirstThenOK(func(c *hsConn, id uint32) {
				var fields []string
				for i := range 100 {
					fields = append(fields, fmt.Sprintf("x-many-%d", i), strings.Repeat("v", 100))
				}
				c.headers(id, true, "200", fields...)
			})},
			want: isStreamError(http2.ErrCodeProtocol), sameConn: true, end: endGraceful,
		},

		// HTTP/2 flow control.
		{
			name: "connection window overflow", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteWindowUpdate(0, 1<<31-1)
			})},
			want: isH2ConnError(http2.ErrCodeFlowControl), goAway: code(http2.ErrCodeFlowControl),
		},
		{
			name: "stream window overflow", protos: h2Protos,
			s: hsScripts{h2: h2FirstThenOK(func(c *hsConn, id uint32) {
				c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 1<<31-1) })
				c.stall()
			})},
			want: isStreamError(http2.ErrCodeFlowControl), rst: code(http2.ErrCodeFlowControl), sameConn: true, end: endGraceful,
		},
		{
			name: "DATA beyond the window", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				defer c.s.notify()
				c.headers(id, false, "200")
				chunk := make([]byte, 16<<10)
				for range 4096 { // 64 MiB: beyond any window a client gives
					if c.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, chunk) }) != nil {
						return
					}
				}
			}},
			run:  runReadAfterNotice,
			want: isH2ConnError(http2.ErrCodeFlowControl), goAway: code(http2.ErrCodeFlowControl),
		},
		{
			name: "SETTINGS with a window too large", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
			})},
			want: isH2ConnError(http2.ErrCodeFlowControl), goAway: code(http2.ErrCodeFlowControl),
		},

		// HTTP/2 frames where they may not be.
		{
			name: "DATA on stream 0", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteData(0, false, []byte("x"))
			})},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol), reason: reasonProtocolError,
		},
		{
			name: "HEADERS on stream 0", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 0, BlockFragment: c.headerBlockLocked("200"), EndHeaders: true})
			})},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol),
		},
		{
			name: "DATA on a stream never opened", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteData(id+98, false, []byte("x"))
			})},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol),
		},
		{
			name: "PUSH_PROMISE to a client that refused push", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WritePushPromise(http2.PushPromiseParam{
					StreamID: id, PromiseID: 2, BlockFragment: c.headerBlockLocked("200"), EndHeaders: true,
				})
			})},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol),
		},
		{
			name: "unexpected SETTINGS ack", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteSettingsAck()
			})},
			want: isH2ConnError(http2.ErrCodeProtocol), goAway: code(http2.ErrCodeProtocol),
		},
		{
			name: "frame over MAX_FRAME_SIZE", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				_, err := c.nc.Write([]byte{0x20, 0, 0, 0x0, 0, 0, 0, 0, byte(id)}) // DATA, 2 MiB
				return err
			})},
			want: isH2ConnError(http2.ErrCodeFrameSize), goAway: code(http2.ErrCodeFrameSize),
		},
		{
			name: "HPACK garbage", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
			})},
			want: isH2ConnError(http2.ErrCodeCompression), goAway: code(http2.ErrCodeCompression),
		},
		{
			name: "garbage instead of SETTINGS", protos: h2Protos,
			s: hsScripts{h2Start: func(c *hsConn) {
				c.writeString("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			}},
			want: isNotSent,
		},

		// HTTP/2 resets and goodbyes.
		{
			name: "RST_STREAM(INTERNAL_ERROR)", protos: h2Protos,
			s: hsScripts{h2: h2FirstThenOK(func(c *hsConn, id uint32) {
				c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeInternal) })
			})},
			want: isStreamError(http2.ErrCodeInternal), sameConn: true, end: endGraceful,
		},
		{
			name: "RST_STREAM(INTERNAL_ERROR) mid-body", protos: h2Protos,
			s: hsScripts{h2: h2FirstThenOK(func(c *hsConn, id uint32) {
				c.headers(id, false, "200")
				c.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, []byte("abc")) })
				c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeInternal) })
			})},
			want: isStreamError(http2.ErrCodeInternal), sameConn: true, end: endGraceful,
		},
		{
			// Refused, so not processed: sent again and again, backing off (1 s, 2 s...),
			// as net/http's HTTP/2, until the request's deadline.
			name: "REFUSED_STREAM always", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
			}},
			want: isDeadline, end: endGraceful,
		},
		{
			// Refused, so not processed: sent again, on the same connection.
			name: "REFUSED_STREAM once", protos: h2Protos,
			s: hsScripts{h2: h2FirstThenOK(func(c *hsConn, id uint32) {
				c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
			})},
			body: "ok", end: endGraceful,
		},
		{
			// The stream is above the GOAWAY's Last-Stream-ID: not processed.
			name: "GOAWAY(0, PROTOCOL_ERROR) after the request", protos: h2Protos,
			s: hsScripts{h2: h2Frames(func(c *hsConn, fr *http2.Framer, id uint32) error {
				return fr.WriteGoAway(0, http2.ErrCodeProtocol, []byte("bye"))
			})},
			want: all(isNotSent, isProtocolError),
		},
		{
			name: "GOAWAY(ENHANCE_YOUR_CALM), then close", protos: h2Protos,
			s: hsScripts{h2: func(c *hsConn, id uint32, n int) {
				c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(id, http2.ErrCodeEnhanceYourCalm, nil) })
				time.Sleep(20 * time.Millisecond)
				c.raw.Conn.(*net.TCPConn).CloseWrite()
				c.stall()
			}},
			want: isH2ConnError(http2.ErrCodeEnhanceYourCalm),
		},
	}
}

// runCloseBlockedSwitch reads a switched-protocol connection in one goroutine and closes
// it from another while the Read is blocked: the Read returns at once, and the teardown
// takes none of its budget waiting for the Read.
func runCloseBlockedSwitch(t *testing.T, rt http.RoundTripper, req *http.Request, srv *hostileServer) (string, error) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		return "", fmt.Errorf("got %s, want 101", resp.Status)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return "", fmt.Errorf("body %T is no io.ReadWriteCloser", resp.Body)
	}
	if _, err := rwc.Write([]byte("hello")); err != nil {
		rwc.Close()
		return "", fmt.Errorf("write: %w", err)
	}
	read := make(chan error, 1)
	// The blocked Read: the server never writes.
	go func() {
		_, err := rwc.Read(make([]byte, 10))
		read <- err
	}()
	time.Sleep(50 * time.Millisecond) // the Read blocks in the socket
	start := time.Now()
	rwc.Close()
	select {
	case err := <-read:
		if took := time.Since(start); took > 200*time.Millisecond {
			return "", fmt.Errorf("the blocked Read returned %v after Close", took)
		}
		if _, ok := rt.(*Transport); ok && !errors.Is(err, ErrBodyClosed) {
			return "", fmt.Errorf("the blocked Read: got %v, want ErrBodyClosed", err)
		}
	case <-time.After(2 * time.Second):
		return "", errors.New("the blocked Read did not return within 2s of Close")
	}
	return "read unblocked by Close", nil
}

// runReadAfterNotice makes the request, then waits for the server's notice before it
// reads the body: the server's writes are over then, never paced by the client's reads.
func runReadAfterNotice(t *testing.T, rt http.RoundTripper, req *http.Request, srv *hostileServer) (string, error) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	select {
	case <-srv.noticed:
	case <-req.Context().Done():
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// hostileResult is what a request to a hostile server came to.
type hostileResult struct {
	body    string
	err     error
	elapsed time.Duration
	alloc   uint64
	hung    bool // the body ignored the deadline: closed by the watchdog
}

// hostileRequest runs c's request over rt.
func hostileRequest(t *testing.T, c *hostileCase, rt http.RoundTripper, srv *hostileServer) hostileResult {
	deadline := c.deadline
	if deadline == 0 {
		deadline = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.url("/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.req != nil {
		c.req(req)
	}
	if c.got1xx {
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			Got1xxResponse: func(code int, header textproto.MIMEHeader) error { return nil },
		}))
	}
	var r hostileResult
	var before, after runtime.MemStats
	if c.maxAlloc > 0 {
		runtime.ReadMemStats(&before)
	}
	start := time.Now()
	done := make(chan struct{})
	// The request: a RoundTrip that never returns, whatever its context says, is
	// abandoned past the deadline (and left running), and the result says so.
	go func() {
		defer close(done)
		r.body, r.hung, r.err = hostileExchange(t, c, rt, req, srv, deadline)
	}()
	select {
	case <-done:
	case <-time.After(deadline + 2*hostileSlack):
		return hostileResult{err: errors.New("the request never returned, whatever its context said"), hung: true, elapsed: time.Since(start)}
	}
	r.elapsed = time.Since(start)
	if c.maxAlloc > 0 {
		runtime.ReadMemStats(&after)
		r.alloc = after.TotalAlloc - before.TotalAlloc
	}
	return r
}

// hostileExchange runs the request and reads the body: the case's run, or a plain
// RoundTrip. A body whose reads ignore the request's deadline is closed past it: hung says
// so.
func hostileExchange(t *testing.T, c *hostileCase, rt http.RoundTripper, req *http.Request, srv *hostileServer, deadline time.Duration) (body string, hung bool, err error) {
	if c.run != nil {
		body, err = c.run(t, rt, req, srv)
		return body, false, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", false, err
	}
	var closed atomic.Bool
	// The watchdog: it closes a body still being read past the deadline.
	watchdog := time.AfterFunc(deadline+hostileSlack, func() {
		closed.Store(true)
		resp.Body.Close()
	})
	b, err := io.ReadAll(resp.Body)
	watchdog.Stop()
	resp.Body.Close()
	return string(b), closed.Load(), err
}

// describe says what a result was, for the matrix's log.
func (r hostileResult) describe() string {
	var tags []string
	if r.hung {
		tags = append(tags, "HUNG past the deadline")
	}
	if r.err == nil {
		return strings.Join(append(tags, fmt.Sprintf("ok, body %q", trimTo(r.body, 30))), "; ")
	}
	var pe *ProtocolError
	var se *StreamError
	switch {
	case errors.As(r.err, &se):
		tags = append(tags, "*StreamError "+se.Code.String())
	case errors.As(r.err, &pe):
		if c, ok := pe.HTTP2Code(); ok {
			tags = append(tags, "*ProtocolError "+c.String())
		} else {
			tags = append(tags, "*ProtocolError")
		}
	}
	if NotSent(r.err) {
		tags = append(tags, "NotSent")
	}
	if isDeadline(r.err) {
		tags = append(tags, "DeadlineExceeded")
	}
	tags = append(tags, fmt.Sprintf("%T: %s", r.err, trimTo(r.err.Error(), 110)))
	return strings.Join(tags, "; ")
}

func trimTo(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// TestHostileMatrix: against each scripted hostile server, over each protocol it applies
// to, a request returns by its deadline with the expected typed error (or the correct
// result); memory stays bounded where the server offers without end; after
// CloseIdleConnections, within the budget, the client has ended every connection, no
// goroutine or file descriptor is left, and no close_notify followed an abort (HTTP/2: the
// GOAWAY and RST_STREAM codes are the expected ones). With -hostile.nethttp, each case also
// runs through net/http's Transport, whose results are logged.
func TestHostileMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the matrix takes several seconds")
	}
	// The network poller's descriptors, opened once for the process's life, are not leaks.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	for _, c := range hostileCases() {
		for _, proto := range c.protos {
			t.Run(c.name+"/"+proto.String(), func(t *testing.T) {
				hostileRun(t, &c, proto)
				if *hostileNetHTTP {
					hostileRunNetHTTP(t, &c, proto)
				}
			})
		}
	}
}

func hostileRun(t *testing.T, c *hostileCase, proto hostileProto) {
	srv := startHostileServer(t, proto, c.s)
	ignore := goleak.IgnoreCurrent()
	fds := h2CountFDs()

	tr := &Transport{
		TLSClientConfig:        h2TestCert(t).client,
		ShutdownTimeout:        hostileBudget,
		MaxResponseHeaderBytes: c.maxHeaderBytes,
		ResponseHeaderTimeout:  c.headerTimeout,
		TLSHandshakeTimeout:    c.handshakeTimeout,
	}
	if proto == protoH2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	recs := recordTeardowns(tr)
	defer tr.Close()

	r := hostileRequest(t, c, tr, srv)
	t.Logf("endwell: %s (%v)", r.describe(), r.elapsed.Round(time.Millisecond))
	if *hostileNetHTTP {
		fmt.Fprintf(os.Stderr, "HOSTILE\t%s/%s\tendwell\t%s (%v)\n", c.name, proto, r.describe(), r.elapsed.Round(time.Millisecond))
	}
	deadline := c.deadline
	if deadline == 0 {
		deadline = 2 * time.Second
	}
	if r.elapsed > deadline+hostileSlack || r.hung {
		t.Errorf("returned after %v (hung: %v), want by its deadline (%v)", r.elapsed, r.hung, deadline)
	}
	switch {
	case c.want == nil && r.err != nil:
		t.Errorf("got %v, want body %q", r.err, c.body)
	case c.want == nil && r.body != c.body:
		t.Errorf("body: got %q, want %q", r.body, c.body)
	case c.want != nil && r.err == nil:
		t.Errorf("got body %q, want an error", trimTo(r.body, 60))
	case c.want != nil && !c.want(r.err):
		t.Errorf("got %T %v, want the case's error", r.err, r.err)
	}
	if c.maxAlloc > 0 && r.alloc > c.maxAlloc {
		t.Errorf("allocated %d MiB during the request, want at most %d MiB", r.alloc>>20, c.maxAlloc>>20)
	}
	if c.sameConn {
		before := len(srv.connections())
		if got := h2Get(t, tr, srv.url("/again")); got != "ok" {
			t.Errorf("next request: got %q, want ok", got)
		}
		if after := len(srv.connections()); after != before {
			t.Errorf("next request: server connections %d, then %d; want the same connection", before, after)
		}
	}

	if c.rst != nil && proto.h2() {
		// x/net resets a stream in the background: wait for it before the goodbye,
		// which would stop its writes.
		hostileWaitRST(t, srv, *c.rst)
	}
	if c.reason != "" {
		select {
		case r := <-recs.ch:
			if r.Reason != c.reason {
				t.Errorf("teardown reason: got %s, want %s", r.Reason, c.reason)
			}
			if r.Duration > hostileBudget/2 {
				t.Errorf("teardown took %v: it waited for its budget", r.Duration)
			}
		case <-time.After(hostileBudget):
			t.Errorf("no teardown within %v", hostileBudget)
		}
	}

	tr.CloseIdleConnections()
	if open := srv.waitGone(hostileBudget + hostileSlack); len(open) > 0 {
		t.Errorf("%d connection(s) still open %v after CloseIdleConnections", len(open), hostileBudget+hostileSlack)
	}
	for i, sc := range srv.connections() {
		select {
		case <-sc.gone:
		default:
			continue
		}
		if proto.tls() && sc.tc != nil {
			switch want := c.end == endGraceful || proto.h2() && c.h2Lives; {
			case !want && sc.closeNotify:
				t.Errorf("connection #%d: close_notify after an abort", i)
			case want && !sc.closeNotify:
				t.Errorf("connection #%d: no close_notify after a complete exchange (ended by %v)", i, sc.endErr)
			}
		}
		if proto.h2() && sc.fr != nil {
			hostileCheckFrames(t, c, i, sc)
		}
	}
	hostileDrainRecords(t, c, recs)
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("leaked goroutines after CloseIdleConnections: %v", err)
	}
	if fds >= 0 {
		deadline := time.Now().Add(hostileBudget)
		for h2CountFDs() > fds && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := h2CountFDs(); n > fds {
			t.Errorf("open file descriptors after CloseIdleConnections: got %d, want at most %d", n, fds)
		}
	}
}

// hostileCheckFrames checks the GOAWAY and RST_STREAM frames that server connection i
// received.
func hostileCheckFrames(t *testing.T, c *hostileCase, i int, sc *hsConn) {
	t.Helper()
	goAways := sc.goAwayCodes()
	switch {
	case c.goAway != nil:
		if len(goAways) == 0 || goAways[0] != *c.goAway {
			t.Errorf("connection #%d: GOAWAY codes %v, want %v", i, goAways, *c.goAway)
		}
	case c.end == endGraceful || c.h2Lives:
		if len(goAways) != 1 || goAways[0] != http2.ErrCodeNo {
			t.Errorf("connection #%d: GOAWAY codes %v, want one NO_ERROR", i, goAways)
		}
	}
}

// hostileWaitRST waits for the server's first connection to receive an RST_STREAM, whose
// code must be want.
func hostileWaitRST(t *testing.T, srv *hostileServer, want http2.ErrCode) {
	t.Helper()
	deadline := time.Now().Add(hostileBudget)
	for {
		if conns := srv.connections(); len(conns) > 0 {
			if rsts := conns[0].rstCodes(); len(rsts) > 0 {
				if rsts[0] != want {
					t.Errorf("RST_STREAM codes %v, want %v", rsts, want)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no RST_STREAM within %v, want %v", hostileBudget, want)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// hostileDrainRecords checks the teardown records: an abort says no goodbye.
func hostileDrainRecords(t *testing.T, c *hostileCase, recs *h2Records) {
	t.Helper()
	for {
		select {
		case r := <-recs.ch:
			if r.Mode == shutdown.Abort && (r.CloseNotifySent || r.GoAwaySent && r.Reason != reasonProtocolError) {
				t.Errorf("abort (%s) said goodbye: close_notify %v, GOAWAY %v", r.Reason, r.CloseNotifySent, r.GoAwaySent)
			}
		default:
			return
		}
	}
}

// hostileRunNetHTTP runs the case through net/http's Transport, and logs what it did.
func hostileRunNetHTTP(t *testing.T, c *hostileCase, proto hostileProto) {
	srv := startHostileServer(t, proto, c.s)
	nt := &http.Transport{
		TLSClientConfig:        h2TestCert(t).client.Clone(),
		ForceAttemptHTTP2:      true,
		MaxResponseHeaderBytes: c.maxHeaderBytes,
		ResponseHeaderTimeout:  c.headerTimeout,
		TLSHandshakeTimeout:    c.handshakeTimeout,
	}
	if proto == protoH2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		nt.Protocols = &p
	}
	r := hostileRequest(t, c, nt, srv)
	var notes []string
	closed := make(chan struct{})
	// CloseIdleConnections, abandoned if it blocks.
	go func() {
		nt.CloseIdleConnections()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * hostileSlack):
		notes = append(notes, "CloseIdleConnections BLOCKED")
	}
	srv.waitGone(hostileBudget)
	for i, sc := range srv.connections() {
		select {
		case <-sc.gone:
			if proto.tls() && sc.tc != nil && sc.closeNotify {
				notes = append(notes, fmt.Sprintf("#%d close_notify", i))
			}
			if proto.h2() && sc.fr != nil {
				notes = append(notes, fmt.Sprintf("#%d GOAWAY %v RST %v", i, sc.goAwayCodes(), sc.rstCodes()))
			}
		default:
			notes = append(notes, fmt.Sprintf("#%d still open", i))
		}
	}
	t.Logf("net/http: %s (%v) [%s]", r.describe(), r.elapsed.Round(time.Millisecond), strings.Join(notes, ", "))
	fmt.Fprintf(os.Stderr, "HOSTILE\t%s/%s\tnet/http\t%s (%v)\t%s\n", c.name, proto, r.describe(), r.elapsed.Round(time.Millisecond), strings.Join(notes, ", "))
}

// isTimeout reports whether err is a net.Error that says it timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
