package witness

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clientRaw wraps the client's TCP connection under TLS and records
// whether a read returned io.EOF, to tell the server's close_notify from
// its bare FIN.
type clientRaw struct {
	*net.TCPConn
	eof atomic.Bool
}

func (r *clientRaw) Read(p []byte) (int, error) {
	n, err := r.TCPConn.Read(p)
	if err == io.EOF {
		r.eof.Store(true)
	}
	return n, err
}

// client is a hand-written HTTP/1.1 client on one connection.
type client struct {
	t   *testing.T
	s   *Server
	raw *clientRaw
	tls *tls.Conn // nil for plain TCP
	rw  io.ReadWriter
	br  *bufio.Reader
}

// startServer starts a witness with opts and closes it at the end of the test.
func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s := New(opts)
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial connects to s, with a TLS handshake if s serves TLS.
func dial(t *testing.T, s *Server) *client {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, s: s, raw: &clientRaw{TCPConn: nc.(*net.TCPConn)}}
	c.rw = c.raw
	if s.opts.TLS {
		cfg := s.ClientTLSConfig()
		cfg.NextProtos = []string{"http/1.1"}
		c.tls = tls.Client(c.raw, cfg)
		if err := c.tls.Handshake(); err != nil {
			t.Fatalf("Handshake: %v", err)
		}
		c.rw = c.tls
	}
	c.br = bufio.NewReader(c.rw)
	return c
}

// do sends a request with extra header lines and reads the response.
func (c *client) do(method, path string, header ...string) (*http.Response, string) {
	c.t.Helper()
	req := method + " " + path + " HTTP/1.1\r\nHost: witness\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c.rw, req+"\r\n"); err != nil {
		c.t.Fatalf("write request: %v", err)
	}
	return c.readResponse(method)
}

// readResponse reads one response and its body.
func (c *client) readResponse(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("ReadResponse: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

// readEnd reads until an error and returns it, with the bytes read.
func (c *client) readEnd() (string, error) {
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.br.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			return string(b), err
		}
	}
}

// waitOne waits for the first connection to end and returns its report.
func waitOne(t *testing.T, s *Server) ConnReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reps, err := s.WaitConns(ctx, 1)
	if err != nil {
		t.Fatalf("WaitConns: %v (reports %v)", err, s.Reports())
	}
	return reps[0]
}

// want is the part of a report a test checks.
type want struct {
	closeNotify       bool
	clientEnd         ClientEnd
	serverEnd         ServerEnd
	serverCloseNotify bool
	serverClosedFirst bool
	ending            string
}

func checkReport(t *testing.T, r ConnReport, w want) {
	t.Helper()
	t.Logf("report: %v", r)
	if got := r.CloseNotifyReceived; got != w.closeNotify {
		t.Errorf("CloseNotifyReceived: got %v, want %v", got, w.closeNotify)
	}
	if got := r.ClientEnd; got != w.clientEnd {
		t.Errorf("ClientEnd: got %v, want %v", got, w.clientEnd)
	}
	if got := r.ServerEnd; got != w.serverEnd {
		t.Errorf("ServerEnd: got %v, want %v", got, w.serverEnd)
	}
	if got := r.ServerSentCloseNotify; got != w.serverCloseNotify {
		t.Errorf("ServerSentCloseNotify: got %v, want %v", got, w.serverCloseNotify)
	}
	if got := r.ServerClosedFirst; got != w.serverClosedFirst {
		t.Errorf("ServerClosedFirst: got %v, want %v", got, w.serverClosedFirst)
	}
	if w.ending != "" {
		if got := r.ClientEnding(); got != w.ending {
			t.Errorf("ClientEnding: got %q, want %q", got, w.ending)
		}
	}
	if !r.Done() {
		t.Errorf("Done: got false, want true")
	}
}

