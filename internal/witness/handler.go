package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Handler answers one request. It writes whatever it likes through c, raw
// bytes or the response helpers, and returns what the server does next.
// The server has read the request head; the body is r.Body. Unless the
// Handler returns a closing Action, the server discards what is left of the
// body before it reads the next request. Handlers that block must return
// once c.Context() is done.
type Handler func(c *Conn, r *http.Request) Action

// ErrClientGone is returned by [Conn.Drip] when the client ends the
// connection (close_notify, FIN or RST) before the drip is over.
var ErrClientGone = errors.New("witness: the client ended the connection")

// Conn is a [Handler]'s handle on the connection for one request. It is
// valid until the Handler returns and must not be used concurrently.
// Writes go through TLS when the server serves TLS.
type Conn struct {
	c   *conn
	req *http.Request
	n   int

	final      bool // a final response, or raw bytes, was written
	continued  bool // 100 Continue was sent
	noContinue bool // no automatic 100 Continue
	bodyRead   bool // the handler read the request body
	closeAfter bool // a response said Connection: close
}

// ID returns the connection's ID, as in [ConnReport.ID].
func (c *Conn) ID() int64 { return c.c.id }

// RequestNumber returns the request's position on its connection, from 1.
func (c *Conn) RequestNumber() int { return c.n }

// Context returns a context that is done when the server tears the
// connection down: [Options.ConnTimeout] or [Server.Close].
func (c *Conn) Context() context.Context { return c.c.ctx }

// ClientDone returns a channel closed once the client has sent
// close_notify, FIN or RST.
func (c *Conn) ClientDone() <-chan struct{} { return c.c.clientDone }

// Write writes p as is: anything at all, including malformed responses.
// For the automatic 100 Continue, raw bytes count as a final response.
func (c *Conn) Write(p []byte) (int, error) {
	c.final = true
	return c.c.w.Write(p)
}

// WriteHead writes a status line and h, and nothing else: the caller sets
// Content-Length or Transfer-Encoding and writes the body with [Conn.Write]
// (for example fewer bytes than declared, to truncate it).
func (c *Conn) WriteHead(status int, h http.Header) error {
	if status >= 200 {
		c.final = true
	}
	c.noteClose(h)
	_, err := c.c.w.Write(formatHead(status, h))
	return err
}

// Respond writes a complete response with body, setting Content-Length
// unless h sets it (a larger value than len(body) declares a truncated
// body). It writes no body for HEAD requests and for 1xx, 204 and 304.
// If h says Connection: close, the Auto action closes gracefully.
func (c *Conn) Respond(status int, h http.Header, body string) error {
	h = h.Clone()
	if h == nil {
		h = make(http.Header)
	}
	noBody := c.req.Method == http.MethodHead || status < 200 || status == http.StatusNoContent || status == http.StatusNotModified
	if h.Get("Content-Length") == "" && !(status < 200 || status == http.StatusNoContent || status == http.StatusNotModified) {
		h.Set("Content-Length", fmt.Sprint(len(body)))
	}
	c.final = true
	c.noteClose(h)
	b := formatHead(status, h)
	if !noBody {
		b = append(b, body...)
	}
	_, err := c.c.w.Write(b)
	return err
}

// RespondChunked writes a complete response with a chunked body made of
// chunks (empty ones are skipped) and, if trailer is not empty, a Trailer
// header and the trailer fields after the last chunk.
func (c *Conn) RespondChunked(status int, h http.Header, chunks []string, trailer http.Header) error {
	h = h.Clone()
	if h == nil {
		h = make(http.Header)
	}
	h.Set("Transfer-Encoding", "chunked")
	if len(trailer) > 0 {
		keys := make([]string, 0, len(trailer))
		for k := range trailer {
			keys = append(keys, http.CanonicalHeaderKey(k))
		}
		slices.Sort(keys)
		h.Set("Trailer", strings.Join(keys, ", "))
	}
	c.final = true
	c.noteClose(h)
	var b bytes.Buffer
	b.Write(formatHead(status, h))
	for _, ch := range chunks {
		if ch == "" {
			continue
		}
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(ch), ch)
	}
	b.WriteString("0\r\n")
	trailer.Write(&b)
	b.WriteString("\r\n")
	_, err := c.c.w.Write(b.Bytes())
	return err
}

// Continue writes "100 Continue".
func (c *Conn) Continue() error {
	c.continued = true
	_, err := c.c.w.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
	return err
}

// Informational writes a 1xx response with header h, such as 103 Early Hints.
func (c *Conn) Informational(status int, h http.Header) error {
	if status == http.StatusContinue {
		c.continued = true
	}
	_, err := c.c.w.Write(formatHead(status, h))
	return err
}

// NoContinue turns off the automatic 100 Continue: by default, when a
// request carries Expect: 100-continue, the server sends 100 Continue the
// first time the Handler reads the body, unless a final response or a 100
// was already written.
func (c *Conn) NoContinue() { c.noContinue = true }

// DiscardBody reads the rest of the request body and returns how many
// bytes it read.
func (c *Conn) DiscardBody() (int64, error) {
	return io.Copy(io.Discard, c.req.Body)
}

// Drip writes p size bytes at a time, waiting every between writes. It
// stops early with [ErrClientGone] when the client ends the connection, or
// with the context's error when the connection is torn down.
func (c *Conn) Drip(p []byte, size int, every time.Duration) error {
	size = max(size, 1)
	c.final = true
	for len(p) > 0 {
		k := min(size, len(p))
		if _, err := c.c.w.Write(p[:k]); err != nil {
			return err
		}
		p = p[k:]
		if len(p) == 0 {
			return nil
		}
		t := time.NewTimer(every)
		select {
		case <-t.C:
		case <-c.c.clientDone:
			t.Stop()
			return ErrClientGone
		case <-c.c.ctx.Done():
			t.Stop()
			return context.Cause(c.c.ctx)
		}
	}
	return nil
}

// noteClose records whether h says Connection: close.
func (c *Conn) noteClose(h http.Header) {
	for _, v := range h.Values("Connection") {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "close") {
				c.closeAfter = true
			}
		}
	}
}

// autoAction resolves Auto.
func (c *Conn) autoAction() Action {
	switch {
	case c.req.Close || c.closeAfter:
		return CloseGraceful
	case expects100(c.req) && c.req.Body != http.NoBody && !c.continued && !c.bodyRead:
		// The client may be waiting for a 100 that never came: it may
		// never send the body, so the connection can't be reused.
		return CloseGraceful
	}
	return KeepAlive
}

// expects100 reports whether r carries Expect: 100-continue.
func expects100(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Expect"), "100-continue")
}

// expectBody sends the automatic 100 Continue on the first read.
type expectBody struct {
	io.ReadCloser
	hc *Conn
}

func (b *expectBody) Read(p []byte) (int, error) {
	hc := b.hc
	if !hc.bodyRead && !hc.continued && !hc.final && !hc.noContinue {
		if err := hc.Continue(); err != nil {
			return 0, err
		}
	}
	hc.bodyRead = true
	return b.ReadCloser.Read(p)
}

// formatHead formats an HTTP/1.1 status line and header block.
func formatHead(status int, h http.Header) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}
