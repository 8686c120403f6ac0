package endwell_test

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// TestDialErrorsAsNetHTTP: a request that fails before it is sent (a refused dial, an
// untrusted certificate, a server that speaks no TLS, a proxy that is down, a proxy that
// refuses the CONNECT) fails through http.Client with the error net/http's Transport gives:
// the same type under *url.Error, the same message. Where that type has a chain to hold it
// (a *net.OpError), errors.Is(err, ErrNotSent) holds too.
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
			if !opaque && reflect.TypeOf(got.Err) != reflect.TypeOf(want.Err) {
				t.Errorf("url.Error.Err type: got %T, want %T (net/http's)", got.Err, want.Err)
			}
			if got.Err.Error() != want.Err.Error() {
				t.Errorf("message:\n got %q\nwant %q (net/http's)", got.Err.Error(), want.Err.Error())
			}
			var wop, gop *net.OpError
			if errors.As(want.Err, &wop) != errors.As(got.Err, &gop) || wop != nil && wop.Op != gop.Op {
				t.Errorf("net.OpError: got %+v, want %+v", gop, wop)
			}
			if tc.notSent && !errors.Is(eerr, endwell.ErrNotSent) {
				t.Errorf("errors.Is(%v, ErrNotSent): got false, want true", eerr)
			}
		})
	}
}