func TestClientEndingsTLS(t *testing.T) {
	tests := []struct {
		name  string
		close func(c *client)
		want  want
	}{
		{
			name: "close_notify then FIN",
			close: func(c *client) {
				if err := c.tls.CloseWrite(); err != nil {
					t.Errorf("tls CloseWrite: %v", err)
				}
				if err := c.raw.CloseWrite(); err != nil {
					t.Errorf("tcp CloseWrite: %v", err)
				}
				// The server answers with close_notify: tls sees EOF before TCP does.
				_, err := c.readEnd()
				if err != io.EOF || c.raw.eof.Load() {
					t.Errorf("client read: got %v (raw EOF %v), want io.EOF from close_notify", err, c.raw.eof.Load())
				}
				c.raw.Close()
			},
			want: want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndAfterClient, serverCloseNotify: true, ending: "close_notify+FIN"},
		},
		{
			name:  "close without close_notify",
			close: func(c *client) { c.raw.Close() },
			want:  want{clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "FIN, no close_notify"},
		},
		{
			name: "half-close without close_notify",
			close: func(c *client) {
				c.raw.CloseWrite()
				_, err := c.readEnd()
				if err != io.EOF || !c.raw.eof.Load() {
					t.Errorf("client read: got %v (raw EOF %v), want io.EOF from a bare FIN", err, c.raw.eof.Load())
				}
				c.raw.Close()
			},
			want: want{clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "FIN, no close_notify"},
		},
		{
			name: "RST",
			close: func(c *client) {
				c.raw.SetLinger(0)
				c.raw.Close()
			},
			want: want{clientEnd: EndRST, serverEnd: ServerEndAfterClient, ending: "RST, no close_notify"},
		},
		{
			name: "close_notify then RST",
			close: func(c *client) {
				c.tls.CloseWrite()
				// An RST discards what is still in the send queue: let the
				// close_notify reach the server first.
				waitFor(t, c.s, func(r ConnReport) bool { return r.CloseNotifyReceived })
				c.raw.SetLinger(0)
				c.raw.Close()
			},
			want: want{closeNotify: true, clientEnd: EndRST, serverEnd: ServerEndAfterClient, serverCloseNotify: true, ending: "close_notify+RST"},
		},
	}
	for _, tt := range tests {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(tt.name+"/"+tls.VersionName(v), func(t *testing.T) {
				testClientEndingTLS(t, v, tt.close, tt.want)
			})
		}
	}
}

func testClientEndingTLS(t *testing.T, version uint16, close func(c *client), w want) {
	s := startServer(t, Options{TLS: true, TLSMaxVersion: version})
	c := dial(t, s)
	if got := c.tls.ConnectionState().Version; got != version {
		t.Fatalf("TLS version: got %v, want %v", tls.VersionName(got), tls.VersionName(version))
	}
	resp, body := c.do("GET", "/hello")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("response: got %d %q, want 200 %q", resp.StatusCode, body, "ok\n")
	}
	close(c)
	r := waitOne(t, s)
	if w.clientEnd == EndRST {
		// The RST may beat the server's answer; that's not what this checks.
		w.serverCloseNotify = r.ServerSentCloseNotify
	}
	checkReport(t, r, w)
	if got, want := r.Proto, "http/1.1"; got != want {
		t.Errorf("Proto: got %q, want %q", got, want)
	}
	if got, want := r.RequestLines, []string{"GET /hello"}; !slices.Equal(got, want) {
		t.Errorf("RequestLines: got %v, want %v", got, want)
	}
	if !r.TLS {
		t.Errorf("TLS: got false, want true")
	}
}

func TestHandshakeRefused(t *testing.T) {
	s := startServer(t, Options{TLS: true})
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	// No RootCAs: the client refuses the certificate with an alert.
	tc := tls.Client(nc, &tls.Config{ServerName: serverName})
	if err := tc.Handshake(); err == nil {
		t.Fatalf("Handshake: got nil error, want a certificate error")
	}
	nc.Close()
	r := waitOne(t, s)
	t.Logf("report: %v", r)
	// FIN or RST, depending on whether the client left bytes unread.
	if r.CloseNotifyReceived || r.ClientEnd == EndOpen {
		t.Errorf("client ending: got %q, want FIN or RST without close_notify", r.ClientEnding())
	}
	if got, want := r.ServerEnd, ServerEndAfterClient; got != want {
		t.Errorf("ServerEnd: got %v, want %v", got, want)
	}
	if r.Err == nil {
		t.Errorf("Err: got nil, want the handshake error")
	}
}

