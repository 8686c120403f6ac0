package h1

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// readResponse reads the header of one response to req from br: with parseBuffered when
// the response is of the common kind and its header is all buffered, and with
// http.ReadResponse otherwise, so that every unusual response gets net/http's behaviour
// and errors. The fast path builds the response in dst (the exchange's own, so that it
// costs no allocation of its own) and returns &dst.resp.
//
// limit is MaxResponseHeaderBytes. The fast path reads nothing from the connection: it
// parses only bytes already in br's buffer, which the connection's reader let in within
// the limit (connReader), and which http.ReadResponse would parse the same way from the
// buffer without a read either. It also declines a header block longer than limit, so
// that it is never looser than the limit whatever the buffer held.
func readResponse(br *bufio.Reader, req *http.Request, limit int64, dst *parsed) (*http.Response, error) {
	if parseBuffered(br, req, limit, dst) {
		return &dst.resp, nil
	}
	return http.ReadResponse(br, req)
}

// parsed is where parseBuffered builds a response: the response, its body's reader, and
// the array behind its header's values when they fit (servers commonly send 5 to 10
// fields: nginx 5 to 8, Apache 7 to 10).
type parsed struct {
	resp http.Response
	body lengthBody
	vals [12]string
}

// maxFastFields is the most header fields parseBuffered takes; a response with more goes
// to http.ReadResponse. Offsets into the header block are uint16, so a header block of
// 64 KiB or more goes there too.
const maxFastFields = 64

// field is one header line of the block being parsed: its key and value (trimmed) as
// offsets into the block. lead is the index of the key's first field (itself if it is the
// first); a key's first field also counts its values (n) and, while the header is built,
// says where they go in the values' backing array (at) and how many are there (fill).
type field struct {
	k0, k1, v0, v1 uint16
	lead, n        uint8
	at, fill       uint8
	known          uint8 // 1 + the key's index in knownKeys, or 0
	canon          bool  // the key is in canonical form as it came
}

