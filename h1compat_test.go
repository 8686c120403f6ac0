package endwell_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// TestManyInformationalResponses: 1xx responses before the final one are skipped however many
// (a server sending 102 Processing through a long operation), bounded only by
// MaxResponseHeaderBytes over them all, as in net/http.
func TestManyInformationalResponses(t *testing.T) {
	checkLeaks(t)
	interim := "HTTP/1.1 102 Processing\r\n\r\n"
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		n := 20
		if r.URL.Path == "/flood" {
			n = 1000
		}
		c.Write([]byte(strings.Repeat(interim, n)))
		c.Respond(http.StatusOK, nil, "done")
		return witness.KeepAlive
	}})
	tr := newTransport(t, &endwell.Transport{MaxResponseHeaderBytes: int64(200 * len(interim))})
	c := &http.Client{Transport: tr}
	if _, body := do(t, c, newRequest(t, nil, "GET", s.URL()+"/", nil)); body != "done" {
		t.Errorf("after 20 102s: got %q, want done", body)
	}
	_, err := c.Get(s.URL() + "/flood")
	var pe *endwell.ProtocolError
	if !errors.As(err, &pe) {
		t.Errorf("after 1000 102s over MaxResponseHeaderBytes: got %v, want a *ProtocolError", err)
	}
}

// TestEmptyBodyOfUnknownLength: a GET (DELETE, OPTIONS, ...) whose body has no known length
// sends no body when it turns out empty, and a chunked one otherwise, as net/http does
// after its probe; a POST's unknown-length body is chunked whatever it holds.
func TestEmptyBodyOfUnknownLength(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		b, _ := io.ReadAll(r.Body)
		c.Respond(http.StatusOK, nil, fmt.Sprintf("te=%v cl=%d body=%q", r.TransferEncoding, r.ContentLength, b))
		return witness.KeepAlive
	}})
	tr := newTransport(t, &endwell.Transport{})
	c := &http.Client{Transport: tr}
	// unknown hides a reader's length from http.NewRequest.
	type unknown struct{ io.Reader }
	cases := []struct {
		name   string
		method string
		body   io.Reader
		want   string
	}{
		{"GET, empty", "GET", unknown{strings.NewReader("")}, `te=[] cl=0 body=""`},
		{"DELETE, empty", "DELETE", unknown{strings.NewReader("")}, `te=[] cl=0 body=""`},
		{"GET, with a body", "GET", unknown{strings.NewReader("abc")}, `te=[chunked] cl=-1 body="abc"`},
		{"GET, slow body", "GET", unknown{&slowReader{delay: 300 * time.Millisecond, data: "late"}}, `te=[chunked] cl=-1 body="late"`},
		{"POST, empty", "POST", unknown{strings.NewReader("")}, `te=[chunked] cl=-1 body=""`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, got := do(t, c, newRequest(t, nil, tc.method, s.URL()+"/", tc.body))
			if got != tc.want {
				t.Errorf("server saw %s, want %s", got, tc.want)
			}
		})
	}
}

// slowReader returns data after delay (its first Read waits), then EOF.
type slowReader struct {
	delay  time.Duration
	data   string
	waited bool
}

func (r *slowReader) Read(p []byte) (int, error) {
	if !r.waited {
		time.Sleep(r.delay)
		r.waited = true
	}
	if r.data == "" {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestDefaultUserAgent: without a User-Agent of the request's, HTTP/1.1 requests carry
// net/http's, as HTTP/2's do; an empty one sends none.
func TestDefaultUserAgent(t *testing.T) {
	checkLeaks(t)
	s := startWitness(t, witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(http.StatusOK, nil, fmt.Sprintf("%q", r.Header["User-Agent"]))
		return witness.KeepAlive
	}})
	c := &http.Client{Transport: newTransport(t, &endwell.Transport{})}
	if _, got := do(t, c, newRequest(t, nil, "GET", s.URL()+"/", nil)); got != `["Go-http-client/1.1"]` {
		t.Errorf("default: got %s, want net/http's", got)
	}
	req := newRequest(t, nil, "GET", s.URL()+"/", nil)
	req.Header["User-Agent"] = []string{""}
	if _, got := do(t, c, req); got != `[]` {
		t.Errorf("empty: got %s, want none", got)
	}
}

// TestGzipReadAfterClose: a transparently decompressed body read after Close fails at
// once, as net/http's, though the decompressor still holds some of it.
func TestGzipReadAfterClose(t *testing.T) {
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(bytes.Repeat([]byte("0123456789"), 100_000))
	zw.Close()
	for _, f := range tortureFlavors[:2] {
		t.Run(f.name, func(t *testing.T) {
			url, tr := f.start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(zbuf.Bytes())
			}))
			for _, rt := range []http.RoundTripper{&http.Transport{TLSClientConfig: tr.TLSClientConfig}, tr} {
				resp, err := (&http.Client{Transport: rt}).Get(url)
				if err != nil {
					t.Fatal(err)
				}
				if !resp.Uncompressed {
					t.Fatalf("%T: not decompressed", rt)
				}
				if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				n, err := resp.Body.Read(make([]byte, 1000))
				if n != 0 || err == nil || err == io.EOF {
					t.Errorf("%T: Read after Close: %d bytes, %v; want 0 and an error", rt, n, err)
				}
				if _, ok := rt.(*endwell.Transport); ok && !errors.Is(err, endwell.ErrBodyClosed) {
					t.Errorf("Read after Close: %v, want ErrBodyClosed", err)
				}
			}
		})
	}
}