func TestClientEndingsPlain(t *testing.T) {
	tests := []struct {
		name  string
		close func(c *client)
		want  want
	}{
		{
			name:  "FIN",
			close: func(c *client) { c.raw.Close() },
			want:  want{clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "FIN"},
		},
		{
			name: "half-close",
			close: func(c *client) {
				c.raw.CloseWrite()
				if _, err := c.readEnd(); err != io.EOF {
					t.Errorf("client read: got %v, want %v", err, io.EOF)
				}
				c.raw.Close()
			},
			want: want{clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "FIN"},
		},
		{
			name: "RST",
			close: func(c *client) {
				c.raw.SetLinger(0)
				c.raw.Close()
			},
			want: want{clientEnd: EndRST, serverEnd: ServerEndAfterClient, ending: "RST"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{})
			c := dial(t, s)
			c.do("GET", "/")
			tt.close(c)
			checkReport(t, waitOne(t, s), tt.want)
		})
	}
}

func TestIdleClose(t *testing.T) {
	const idle = 50 * time.Millisecond
	tests := []struct {
		name    string
		tls     bool
		idle    IdleClose
		check   func(t *testing.T, c *client) // what the client sees, then how it ends
		want    want
		sentFIN bool
		sentRST bool
	}{
		{
			name: "tls close_notify+FIN",
			tls:  true,
			idle: IdleClose{After: idle, Action: CloseGraceful},
			check: func(t *testing.T, c *client) {
				_, err := c.readEnd()
				if err != io.EOF || c.raw.eof.Load() {
					t.Errorf("client read: got %v (raw EOF %v), want io.EOF with raw EOF false", err, c.raw.eof.Load())
				}
				c.tls.CloseWrite()
				c.raw.Close()
			},
			want:    want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndGraceful, serverCloseNotify: true, serverClosedFirst: true, ending: "close_notify+FIN"},
			sentFIN: true,
		},
		{
			name: "tls FIN only",
			tls:  true,
			idle: IdleClose{After: idle, Action: CloseFIN},
			check: func(t *testing.T, c *client) {
				_, err := c.readEnd()
				if err != io.EOF || !c.raw.eof.Load() {
					t.Errorf("client read: got %v (raw EOF %v), want io.EOF with raw EOF true", err, c.raw.eof.Load())
				}
				c.raw.Close()
			},
			want:    want{clientEnd: EndFIN, serverEnd: ServerEndFIN, serverClosedFirst: true, ending: "FIN, no close_notify"},
			sentFIN: true,
		},
		{
			name: "tls RST",
			tls:  true,
			idle: IdleClose{After: idle, Action: CloseRST},
			check: func(t *testing.T, c *client) {
				if _, err := c.readEnd(); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client read: got %v, want %v", err, syscall.ECONNRESET)
				}
			},
			want:    want{clientEnd: EndOpen, serverEnd: ServerEndRST, serverClosedFirst: true, ending: "still open"},
			sentRST: true,
		},
		{
			name: "tls 408 then close",
			tls:  true,
			idle: IdleClose{After: idle, Send: Response408},
			check: func(t *testing.T, c *client) {
				resp, _ := c.readResponse("GET")
				if got, want := resp.StatusCode, http.StatusRequestTimeout; got != want {
					t.Errorf("status: got %v, want %v", got, want)
				}
				if _, err := c.readEnd(); err != io.EOF || c.raw.eof.Load() {
					t.Errorf("client read: got %v (raw EOF %v), want io.EOF from close_notify", err, c.raw.eof.Load())
				}
				c.tls.CloseWrite()
				c.raw.CloseWrite()
			},
			want:    want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndGraceful, serverCloseNotify: true, serverClosedFirst: true},
			sentFIN: true,
		},
		{
			name: "tls garbage then FIN",
			tls:  true,
			idle: IdleClose{After: idle, Send: []byte("garbage\r\n"), Action: CloseFIN},
			check: func(t *testing.T, c *client) {
				got, err := c.readEnd()
				if got != "garbage\r\n" || err != io.EOF {
					t.Errorf("client read: got %q, %v, want %q, %v", got, err, "garbage\r\n", io.EOF)
				}
				c.raw.Close()
			},
			want:    want{clientEnd: EndFIN, serverEnd: ServerEndFIN, serverClosedFirst: true},
			sentFIN: true,
		},
		{
			name: "plain FIN",
			idle: IdleClose{After: idle},
			check: func(t *testing.T, c *client) {
				if _, err := c.readEnd(); err != io.EOF {
					t.Errorf("client read: got %v, want %v", err, io.EOF)
				}
				c.raw.Close()
			},
			want:    want{clientEnd: EndFIN, serverEnd: ServerEndGraceful, serverClosedFirst: true, ending: "FIN"},
			sentFIN: true,
		},
		{
			name: "plain RST",
			idle: IdleClose{After: idle, Action: CloseRST},
			check: func(t *testing.T, c *client) {
				if _, err := c.readEnd(); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client read: got %v, want %v", err, syscall.ECONNRESET)
				}
			},
			want:    want{serverEnd: ServerEndRST, serverClosedFirst: true},
			sentRST: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{TLS: tt.tls, IdleClose: tt.idle})
			c := dial(t, s)
			c.do("GET", "/")
			tt.check(t, c)
			r := waitOne(t, s)
			checkReport(t, r, tt.want)
			if got := r.ServerSentFIN; got != tt.sentFIN {
				t.Errorf("ServerSentFIN: got %v, want %v", got, tt.sentFIN)
			}
			if got := r.ServerSentRST; got != tt.sentRST {
				t.Errorf("ServerSentRST: got %v, want %v", got, tt.sentRST)
			}
		})
	}
}

