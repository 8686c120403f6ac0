package endwell_test

import (
	"errors"
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