// parseBuffered parses the response header buffered in br, the answer to req, when it is
// of the kind parsed here; it builds the response in dst, consumes the header from br
// and returns true. Otherwise it consumes nothing and returns false.
//
// It takes, and compares with http.ReadResponse as FuzzParseResponse does:
//   - the whole header block already in br's buffer, at most limit bytes;
//   - a status line "HTTP/1.1 ddd" with an optional reason, of status 200 to 599 other
//     than 204 and 304, to a request other than HEAD and CONNECT;
//   - CRLF line endings only, no obs-fold, at most maxFastFields fields;
//   - keys that are tokens, values of bytes that textproto accepts (HTAB, SP, VCHAR,
//     obs-text), with optional whitespace around them (trimmed, as textproto does);
//   - exactly one Content-Length, of at most 18 plain digits; no Transfer-Encoding, no
//     Trailer.
//
// What it builds is what http.ReadResponse would: keys in canonical form, each key's
// values in order; "Connection" dropped when it has the "close" token, which sets Close
// (readTransfer's shouldClose for HTTP/1.1; Keep-Alive is left alone, as there); Pragma:
// no-cache without Cache-Control adds "Cache-Control: no-cache" (fixPragmaCacheControl);
// a Content-Length of 0 makes the body http.NoBody.
//
// It allocates the header block as one string, which the status and every value are
// sliced from, and the header's map; the values share one array, dst's when they fit.
// Keys come from knownKeys, or are sliced from the block when in canonical form, or else
// are canonicalized by textproto (which interns the common ones).
func parseBuffered(br *bufio.Reader, req *http.Request, limit int64, dst *parsed) bool {
	switch req.Method {
	case http.MethodHead, http.MethodConnect:
		// HEAD: a Content-Length without a body. CONNECT: a 2xx is a tunnel.
		return false
	}
	buf, _ := br.Peek(br.Buffered())
	if int64(len(buf)) > limit {
		buf = buf[:max(limit, 0)]
	}
	if len(buf) > 0xffff {
		buf = buf[:0xffff]
	}

	// The status line. Every line must end in CRLF: a LF not after a CR, or a CR
	// anywhere else (in a reason, a key or a value), sends the response to net/http.
	nl := bytes.IndexByte(buf, '\n')
	if nl < 1 || buf[nl-1] != '\r' {
		return false
	}
	line := buf[:nl-1]
	const version = "HTTP/1.1 "
	if len(line) < len(version)+3 || string(line[:len(version)]) != version {
		return false
	}
	d0, d1, d2 := line[9]-'0', line[10]-'0', line[11]-'0'
	if d0 > 9 || d1 > 9 || d2 > 9 {
		return false
	}
	code := int(d0)*100 + int(d1)*10 + int(d2)
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return false
	}
	if len(line) > 12 && (line[12] != ' ' || !validValue(line[13:])) {
		return false
	}
	statusEnd := len(line)
	i := nl + 1

	// The fields, up to the empty line.
	var (
		fields   [maxFastFields]field
		n        int  // fields
		keys     int  // distinct keys
		clen     = -1 // the Content-Length's field
		conn     = -1 // the first Connection field
		pragma   = -1 // the first Pragma field
		cacheCtl bool // a Cache-Control field is there
	)
	for {
		nl := bytes.IndexByte(buf[i:], '\n')
		if nl < 1 || buf[i+nl-1] != '\r' {
			return false // not all buffered, or a bare LF
		}
		line := buf[i : i+nl-1]
		l0 := i
		i += nl + 1
		if len(line) == 0 {
			break
		}
		if n == maxFastFields {
			return false
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 1 {
			return false
		}
		key, v := line[:colon], line[colon+1:]
		f := &fields[n]
		*f = field{lead: uint8(n), n: 1, canon: true}
		var kind uint8
		if k := lookupKnown(key); k > 0 {
			f.known = k
			kind = knownKeys[k-1].kind
		} else {
			// A token (which a line that starts with a space or a tab, an obs-fold,
			// is not), in canonical form or not, and special or not.
			bad := uint8(lowerLetter) // the letter class that may not come next in canonical form
			for _, c := range key {
				class := keyClass[c]
				if class == 0 {
					return false
				}
				if class == bad {
					f.canon = false
				}
				bad = upperLetter
				if c == '-' {
					bad = lowerLetter
				}
			}
			kind = specialKind(key)
		}
		if !validValue(v) {
			return false
		}
		v0, v1 := 0, len(v)
		for v0 < v1 && (v[v0] == ' ' || v[v0] == '\t') {
			v0++
		}
		for v1 > v0 && (v[v1-1] == ' ' || v[v1-1] == '\t') {
			v1--
		}
		off := l0 + colon + 1
		f.k0, f.k1, f.v0, f.v1 = uint16(l0), uint16(l0+colon), uint16(off+v0), uint16(off+v1)

		for j := range n {
			if l := &fields[j]; int(l.lead) == j && int(l.k1-l.k0) == len(key) && keyEqualFold(buf[l.k0:l.k1], key) {
				f.lead = uint8(j)
				l.n++
				break
			}
		}
		first := int(f.lead) == n
		if first {
			keys++
		}
		switch kind {
		case keyContentLength:
			if clen >= 0 {
				return false // duplicates: net/http compares and dedups them
			}
			clen = n
		case keyReject:
			return false
		case keyConnection:
			if first {
				conn = n
			}
		case keyPragma:
			if first {
				pragma = n
			}
		case keyCacheControl:
			cacheCtl = true
		}
		n++
	}
	end := i
	if clen < 0 {
		return false // no Content-Length: chunked, or a body to the connection's end
	}
	var length int64
	f := &fields[clen]
	if f.v1 == f.v0 || f.v1-f.v0 > 18 {
		return false // empty, or maybe past int64 (ParseUint's bitSize 63 decides that)
	}
	for _, c := range buf[f.v0:f.v1] {
		if c < '0' || c > '9' {
			return false
		}
		length = length*10 + int64(c-'0')
	}
	// fixPragmaCacheControl.
	addCacheCtl := pragma >= 0 && !cacheCtl && string(buf[fields[pragma].v0:fields[pragma].v1]) == "no-cache"

	// The header, built from one string.
	s := string(buf[:end])
	nvals := n
	if addCacheCtl {
		nvals++
		keys++
	}
	vals := dst.vals[:]
	if nvals > len(vals) {
		vals = make([]string, nvals)
	}
	h := make(http.Header, keys)
	at := 0
	for j := range n {
		f := &fields[j]
		v := s[f.v0:f.v1]
		if int(f.lead) != j {
			l := &fields[f.lead]
			vals[int(l.at)+int(l.fill)] = v
			l.fill++
			continue
		}
		var key string
		switch {
		case f.known > 0:
			key = knownKeys[f.known-1].canon
		case f.canon:
			key = s[f.k0:f.k1]
		default:
			key = textproto.CanonicalMIMEHeaderKey(s[f.k0:f.k1])
		}
		f.at, f.fill = uint8(at), 1
		vals[at] = v
		h[key] = vals[at : at+int(f.n) : at+int(f.n)]
		at += int(f.n)
	}
	if addCacheCtl {
		vals[at] = "no-cache"
		h["Cache-Control"] = vals[at : at+1 : at+1]
	}
	closing := false
	if conn >= 0 {
		f := &fields[conn]
		if httpguts.HeaderValuesContainsToken(vals[f.at:f.at+f.n], "close") {
			// shouldClose for HTTP/1.1 drops the header with its close.
			delete(h, "Connection")
			closing = true
		}
	}

	resp := &dst.resp
	*resp = http.Response{
		Status:        s[len(version):statusEnd],
		StatusCode:    code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		ContentLength: length,
		Close:         closing,
		Request:       req,
	}
	if length == 0 {
		resp.Body = http.NoBody
	} else {
		dst.body = lengthBody{r: br, n: length}
		resp.Body = &dst.body
	}
	br.Discard(end)
	return true
}