func TestKeepAlive(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			s := startServer(t, Options{TLS: useTLS, Handler: func(c *Conn, r *http.Request) Action {
				c.Respond(200, nil, fmt.Sprintf("%d %s", c.RequestNumber(), r.URL.Path))
				return Auto
			}})
			c := dial(t, s)
			for i, path := range []string{"/a", "/b", "/c"} {
				method := "GET"
				var hdr []string
				if i == 1 {
					// A body the handler does not read: the server discards it.
					method = "POST"
					io.WriteString(c.rw, "POST /b HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n\r\nhello")
					_, body := c.readResponse(method)
					if got, want := body, "2 /b"; got != want {
						t.Errorf("body: got %q, want %q", got, want)
					}
					continue
				}
				_, body := c.do(method, path, hdr...)
				if got, want := body, fmt.Sprintf("%d %s", i+1, path); got != want {
					t.Errorf("body: got %q, want %q", got, want)
				}
			}
			if useTLS {
				c.tls.CloseWrite()
			}
			c.raw.CloseWrite()
			c.readEnd()
			r := waitOne(t, s)
			if got, want := r.Requests, 3; got != want {
				t.Errorf("Requests: got %v, want %v", got, want)
			}
			if got, want := r.RequestLines, []string{"GET /a", "POST /b", "GET /c"}; !slices.Equal(got, want) {
				t.Errorf("RequestLines: got %v, want %v", got, want)
			}
			checkReport(t, r, want{closeNotify: useTLS, clientEnd: EndFIN, serverEnd: ServerEndAfterClient, serverCloseNotify: useTLS})
			if got := len(s.Reports()); got != 1 {
				t.Errorf("connections: got %v, want %v", got, 1)
			}
		})
	}
}

func TestConnectionClose(t *testing.T) {
	tests := []struct {
		name    string
		handler Handler
		header  []string
	}{
		{
			name: "response says close",
			handler: func(c *Conn, r *http.Request) Action {
				c.Respond(200, http.Header{"Connection": {"close"}}, "bye")
				return Auto
			},
		},
		{
			name:   "request says close",
			header: []string{"Connection: close"},
		},
		{
			name: "handler closes",
			handler: func(c *Conn, r *http.Request) Action {
				c.Respond(200, nil, "bye")
				return CloseGraceful
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{TLS: true, Handler: tt.handler})
			c := dial(t, s)
			c.do("GET", "/", tt.header...)
			if _, err := c.readEnd(); err != io.EOF || c.raw.eof.Load() {
				t.Errorf("client read: got %v (raw EOF %v), want io.EOF from close_notify", err, c.raw.eof.Load())
			}
			c.raw.Close() // no close_notify back
			r := waitOne(t, s)
			checkReport(t, r, want{clientEnd: EndFIN, serverEnd: ServerEndGraceful, serverCloseNotify: true, serverClosedFirst: true, ending: "FIN, no close_notify"})
			if !r.ServerSentFIN {
				t.Errorf("ServerSentFIN: got false, want true")
			}
		})
	}
}

