package endwell

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTP/3 found through Alt-Svc (RFC 7838), for a Transport whose HTTP3 is set without Only.
//
// An https origin that answers over TCP with an Alt-Svc header naming an "h3" alternative
// is remembered for the header's max age. Its next request starts a QUIC dial to the
// alternative in the background and goes on over TCP itself: no request waits for QUIC.
// Once the QUIC connection is up, the origin's requests go over HTTP/3. A QUIC dial that
// fails, or an HTTP/3 connection that refuses a request before sending it, marks the
// alternative broken for a while that doubles at each failure (5 minutes, up to 2 days),
// as browsers do; its requests go over TCP meanwhile, at once. "clear" forgets the
// origin's alternatives.

// altSvcBrokenBase is how long an alternative that failed is not used, at its first
// failure; each failure in a row doubles it, up to altSvcBrokenMax.
var (
	altSvcBrokenBase = 5 * time.Minute
	altSvcBrokenMax  = 48 * time.Hour
)

// maxAltSvcOrigins bounds the table: a client of many origins starts it afresh when full.
const maxAltSvcOrigins = 1024

// altSvcs is the Transport's table of HTTP/3 alternatives, by origin ("host:port").
type altSvcs struct {
	mu sync.Mutex // guards m
	m  map[string]*altSvc
}

// altSvc is what endwell knows of one origin's HTTP/3 alternative. Its fields are guarded
// by altSvcs.mu.
type altSvc struct {
	authority   string    // the alternative's host:port
	expires     time.Time // the advertisement's max age runs out
	key         poolKey   // the alternative's pool key
	dialing     bool      // a background dial is under way
	up          int       // HTTP/3 connections of the alternative that are up
	brokenUntil time.Time // not used before then
	failures    int       // failures in a row
}

// route returns the pool key of the HTTP/3 alternative of key's origin, and true, if it
// is up. An alternative that is known, not broken and not yet up is dialled in the
// background.
func (a *altSvcs) route(t *Transport, key poolKey) (poolKey, bool) {
	a.mu.Lock()
	alt := a.m[key.addr]
	if alt == nil {
		a.mu.Unlock()
		return poolKey{}, false
	}
	now := time.Now()
	switch {
	case now.After(alt.expires):
		delete(a.m, key.addr)
	case now.Before(alt.brokenUntil):
	case alt.up > 0:
		h3 := alt.key
		a.mu.Unlock()
		return h3, true
	case !alt.dialing:
		alt.dialing = true
		h3 := alt.key
		a.mu.Unlock()
		// The background dial: one QUIC connection for the origin, put in the pool
		// for its next requests. It ends with the dial (bounded by the handshake
		// timeout, and cancelled by Close and Shutdown).
		go a.warm(t, key.addr, h3)
		return poolKey{}, false
	}
	a.mu.Unlock()
	return poolKey{}, false
}

// warm dials the alternative h3 of origin through the pool and leaves the connection
// idle there.
func (a *altSvcs) warm(t *Transport, origin string, h3 poolKey) {
	d := t.cfg.tlsHandshakeTimeout
	if d <= 0 {
		d = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	e, _, err := t.pool.Get(ctx, h3)
	a.mu.Lock()
	alt := a.m[origin]
	if alt != nil && alt.key == h3 {
		alt.dialing = false
	}
	a.mu.Unlock()
	if err != nil {
		a.broken(origin, h3)
		return
	}
	pc := e.Value
	pc.entry.CompareAndSwap(nil, e)
	if pc.h3 == nil || !pc.h3.usable() {
		return
	}
	a.mu.Lock()
	if alt := a.m[origin]; alt != nil && alt.key == h3 {
		alt.up++
		alt.failures = 0
		pc.h3.alt = alt
	}
	a.mu.Unlock()
	t.pool.Put(e)
}

// down says h, an HTTP/3 connection, is ending: if it served an alternative, the
// alternative is up no more (the next request dials it again in the background).
func (a *altSvcs) down(h *h3Conn) {
	a.mu.Lock()
	if alt := h.alt; alt != nil && alt.up > 0 {
		alt.up--
		h.alt = nil
	}
	a.mu.Unlock()
}

// altSvcOn reports whether HTTP/3 alternatives are learnt and used.
func (t *Transport) altSvcOn() bool { return t.HTTP3 != nil && !t.HTTP3.Only }

// broken marks origin's alternative h3 as not to be used for a while.
func (a *altSvcs) broken(origin string, h3 poolKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	alt := a.m[origin]
	if alt == nil || alt.key != h3 {
		return
	}
	d := altSvcBrokenBase << min(alt.failures, 20)
	if d <= 0 || d > altSvcBrokenMax {
		d = altSvcBrokenMax
	}
	alt.failures++
	alt.brokenUntil = time.Now().Add(d)
}

// learn reads the Alt-Svc header of a response from key's origin, received over TCP.
func (a *altSvcs) learn(t *Transport, key poolKey, h http.Header) {
	vs := h["Alt-Svc"]
	if len(vs) == 0 {
		return
	}
	authority, maxAge, clear, ok := parseAltSvcH3(vs, key.host)
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.m[key.addr]
	switch {
	case clear:
		delete(a.m, key.addr)
		return
	case !ok:
		return
	case old != nil && old.authority == authority:
		old.expires = time.Now().Add(maxAge)
		return
	}
	if a.m == nil || len(a.m) >= maxAltSvcOrigins {
		a.m = make(map[string]*altSvc)
	}
	h3 := poolKey{scheme: "https", addr: authority, host: key.host, h3: true, origin: key.addr}
	a.m[key.addr] = &altSvc{authority: authority, expires: time.Now().Add(maxAge), key: h3}
}

// parseAltSvcH3 finds the first "h3" alternative in the Alt-Svc field values vs (RFC 7838,
// section 3) of an origin whose host is host: its authority ("host:port", the origin's
// host when the value names none) and max age (ma, 24 hours if absent). clear is set for
// the value "clear". Alternatives of other protocols, and malformed ones, are skipped.
func parseAltSvcH3(vs []string, host string) (authority string, maxAge time.Duration, clear, ok bool) {
	for _, v := range vs {
		for _, alt := range splitOutsideQuotes(v, ',') {
			alt = strings.TrimSpace(alt)
			if alt == "clear" {
				return "", 0, true, false
			}
			params := splitOutsideQuotes(alt, ';')
			proto, auth, found := strings.Cut(strings.TrimSpace(params[0]), "=")
			if !found || strings.TrimSpace(proto) != "h3" {
				continue
			}
			auth, err := strconv.Unquote(strings.TrimSpace(auth))
			if err != nil {
				continue
			}
			ahost, port, err := net.SplitHostPort(auth)
			if n, perr := strconv.Atoi(port); err != nil || perr != nil || n <= 0 || n > 65535 {
				continue
			}
			if ahost == "" {
				ahost = host
			}
			maxAge = 24 * time.Hour
			for _, p := range params[1:] {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.TrimSpace(k) == "ma" {
					if s, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(v), `"`), 10, 64); err == nil && s >= 0 {
						maxAge = time.Duration(min(s, int64(1<<33))) * time.Second
					}
				}
			}
			return joinHostPort(ahost, port), maxAge, false, true
		}
	}
	return "", 0, false, false
}

// splitOutsideQuotes splits s at each sep that is not inside a quoted string.
func splitOutsideQuotes(s string, sep byte) []string {
	var parts []string
	quoted, escaped, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