// validValue reports whether v holds only bytes that textproto accepts in a header value
// (validHeaderValueByte: HTAB, SP, VCHAR, obs-text; not CR, LF, NUL, other controls, DEL).
// It looks at eight bytes at a time while they hold none under 0x20 (HTAB, the one such
// byte that is valid, sends the rest to the byte loop) and no DEL.
func validValue(v []byte) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		x := binary.LittleEndian.Uint64(v)
		y := x ^ 0x7f*lo // a zero byte where x has DEL
		// Any byte of x under 0x20, or of y under 1 (Hacker's Delight 6-1; exact for
		// "any", though not for which).
		if ((x-0x20*lo)&^x|(y-lo)&^y)&hi != 0 {
			break
		}
		v = v[8:]
	}
	for _, c := range v {
		if !valueByte[c] {
			return false
		}
	}
	return true
}

// The kinds of keys that parseBuffered looks out for.
const (
	keyOther uint8 = iota
	keyContentLength
	keyConnection
	keyPragma
	keyCacheControl
	keyReject // Transfer-Encoding, Trailer: net/http's
)

// specialKind says what kind of key the token key is, in any case.
func specialKind(key []byte) uint8 {
	switch len(key) {
	case len("Content-Length"):
		if lowerEqual(key, "content-length") {
			return keyContentLength
		}
	case len("Transfer-Encoding"):
		if lowerEqual(key, "transfer-encoding") {
			return keyReject
		}
	case len("Trailer"):
		if lowerEqual(key, "trailer") {
			return keyReject
		}
	case len("Connection"):
		if lowerEqual(key, "connection") {
			return keyConnection
		}
	case len("Pragma"):
		if lowerEqual(key, "pragma") {
			return keyPragma
		}
	case len("Cache-Control"):
		if lowerEqual(key, "cache-control") {
			return keyCacheControl
		}
	}
	return keyOther
}

// knownKeys are keys as servers commonly spell them, with their canonical form and
// kind: a key found here needs no check of its bytes, no canonicalization and no
// allocation.
var knownKeys = func() []knownKey {
	wire := []string{
		"Accept-Ranges", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin",
		"Access-Control-Expose-Headers", "Access-Control-Max-Age", "Age", "Alt-Svc",
		"Cache-Control", "Connection", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Location", "Content-Range",
		"Content-Security-Policy", "Content-Type", "Cross-Origin-Opener-Policy",
		"Cross-Origin-Resource-Policy", "Date", "ETag", "Etag", "Expires", "Keep-Alive",
		"Last-Modified", "Link", "Location", "Permissions-Policy", "Pragma",
		"Referrer-Policy", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Transfer-Encoding", "Upgrade", "Vary", "Via",
		"WWW-Authenticate", "Www-Authenticate", "X-Cache", "X-Content-Type-Options",
		"X-Frame-Options", "X-Powered-By", "X-Request-Id", "X-Request-ID",
		"X-XSS-Protection", "X-Xss-Protection",
		// As proxies that lower-case keys send them.
		"accept-ranges", "cache-control", "connection", "content-encoding",
		"content-length", "content-type", "date", "etag", "expires", "last-modified",
		"location", "server", "set-cookie", "strict-transport-security",
		"transfer-encoding", "vary", "x-content-type-options", "x-frame-options",
	}
	keys := make([]knownKey, len(wire))
	for i, w := range wire {
		keys[i] = knownKey{wire: w, canon: textproto.CanonicalMIMEHeaderKey(w), kind: specialKind([]byte(w))}
	}
	return keys
}()