func TestNoRead(t *testing.T) {
	for _, after := range []int{0, 1} {
		t.Run(fmt.Sprintf("after %d requests", after), func(t *testing.T) {
			s := startServer(t, Options{TLS: true, NoRead: true, NoReadAfter: after})
			c := dial(t, s)
			if after > 0 {
				c.do("GET", "/")
			}
			c.raw.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			big := make([]byte, 64<<20)
			n, err := c.rw.Write(big)
			if !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				t.Errorf("write: got %d bytes, %v, want a timeout", n, err)
			}
			s.Close()
			r := waitOne(t, s)
			if got, want := r.ServerEnd, ServerEndShutdown; got != want {
				t.Errorf("ServerEnd: got %v, want %v", got, want)
			}
			if got, want := r.Requests, after; got != want {
				t.Errorf("Requests: got %v, want %v", got, want)
			}
		})
	}
}

func TestHandshakeStall(t *testing.T) {
	s := startServer(t, Options{TLS: true, HandshakeStall: true})
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(200 * time.Millisecond))
	tc := tls.Client(nc, s.ClientTLSConfig())
	if err := tc.Handshake(); !isTimeout(err) {
		t.Errorf("Handshake: got %v, want a timeout", err)
	}
	nc.Close()
	r := waitOne(t, s)
	checkReport(t, r, want{clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "FIN, no close_notify"})
	if r.Proto != "" || r.Requests != 0 {
		t.Errorf("Proto, Requests: got %q, %d, want %q, %d", r.Proto, r.Requests, "", 0)
	}
}

func TestOnCloseNotify(t *testing.T) {
	tests := []struct {
		name   string
		answer CloseNotifyAnswer
		client func(t *testing.T, c *client)
		want   want
		rst    bool
	}{
		{
			name:   "no answer",
			answer: AnswerNone,
			client: func(t *testing.T, c *client) {
				c.tls.CloseWrite()
				c.raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.readEnd(); !isTimeout(err) {
					t.Errorf("client read: got %v, want a timeout", err)
				}
				c.raw.Close()
			},
			want: want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "close_notify+FIN"},
		},
		{
			name:   "RST",
			answer: AnswerRST,
			client: func(t *testing.T, c *client) {
				c.tls.CloseWrite()
				if _, err := c.readEnd(); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client read: got %v, want %v", err, syscall.ECONNRESET)
				}
			},
			want: want{closeNotify: true, serverEnd: ServerEndAfterClient, ending: "close_notify, still open"},
			rst:  true,
		},
		{
			name:   "send data",
			answer: AnswerSendData,
			client: func(t *testing.T, c *client) {
				c.tls.CloseWrite()
				buf := make([]byte, 4096)
				total := 0
				for total < 3000 {
					n, err := c.br.Read(buf)
					total += n
					if err != nil {
						t.Fatalf("client read: got %v after %d bytes, want data", err, total)
					}
				}
				c.raw.CloseWrite()
			},
			want: want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndAfterClient, ending: "close_notify+FIN"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{TLS: true, OnCloseNotify: tt.answer})
			c := dial(t, s)
			c.do("GET", "/")
			tt.client(t, c)
			r := waitOne(t, s)
			checkReport(t, r, tt.want)
			if got := r.ServerSentRST; got != tt.rst {
				t.Errorf("ServerSentRST: got %v, want %v", got, tt.rst)
			}
		})
	}
}

func TestBytesAfterCloseNotify(t *testing.T) {
	s := startServer(t, Options{TLS: true})
	c := dial(t, s)
	c.do("GET", "/")
	c.tls.CloseWrite()
	// Wait until the server has read the close_notify, so that what follows
	// is not buffered by crypto/tls with it.
	waitFor(t, s, func(r ConnReport) bool { return r.CloseNotifyReceived })
	// tls.Conn.CloseWrite leaves a write deadline in the past.
	c.raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.raw, "junk"); err != nil {
		t.Fatalf("write after close_notify: %v", err)
	}
	c.raw.CloseWrite()
	c.readEnd()
	r := waitOne(t, s)
	if got, want := r.BytesAfterCloseNotify, int64(4); got != want {
		t.Errorf("BytesAfterCloseNotify: got %v, want %v", got, want)
	}
	checkReport(t, r, want{closeNotify: true, clientEnd: EndFIN, serverEnd: ServerEndAfterClient, serverCloseNotify: true})
}

