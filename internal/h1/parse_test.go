package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// Responses as servers send them, which the fast path takes.
var realResponses = []string{
	// nginx 1.22, a static file and a "return 200".
	"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n",
	"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 5\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"5f2b-5\"\r\nAccept-Ranges: bytes\r\n\r\nhello",
	"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
	// Apache 2.4.
	"HTTP/1.1 200 OK\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nServer: Apache/2.4.57 (Debian)\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\nETag: \"2d-5f2b\"\r\nAccept-Ranges: bytes\r\nContent-Length: 4\r\nKeep-Alive: timeout=5, max=100\r\nConnection: Keep-Alive\r\nContent-Type: text/html\r\n\r\nabcd",
	"HTTP/1.1 301 Moved Permanently\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nServer: Apache\r\nLocation: https://example.com/\r\nContent-Length: 0\r\nContent-Type: text/html; charset=iso-8859-1\r\n\r\n",
	// Go's net/http server.
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\n\r\nok",
	// Several Set-Cookie and Vary, interleaved; a Pragma: no-cache alone and with
	// Cache-Control; odd case in keys.
	"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nVary: Accept\r\nSet-Cookie: b=2\r\nvary: Origin\r\nSET-COOKIE: c=3\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\ncache-control: private\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 500 Internal Server Error\r\nConnection: Keep-Alive, Close\r\nconnection: foo\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200\r\nX-Empty:\r\nX-Spaces: \t a b \t \r\nX-Obs-Text: caf\xc3\xa9\r\nContent-Length:  007 \r\n\r\n1234567",
}

