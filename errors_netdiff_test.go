package endwell_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// TestDialErrorsAsNetHTTP: a request that fails before it is sent (a refused dial, an
// untrusted certificate, a server that speaks no TLS, a proxy that is down, a proxy that
// refuses the CONNECT) fails through http.Client with the error net/http's Transport gives:
// the same chain of types under *url.Error, the same message; endwell.NotSent recognises
// those that never left.
func TestDialErrorsAsNetHTTP(t *testing.T) {
	checkLeaks(t)
	tlsSrv := startWitness(t, witness.Options{TLS: true})
	plainSrv := startWitness(t, witness.Options{})
	refusing := startProxy(t, http.StatusForbidden)
	down := &url.URL{Scheme: "http", Host: closedAddr(t)}
	cases := []struct {
		name    string
		url     string
		proxy   *url.URL
		notSent bool // errors.Is(err, ErrNotSent) must hold
	}{
		{"refused dial", "http://" + closedAddr(t) + "/", nil, true},
		{"untrusted certificate", tlsSrv.URL() + "/", nil, false},
		{"TLS to a plain server", "https://" + plainSrv.Addr() + "/", nil, false},
		{"proxy down", "http://example.test/", down, true},
		{"proxy down, https", "https://example.test/", down, true},
		{"CONNECT refused", tlsSrv.URL() + "/", refusing.url(nil), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want, got *url.Error
			nt := &http.Transport{}
			et := newTransport(t, &endwell.Transport{})
			if tc.proxy != nil {
				nt.Proxy = http.ProxyURL(tc.proxy)
				et.Proxy = http.ProxyURL(tc.proxy)
			}
			defer nt.CloseIdleConnections()
			_, nerr := (&http.Client{Transport: nt}).Get(tc.url)
			_, eerr := (&http.Client{Transport: et}).Get(tc.url)
			if !errors.As(nerr, &want) || !errors.As(eerr, &got) {
				t.Fatalf("errors: net/http %v, endwell %v; want both *url.Error", nerr, eerr)
			}
			// An errors.New of net/http's has a type no caller can assert: endwell's own
			// type (which carries its classification) stands in, with the same message.
			opaque := reflect.TypeOf(want.Err) == reflect.TypeOf(errors.New(""))
			if !opaque && chainTypes(got.Err) != chainTypes(want.Err) {
				t.Errorf("chain of types: got %s, want %s (net/http's)", chainTypes(got.Err), chainTypes(want.Err))
			}
			if got.Err.Error() != want.Err.Error() {
				t.Errorf("message:\n got %q\nwant %q (net/http's)", got.Err.Error(), want.Err.Error())
			}
			if tc.notSent && !endwell.NotSent(eerr) {
				t.Errorf("NotSent(%v): got false, want true", eerr)
			}
		})
	}
}

// chainTypes spells the types of err's chain, following Unwrap() error.
func chainTypes(err error) string {
	var s string
	for ; err != nil; err = errors.Unwrap(err) {
		s += reflect.TypeOf(err).String() + " > "
	}
	return s
}

// TestContextCauseAsNetHTTP: a request whose context is cancelled with a cause of its own
// (while it waits for the headers, while its body is read, during the TLS handshake)
// fails with that cause over HTTP/1, as net/http's; the connection's ending is still
// classified by the context's error.
func TestContextCauseAsNetHTTP(t *testing.T) {
	checkLeaks(t)
	h := lateHandler(t)
	// A TLS server that never answers the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	for _, f := range tortureFlavors[:2] {
		url, tr := f.start(t, h)
		for _, tc := range []struct{ name, url string }{
			{"headers", url + "/"},
			{"body", url + "/body"},
			{"TLS handshake", "https://" + ln.Addr().String() + "/"},
		} {
			t.Run(f.name+"/"+tc.name, func(t *testing.T) {
				cause := errors.New("the caller's own cause")
				for _, rt := range []http.RoundTripper{&http.Transport{TLSClientConfig: tr.TLSClientConfig}, tr} {
					ctx, cancel := context.WithCancelCause(context.Background())
					time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
					req, _ := http.NewRequestWithContext(ctx, "GET", tc.url, nil)
					resp, err := rt.RoundTrip(req)
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					if _, ours := rt.(*endwell.Transport); !ours && err == nil {
						// net/http's reference: now and then its body read ends cleanly
						// across the cancellation (its connection's close races the
						// server's end of the response); it says nothing then.
						t.Logf("%T: no error", rt)
					} else if !errors.Is(err, cause) || errors.Is(err, context.Canceled) {
						t.Errorf("%T: %v; want the context's cause, not context.Canceled", rt, err)
					}
					cancel(nil)
				}
			})
		}
		if got := tr.Stats().Closes; got[endwell.CloseKey{Mode: "abort", Reason: "context_canceled", Outcome: "aborted"}] == 0 {
			t.Errorf("%s: closes %v, want aborts for context_canceled", f.name, got)
		}
	}
}

// TestClientTimeoutMessage: http.Client's Timeout names itself in the error, as with
// net/http's Transport, whether the headers or the body were late, on every protocol:
// the Client marks its timeout on a timer of its own, which endwell's deadline error
// waits for.
func TestClientTimeoutMessage(t *testing.T) {
	checkLeaks(t)
	h := lateHandler(t)
	for _, f := range tortureFlavors {
		url, tr := f.start(t, h)
		for _, tc := range []struct{ path, want string }{
			{"/", "Client.Timeout exceeded while awaiting headers"},
			{"/body", "Client.Timeout or context cancellation while reading body"},
		} {
			t.Run(f.name+tc.path, func(t *testing.T) {
				c := &http.Client{Transport: tr, Timeout: 60 * time.Millisecond}
				for range 4 {
					resp, err := c.Get(url + tc.path)
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					var ne net.Error
					if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ne) || !ne.Timeout() {
						t.Fatalf("error %v; want a timeout saying %q", err, tc.want)
					}
				}
			})
		}
	}
}

// TestTLSHandshakeTimeoutAsNetHTTP: a server that never answers the TLS handshake fails
// the request at TLSHandshakeTimeout with net/http's message, a timeout, not sent.
func TestTLSHandshakeTimeoutAsNetHTTP(t *testing.T) {
	checkLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	target := "https://" + ln.Addr().String() + "/"
	nt := &http.Transport{TLSHandshakeTimeout: 100 * time.Millisecond}
	et := newTransport(t, &endwell.Transport{TLSHandshakeTimeout: 100 * time.Millisecond})
	_, nerr := (&http.Client{Transport: nt}).Get(target)
	_, eerr := (&http.Client{Transport: et}).Get(target)
	var want, got *url.Error
	if !errors.As(nerr, &want) || !errors.As(eerr, &got) {
		t.Fatalf("errors: net/http %v, endwell %v; want both *url.Error", nerr, eerr)
	}
	if got.Err.Error() != want.Err.Error() || !got.Timeout() || !endwell.NotSent(eerr) {
		t.Errorf("endwell: %q (timeout %v, not sent %v); want net/http's %q, a timeout, not sent",
			got.Err.Error(), got.Timeout(), endwell.NotSent(eerr), want.Err.Error())
	}
}

// lateHandler answers late: /body with part of its body, then nothing; any other path with
// nothing at all; each until the client goes away or the test ends.
func lateHandler(t *testing.T) http.Handler {
	end := make(chan struct{})
	t.Cleanup(func() { close(end) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-end:
		case <-r.Context().Done():
		}
	})
}