func TestResponses(t *testing.T) {
	tests := []struct {
		name    string
		handler Handler
		client  func(t *testing.T, c *client)
	}{
		{
			name: "chunked with trailer",
			handler: func(c *Conn, r *http.Request) Action {
				c.RespondChunked(200, nil, []string{"hel", "", "lo"}, http.Header{"X-Sum": {"42"}})
				return Auto
			},
			client: func(t *testing.T, c *client) {
				resp, body := c.do("GET", "/")
				if body != "hello" || resp.Trailer.Get("X-Sum") != "42" {
					t.Errorf("got %q trailer %v, want %q trailer X-Sum: 42", body, resp.Trailer, "hello")
				}
			},
		},
		{
			name: "truncated body",
			handler: func(c *Conn, r *http.Request) Action {
				c.WriteHead(200, http.Header{"Content-Length": {"10"}})
				c.Write([]byte("1234"))
				return CloseFIN
			},
			client: func(t *testing.T, c *client) {
				io.WriteString(c.rw, "GET / HTTP/1.1\r\nHost: w\r\n\r\n")
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				if string(body) != "1234" || err != io.ErrUnexpectedEOF {
					t.Errorf("got %q, %v, want %q, %v", body, err, "1234", io.ErrUnexpectedEOF)
				}
			},
		},
		{
			name: "100-continue",
			handler: func(c *Conn, r *http.Request) Action {
				b, _ := io.ReadAll(r.Body)
				c.Respond(200, nil, "got "+string(b))
				return Auto
			},
			client: func(t *testing.T, c *client) {
				io.WriteString(c.rw, "PUT / HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
				line, _ := c.br.ReadString('\n')
				if got, want := line, "HTTP/1.1 100 Continue\r\n"; got != want {
					t.Fatalf("got %q, want %q", got, want)
				}
				c.br.ReadString('\n')
				io.WriteString(c.rw, "hi")
				if _, body := c.readResponse("PUT"); body != "got hi" {
					t.Errorf("body: got %q, want %q", body, "got hi")
				}
			},
		},
		{
			name: "early hints and slow drip",
			handler: func(c *Conn, r *http.Request) Action {
				c.Informational(103, http.Header{"Link": {"</a>"}})
				c.WriteHead(200, http.Header{"Content-Length": {"6"}})
				c.Drip([]byte("abcdef"), 2, time.Millisecond)
				return Auto
			},
			client: func(t *testing.T, c *client) {
				resp, _ := c.do("GET", "/")
				if got, want := resp.StatusCode, 103; got != want {
					t.Errorf("first response: got %v, want %v", got, want)
				}
				resp, body := c.readResponse("GET")
				if resp.StatusCode != 200 || body != "abcdef" {
					t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "abcdef")
				}
			},
		},
		{
			name: "malformed response",
			handler: func(c *Conn, r *http.Request) Action {
				c.Write([]byte("HTTP/1.1 abc\r\n\r\n"))
				return CloseRST
			},
			client: func(t *testing.T, c *client) {
				io.WriteString(c.rw, "GET / HTTP/1.1\r\nHost: w\r\n\r\n")
				if _, err := http.ReadResponse(c.br, nil); err == nil {
					t.Errorf("ReadResponse: got nil error, want one")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{Handler: tt.handler})
			c := dial(t, s)
			tt.client(t, c)
			c.raw.Close()
			if r := waitOne(t, s); r.Requests != 1 {
				t.Errorf("Requests: got %v, want %v", r.Requests, 1)
			}
		})
	}
}