type knownKey struct {
	wire  string // as it comes
	canon string // textproto.CanonicalMIMEHeaderKey(wire)
	kind  uint8
}

// knownTable finds knownKeys by keyHash: each slot holds 1 + an index in knownKeys, or 0.
// Keys whose hashes collide take the next free slots (open addressing); a lookup probes
// from the key's hash to the first empty slot, and there are far fewer keys than slots.
var knownTable = func() (t [256]uint8) {
	for i, k := range knownKeys {
		h := keyHash([]byte(k.wire))
		for t[h] != 0 {
			h++
		}
		t[h] = uint8(i + 1)
	}
	return t
}()

// keyHash hashes a key of at least two bytes from its length and its two first and two
// last bytes.
func keyHash(k []byte) uint8 {
	n := len(k)
	x := uint32(k[0])<<24 | uint32(k[1])<<16 | uint32(k[n-2])<<8 | uint32(k[n-1])
	return uint8((x ^ uint32(n)) * 0x9e3779b1 >> 24)
}

// lookupKnown returns 1 + the index of key in knownKeys, or 0.
func lookupKnown(key []byte) uint8 {
	if len(key) < 2 {
		return 0
	}
	for h := keyHash(key); ; h++ {
		k := knownTable[h]
		if k == 0 || string(key) == knownKeys[k-1].wire {
			return k
		}
	}
}

// The classes of keyClass.
const (
	tokenByte   = 1 // a token byte other than a letter
	lowerLetter = 2
	upperLetter = 3
)

// keyClass classifies the bytes of a header key: 0 for a byte that is not a token's
// (textproto's validHeaderFieldByte: RFC 9110's tchar), else its class.
var keyClass = func() (t [256]uint8) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789") {
		t[c] = tokenByte
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = lowerLetter
		t[c-'a'+'A'] = upperLetter
	}
	return t
}()

// valueByte says which bytes textproto accepts in a header value (validHeaderValueByte:
// HTAB, SP, VCHAR, obs-text). CR and LF are not among them.
var valueByte = func() (t [256]bool) {
	for c := range t {
		t[c] = c == '\t' || c >= ' ' && c != 0x7f
	}
	return t
}()

// keyEqualFold reports whether two keys of token bytes are the same key: equal but for
// the case of letters, which is what gives them the same canonical form.
func keyEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i, c := range a {
		if d := b[i]; c != d {
			if c|0x20 != d|0x20 || keyClass[c] < lowerLetter {
				return false
			}
		}
	}
	return true
}

// lowerEqual reports whether the token key is lower, whose bytes are lower-case letters and
// hyphens, but for the case of letters. No token byte other than a letter ORs with 0x20 to
// a lower-case letter or a hyphen, so the OR alone tells.
func lowerEqual(key []byte, lower string) bool {
	if len(key) != len(lower) {
		return false
	}
	for i, c := range key {
		if c|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// lengthBody is a response body of Content-Length bytes, read from the connection's
// reader: net/http's body over an io.LimitedReader, without their allocations. Reads
// never go past the length; it returns io.EOF with the last bytes, and
// io.ErrUnexpectedEOF if the connection ends early, as net/http's body does.
type lengthBody struct {
	r      *bufio.Reader
	n      int64 // bytes left
	sawEOF bool  // io.EOF, or io.ErrUnexpectedEOF, was returned: the rest is io.EOF
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.sawEOF || b.n <= 0 {
		b.sawEOF = true
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	switch {
	case err == io.EOF:
		b.sawEOF = true
		if b.n > 0 {
			err = io.ErrUnexpectedEOF
		}
	case err == nil && n > 0 && b.n == 0:
		b.sawEOF = true
		err = io.EOF
	}
	return n, err
}

// Close does nothing: the exchange's body (body) ends the exchange; lengthBody is only
// what it reads.
func (b *lengthBody) Close() error { return nil }
