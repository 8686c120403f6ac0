package endwell

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// A dial makes its target from the pool key alone: the key carries all of it, the proxy's
// URL as its String.
func TestDialTarget(t *testing.T) {
	tests := []struct {
		name               string
		key                poolKey
		scheme, addr, host string
		proxy              string // the URL the dial parses; "" for none
	}{
		{"https", poolKey{scheme: "https", addr: "example.com:443", host: "example.com"}, "https", "example.com:443", "example.com", ""},
		{"http IPv6", poolKey{scheme: "http", addr: "[::1]:8080", host: "::1"}, "http", "[::1]:8080", "::1", ""},
		{
			"through a proxy",
			poolKey{scheme: "https", addr: "example.com:443", host: "example.com", proxy: "http://u:p%40ss@p:3128"},
			"https", "example.com:443", "example.com", "http://u:p%40ss@p:3128",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := dialTarget(tt.key)
			if err != nil {
				t.Fatalf("dialTarget: got error %v, want nil", err)
			}
			if tg.poolKey != tt.key || tg.scheme != tt.scheme || tg.addr != tt.addr || tg.host != tt.host {
				t.Fatalf("got %+v, want key %v, scheme %q addr %q host %q", tg, tt.key, tt.scheme, tt.addr, tt.host)
			}
			switch {
			case tt.proxy == "" && tg.proxyURL != nil:
				t.Errorf("proxy: got %v, want none", tg.proxyURL)
			case tt.proxy != "" && (tg.proxyURL == nil || tg.proxyURL.String() != tt.proxy):
				t.Errorf("proxy: got %v, want %s", tg.proxyURL, tt.proxy)
			}
		})
	}
	t.Run("a proxy URL that does not parse", func(t *testing.T) {
		_, err := dialTarget(poolKey{scheme: "http", proxy: "http://p:3128/%zz"})
		var de *DialError
		if !errors.As(err, &de) || de.Op != "proxy" {
			t.Fatalf("got error %v, want a *DialError with Op proxy", err)
		}
	})
}

// TestPoolKeyString: a request's pool key is spelt as Stats().Hosts shows it.
func TestPoolKeyString(t *testing.T) {
	proxyTo := func(u string) func(*http.Request) (*url.URL, error) {
		return func(*http.Request) (*url.URL, error) { return url.Parse(u) }
	}
	tests := []struct {
		name    string
		tr      *Transport
		url     string
		upgrade bool
		want    string
	}{
		{"https", &Transport{}, "https://example.com/x", false, "https://example.com:443"},
		{"http IPv6", &Transport{}, "http://[::1]:8080/", false, "http://[::1]:8080"},
		{"upgrade", &Transport{}, "http://example.com/ws", true, "h1 http://example.com:80"},
		{"http through an HTTP proxy", &Transport{Proxy: proxyTo("http://p:3128")}, "http://example.com/", false, "proxy http://p:3128"},
		{"upgrade through an HTTP proxy", &Transport{Proxy: proxyTo("http://p:3128")}, "http://example.com/", true, "h1 proxy http://p:3128"},
		{"https through a tunnel", &Transport{Proxy: proxyTo("https://u:pw@p:443")}, "https://example.com/", false, "proxy https://u:pw@p:443 https://example.com:443"},
		{"http through SOCKS", &Transport{Proxy: proxyTo("socks5://p:1080")}, "http://example.com:8080/", false, "proxy socks5://p:1080 http://example.com:8080"},
		{"HTTP3.Only", &Transport{HTTP3: &HTTP3Config{Only: true}}, "https://example.com:8443/", false, "h3 https://example.com:8443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.upgrade {
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
			}
			key, err := tt.tr.keyFor(req)
			if err != nil {
				t.Fatalf("keyFor: got error %v, want nil", err)
			}
			if got := key.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("Alt-Svc", func(t *testing.T) {
		tr := &Transport{HTTP3: &HTTP3Config{}}
		origin := poolKey{scheme: "https", addr: "origin.test:443", host: "origin.test"}
		tr.alts.learn(tr, origin, http.Header{"Alt-Svc": {`h3="alt.test:8443"`}})
		alt := tr.alts.m[origin.addr]
		if alt == nil {
			t.Fatal("the alternative was not learnt")
		}
		if got, want := alt.key.String(), "h3 https://origin.test:443 alt.test:8443"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}

// The use count of a multiplexed connection: streams starting and ending at once, some
// taking the lock-free way (from and to counts above 0) and some the locked one (0 to 1,
// 1 to 0), leave the count at 0, the connection out of the active set, and every waiter
// woken; once the transport is closed a use is refused and leaves nothing behind.
func TestActiveUsesConcurrent(t *testing.T) {
	tr := &Transport{}
	tr.init()
	pc := &conn{t: tr}
	const workers, rounds = 8, 2000
	done := make(chan struct{})
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for range rounds {
				if !tr.addActive(pc) {
					t.Error("addActive refused on an open transport")
					return
				}
				if n := pc.uses.Load(); n < 1 || n > workers {
					t.Errorf("uses = %d with a use held, want 1..%d", n, workers)
				}
				tr.doneActive(pc)
			}
		}()
	}
	waited := make(chan error, 1)
	go func() {
		for range 100 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := tr.waitActive(ctx)
			cancel()
			if err != nil {
				waited <- err
				return
			}
		}
		waited <- nil
	}()
	for range workers {
		<-done
	}
	if err := <-waited; err != nil {
		t.Fatalf("waitActive: %v", err)
	}
	tr.mu.Lock()
	n, active := pc.uses.Load(), len(tr.active)
	tr.mu.Unlock()
	if n != 0 || active != 0 {
		t.Fatalf("after every use ended: uses = %d, active set %d, want 0 and 0", n, active)
	}

	// Closed: a use from 0 and one from above 0 are both refused and given back.
	if !tr.addActive(pc) {
		t.Fatal("addActive refused on an open transport")
	}
	tr.state.Store(stateClosed)
	if tr.addActive(pc) {
		t.Error("addActive (a second stream) accepted on a closed transport")
	}
	tr.doneActive(pc)
	if tr.addActive(pc) {
		t.Error("addActive (a first stream) accepted on a closed transport")
	}
	if n := pc.uses.Load(); n != 0 || len(tr.active) != 0 {
		t.Fatalf("closed: uses = %d, active set %d, want 0 and 0", n, len(tr.active))
	}
}