func TestOnConnEndAndReports(t *testing.T) {
	var mu sync.Mutex
	var ended []ConnReport
	s := startServer(t, Options{TLS: true, OnConnEnd: func(r ConnReport) {
		mu.Lock()
		ended = append(ended, r)
		mu.Unlock()
	}})
	for range 2 {
		c := dial(t, s)
		c.do("GET", "/")
		c.tls.CloseWrite()
		c.raw.CloseWrite()
		c.readEnd()
		c.raw.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reps, err := s.WaitConns(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if !strings.Contains(r.String(), "client close_notify+FIN; server close_notify+FIN (after client)") {
			t.Errorf("String: got %q, want it to say close_notify+FIN both ways", r)
		}
	}
	if got := len(s.Reports()); got != 2 {
		t.Errorf("Reports: got %v, want %v", got, 2)
	}
	if _, ok := s.Report(3); ok {
		t.Errorf("Report(3): got ok, want none")
	}
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	if got := len(ended); got != 2 {
		t.Errorf("OnConnEnd calls: got %v, want %v", got, 2)
	}
}

func TestCloseEndsLiveConnections(t *testing.T) {
	s := startServer(t, Options{TLS: true, Handler: func(c *Conn, r *http.Request) Action {
		c.Respond(200, nil, "")
		return Hang
	}})
	c := dial(t, s)
	c.do("GET", "/")
	if s.Reports()[0].Done() {
		t.Errorf("Done before Close: got true, want false")
	}
	s.Close()
	r := waitOne(t, s)
	checkReport(t, r, want{serverEnd: ServerEndShutdown, serverClosedFirst: true})
}

func TestWaitConnsContext(t *testing.T) {
	s := startServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	reps, err := s.WaitConns(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || len(reps) != 0 {
		t.Errorf("WaitConns: got %v, %v, want no reports, %v", reps, err, context.DeadlineExceeded)
	}
}

// TestNetHTTPClient checks the witness against net/http's HTTP/1 client.
func TestNetHTTPClient(t *testing.T) {
	t.Run("CloseIdleConnections after a complete response", func(t *testing.T) {
		s := startServer(t, Options{TLS: true})
		tr := &http.Transport{TLSClientConfig: s.ClientTLSConfig()}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		// net/http sends close_notify and closes at once: FIN, or RST if
		// the server's answer arrived in between and is left unread.
		r := waitOne(t, s)
		t.Logf("report: %v", r)
		if !r.CloseNotifyReceived || r.ClientEnd == EndOpen {
			t.Errorf("client ending: got %q, want close_notify+FIN or close_notify+RST", r.ClientEnding())
		}
	})
	t.Run("body closed early", func(t *testing.T) {
		// What reaches the wire depends on timing inside net/http and the
		// kernel (close_notify, then RST or FIN; or an RST that discards the
		// unsent close_notify), so this only checks that an end was seen.
		s := startServer(t, Options{TLS: true, Handler: streamHandler})
		tr := &http.Transport{TLSClientConfig: s.ClientTLSConfig()}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Read(make([]byte, 1))
		resp.Body.Close()
		r := waitOne(t, s)
		t.Logf("report: %v", r)
		if r.ClientEnd == EndOpen {
			t.Errorf("ClientEnd: got %v, want FIN or RST", r.ClientEnd)
		}
	})
}

// streamHandler streams 64 MiB, until a write fails.
func streamHandler(c *Conn, r *http.Request) Action {
	const chunk, n = 1 << 20, 64
	c.WriteHead(200, http.Header{"Content-Length": {fmt.Sprint(chunk * n)}})
	buf := make([]byte, chunk)
	for range n {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	return Auto
}

// TestAbortWhileServerWrites checks that the witness sees the client's
// close_notify and RST while a handler is blocked writing to a client that
// stopped reading.
func TestAbortWhileServerWrites(t *testing.T) {
	tests := []struct {
		name        string
		closeNotify bool
		want        want
	}{
		{
			name:        "close_notify then RST",
			closeNotify: true,
			want:        want{closeNotify: true, clientEnd: EndRST, serverEnd: ServerEndAfterClient, ending: "close_notify+RST"},
		},
		{
			name: "RST alone",
			want: want{clientEnd: EndRST, serverEnd: ServerEndAfterClient, ending: "RST, no close_notify"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{TLS: true, Handler: streamHandler})
			c := dial(t, s)
			io.WriteString(c.rw, "GET / HTTP/1.1\r\nHost: w\r\n\r\n")
			resp, err := http.ReadResponse(c.br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 100<<10)); err != nil {
				t.Fatal(err)
			}
			if tt.closeNotify {
				c.tls.CloseWrite()
				// Let the close_notify reach the server before the RST, which
				// would discard it if it were still in the send queue.
				waitFor(t, s, func(r ConnReport) bool { return r.CloseNotifyReceived })
			}
			c.raw.SetLinger(0)
			c.raw.Close()
			r := waitOne(t, s)
			tt.want.serverCloseNotify = r.ServerSentCloseNotify // races with the RST
			checkReport(t, r, tt.want)
		})
	}
}

// waitFor polls connection 1's report until ok returns true.
func waitFor(t *testing.T, s *Server, ok func(ConnReport) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if r, _ := s.Report(1); ok(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met: %v", s.Reports())
		}
		time.Sleep(time.Millisecond)
	}
}