// parseCases say which responses the fast path takes; every case is also checked against
// http.ReadResponse (checkParse).
var parseCases = []struct {
	name   string
	in     string
	method string // default GET
	fast   bool
}{
	{name: "nginx", in: realResponses[0], fast: true},
	{name: "nginx static", in: realResponses[1], fast: true},
	{name: "nginx close", in: realResponses[2], fast: true},
	{name: "apache", in: realResponses[3], fast: true},
	{name: "apache redirect", in: realResponses[4], fast: true},
	{name: "go", in: realResponses[5], fast: true},
	{name: "repeated keys", in: realResponses[6], fast: true},
	{name: "pragma", in: realResponses[7], fast: true},
	{name: "pragma with cache-control", in: realResponses[8], fast: true},
	{name: "connection close token", in: realResponses[9], fast: true},
	{name: "spaces, empty and obs-text values", in: realResponses[10], fast: true},
	{name: "truncated body", in: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", fast: true},
	{name: "bytes after the body", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", fast: true},
	{name: "status without reason, with space", in: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", fast: true},
	{name: "longest length", in: "HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n", fast: true},
	{name: "POST", in: realResponses[0], method: "POST", fast: true},

	{name: "HEAD", in: realResponses[0], method: "HEAD"},
	{name: "CONNECT", in: realResponses[0], method: "CONNECT"},
	{name: "HTTP/1.0", in: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "HTTP/2.0", in: "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "lower-case version", in: "http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "two spaces before status", in: "HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "four-digit status", in: "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "status 2OO", in: "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "status +20", in: "HTTP/1.1 +20 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "status 000", in: "HTTP/1.1 000 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "status 999", in: "HTTP/1.1 999 OK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "100", in: "HTTP/1.1 100 Continue\r\n\r\n"},
	{name: "103", in: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nContent-Length: 0\r\n\r\n"},
	{name: "101", in: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"},
	{name: "204 with length", in: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"},
	{name: "304 with length", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"},
	{name: "tab after status", in: "HTTP/1.1 200\tOK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "CR in reason", in: "HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok"},
	{name: "bare LF status line", in: "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok"},
	{name: "bare LF field", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok"},
	{name: "bare LF end", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok"},
	{name: "bare LF in value", in: "HTTP/1.1 200 OK\r\nX: a\nb\r\nContent-Length: 2\r\n\r\nok"},
	{name: "CR CR LF", in: "HTTP/1.1 200 OK\r\nX: a\r\r\nContent-Length: 2\r\n\r\nok"},
	{name: "obs-fold", in: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nok"},
	{name: "obs-fold tab", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: a\r\n\tb\r\n\r\nok"},
	{name: "folded first line", in: "HTTP/1.1 200 OK\r\n Content-Length: 2\r\n\r\nok"},
	{name: "space before colon", in: "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
	{name: "no colon", in: "HTTP/1.1 200 OK\r\nnot a header\r\nContent-Length: 2\r\n\r\nok"},
	{name: "empty key", in: "HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 2\r\n\r\nok"},
	{name: "non-token key", in: "HTTP/1.1 200 OK\r\nX(y): x\r\nContent-Length: 2\r\n\r\nok"},
	{name: "UTF-8 key", in: "HTTP/1.1 200 OK\r\nCafé: x\r\nContent-Length: 2\r\n\r\nok"},
	{name: "NUL in value", in: "HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok"},
	{name: "DEL in value", in: "HTTP/1.1 200 OK\r\nX: a\x7fb\r\nContent-Length: 2\r\n\r\nok"},
	{name: "control byte in value", in: "HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 2\r\n\r\nok"},
	{name: "no length", in: "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\nuntil EOF"},
	{name: "no header", in: "HTTP/1.1 200 OK\r\n\r\n"},
	{name: "two equal lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
	{name: "two lengths", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nok!"},
	{name: "length list", in: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
	{name: "negative length", in: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok"},
	{name: "plus length", in: "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"},
	{name: "empty length", in: "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nok"},
	{name: "huge length", in: "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nok"},
	{name: "19-digit length", in: "HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000000\r\n\r\nok"},
	{name: "hex length", in: "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok"},
	{name: "chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
	{name: "chunked and length", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
	{name: "identity", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\ntransfer-encoding: identity\r\n\r\nok"},
	{name: "gzip, chunked", in: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
	{name: "trailer", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTrailer: X\r\n\r\nok"},
	{name: "header cut short", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"},
	{name: "header cut in a line", in: "HTTP/1.1 200 OK\r\nContent-Le"},
	{name: "header cut at CR", in: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r"},
	{name: "empty", in: ""},
	{name: "TLS record", in: "\x16\x03\x01\x00\x05hello"},
}

func TestParseBuffered(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			took := checkParse(t, []byte(tc.in), method, 4096, 0, 1<<20)
			if took != tc.fast {
				t.Errorf("fast path took it: got %v, want %v", took, tc.fast)
			}
		})
	}
}

// TestParseBufferedPartial checks that the fast path takes a response only once its
// whole header is buffered: never from a buffer that holds a part of it.
func TestParseBufferedPartial(t *testing.T) {
	in := []byte(realResponses[1])
	end := bytes.Index(in, []byte("\r\n\r\n")) + 4
	for chunk := 1; chunk <= len(in); chunk++ {
		took := checkParse(t, in, http.MethodGet, 4096, chunk, 1<<20)
		if want := chunk >= end; took != want {
			t.Errorf("%d bytes buffered of a %d-byte header: fast path took it: got %v, want %v", chunk, end, took, want)
		}
	}
}

// TestParseBufferedLimit checks that a header block longer than MaxResponseHeaderBytes
// goes to http.ReadResponse even when it is all buffered.
func TestParseBufferedLimit(t *testing.T) {
	in := []byte(realResponses[0])
	end := int64(bytes.Index(in, []byte("\r\n\r\n")) + 4)
	for _, tc := range []struct {
		name  string
		limit int64
		fast  bool
	}{
		{name: "limit at the header's end", limit: end, fast: true},
		{name: "limit one byte short", limit: end - 1},
		{name: "limit zero", limit: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if took := checkParse(t, in, http.MethodGet, 4096, 0, tc.limit); took != tc.fast {
				t.Errorf("fast path took it: got %v, want %v", took, tc.fast)
			}
		})
	}
}

func TestParseBufferedManyFields(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields int
		fast   bool
	}{
		{name: "at the most", fields: maxFastFields, fast: true},
		{name: "one more", fields: maxFastFields + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n")
			for i := 1; i < tc.fields; i++ {
				b.WriteString("X-A: " + strings.Repeat("v", i) + "\r\n") // one key, many values
			}
			b.WriteString("\r\nx")
			if took := checkParse(t, []byte(b.String()), http.MethodGet, 8192, 0, 1<<20); took != tc.fast {
				t.Errorf("fast path took it: got %v, want %v", took, tc.fast)
			}
		})
	}
}

// TestParseBufferedAllocs counts the fast path's allocations for nginx's response: the
// header block's string, the map and its group (the values fit in parsed's array).
func TestParseBufferedAllocs(t *testing.T) {
	in := []byte(realResponses[1]) // with an ETag, a key not in canonical form
	var src bytes.Reader
	br := bufio.NewReaderSize(&src, 4096)
	req, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	var dst parsed
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(in)
		br.Reset(&src)
		br.Peek(1)
		if !parseBuffered(br, req, 1<<20, &dst) {
			t.Fatal("fast path did not take nginx's response")
		}
	})
	if allocs > 3 {
		t.Errorf("allocations: got %v, want at most 3", allocs)
	}
}

// FuzzParseResponse compares readResponse's fast path with http.ReadResponse on the same
// bytes: a response the fast path takes, http.ReadResponse takes too, and reads the same
// way (checkParse). Each input is tried as it is, and as header lines between a status
// line and a Content-Length, so that most inputs reach the fast path's field parsing.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("X-A: 1\r\nx-a:2\r\nConnection: close\r\nPragma: no-cache"), false, uint16(0), uint16(4096))
	f.Add([]byte("ETag: \"x\"\r\nWWW-Authenticate: Basic\r\nx-amz-id-2: abc\r\nSet-Cookie: a\r\nset-cookie: b"), false, uint16(0), uint16(4096))
	for _, s := range realResponses {
		f.Add([]byte(s), false, uint16(0), uint16(4096))
	}
	for _, tc := range parseCases {
		f.Add([]byte(tc.in), tc.method == http.MethodHead, uint16(0), uint16(4096))
	}
	f.Add([]byte(realResponses[1]), false, uint16(7), uint16(16))
	f.Add([]byte(realResponses[3]), false, uint16(100), uint16(64))
	f.Fuzz(func(t *testing.T, data []byte, head bool, chunk, size uint16) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		checkParse(t, data, method, int(size), int(chunk), 1<<20)
		fields := append([]byte("HTTP/1.1 200 OK\r\n"), data...)
		fields = append(fields, "\r\nContent-Length: 2\r\n\r\nok"...)
		checkParse(t, fields, method, int(size), int(chunk), 1<<20)
	})
}

// checkParse parses in as a response to a request of method, with parseBuffered and with
// http.ReadResponse, each from a bufio.Reader of size bytes over in served chunk bytes per
// read (all at once if 0), into which one byte was peeked first (as readHeader does). It
// reports whether the fast path took the response, and fails t if it took one that
// http.ReadResponse rejects or reads differently: the response's fields, the bytes
// consumed, the body's bytes and how it ends. If the fast path declined, it must have
// consumed nothing.
func checkParse(t *testing.T, in []byte, method string, size, chunk int, limit int64) bool {
	t.Helper()
	req, err := http.NewRequest(method, "http://example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	srcA, srcB := &chunkReader{b: in, chunk: chunk}, &chunkReader{b: in, chunk: chunk}
	brA, brB := bufio.NewReaderSize(srcA, size), bufio.NewReaderSize(srcB, size)
	brA.Peek(1)
	brB.Peek(1)
	consumed := func(src *chunkReader, br *bufio.Reader) int { return len(in) - len(src.b) - br.Buffered() }

	var dst parsed
	took := parseBuffered(brA, req, limit, &dst)
	got := &dst.resp
	want, werr := http.ReadResponse(brB, req)
	if !took {
		if n := consumed(srcA, brA); n != 0 {
			t.Fatalf("the fast path declined the response but consumed %d bytes", n)
		}
		return false
	}
	if werr != nil {
		t.Fatalf("the fast path took a response http.ReadResponse rejects (%v): %q", werr, in)
	}
	if g, w := consumed(srcA, brA), consumed(srcB, brB); g != w {
		t.Errorf("header consumed %d bytes, want %d", g, w)
	}
	type view struct {
		Status                 string
		StatusCode             int
		Proto                  string
		ProtoMajor, ProtoMinor int
		Header, Trailer        http.Header
		ContentLength          int64
		TransferEncoding       []string
		Close, Uncompressed    bool
		Request                *http.Request
		NoBody                 bool
	}
	viewOf := func(r *http.Response) view {
		return view{r.Status, r.StatusCode, r.Proto, r.ProtoMajor, r.ProtoMinor, r.Header, r.Trailer,
			r.ContentLength, r.TransferEncoding, r.Close, r.Uncompressed, r.Request, r.Body == http.NoBody}
	}
	if g, w := viewOf(got), viewOf(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("response of %q:\ngot  %+v\nwant %+v", in, g, w)
	}
	gb, gerr := readBody(got.Body)
	wb, werr := readBody(want.Body)
	if !bytes.Equal(gb, wb) || gerr != werr {
		t.Errorf("body: got %q, %v; want %q, %v", gb, gerr, wb, werr)
	}
	if g, w := consumed(srcA, brA), consumed(srcB, brB); g != w {
		t.Errorf("header and body consumed %d bytes, want %d", g, w)
	}
	return true
}

// readBody reads b to its end, 5 bytes at a time, and returns what it read and the error
// that ended it.
func readBody(b io.Reader) ([]byte, error) {
	var got []byte
	p := make([]byte, 5)
	for {
		n, err := b.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// chunkReader reads b, at most chunk bytes per Read when chunk > 0.
type chunkReader struct {
	b     []byte
	chunk int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.chunk > 0 && len(p) > r.chunk {
		p = p[:r.chunk]
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestLengthBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		n       int64
		want    string
		wantErr error
	}{
		{name: "exact", in: "hello", n: 5, want: "hello", wantErr: io.EOF},
		{name: "more on the wire", in: "hello, world", n: 5, want: "hello", wantErr: io.EOF},
		{name: "cut short", in: "hel", n: 5, want: "hel", wantErr: io.ErrUnexpectedEOF},
		{name: "nothing", in: "", n: 5, want: "", wantErr: io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in))
			b := &lengthBody{r: br, n: tc.n}
			got, err := readBody(b)
			if string(got) != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
			if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("Read after the end: got %d, %v; want 0, EOF", n, err)
			}
		})
	}
}

// TestByteClasses checks the byte tables and validValue's word-at-a-time check against
// httpguts, whose rules are textproto's: every byte, at every position of a value.
func TestByteClasses(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		if got, want := keyClass[b] != 0, c < 0x80 && httpguts.IsTokenRune(rune(c)); got != want {
			t.Errorf("keyClass[%#x] != 0: got %v, want %v", c, got, want)
		}
		want := httpguts.ValidHeaderFieldValue(string([]byte{b}))
		if valueByte[b] != want {
			t.Errorf("valueByte[%#x]: got %v, want %v", c, valueByte[b], want)
		}
		for _, n := range []int{1, 7, 8, 9, 16, 23} {
			for pos := range n {
				v := bytes.Repeat([]byte{'a'}, n)
				v[pos] = b
				if got := validValue(v); got != want {
					t.Errorf("validValue with %#x at %d of %d: got %v, want %v", c, pos, n, got, want)
				}
			}
		}
	}
}

func TestKnownKeys(t *testing.T) {
	for i, k := range knownKeys {
		if got := lookupKnown([]byte(k.wire)); int(got) != i+1 {
			t.Errorf("lookupKnown(%q): got %d, want %d", k.wire, got, i+1)
		}
		if got, want := k.canon, textproto.CanonicalMIMEHeaderKey(k.wire); got != want {
			t.Errorf("canonical form of %q: got %q, want %q", k.wire, got, want)
		}
	}
	for _, key := range []string{"X", "X-Foo", "Content-Lengths", "content-Length", "ETAG", "Dat"} {
		if got := lookupKnown([]byte(key)); got != 0 {
			t.Errorf("lookupKnown(%q): got %q, want none", key, knownKeys[got-1].wire)
		}
	}
}
