package endwell_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/endwell/endwell"
)

// get runs one GET through rt and reads the body to its end.
func get(t *testing.T, rt http.RoundTripper, url string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func closes(tr *endwell.Transport, mode, reason, outcome string) uint64 {
	return tr.Stats().Closes[endwell.CloseKey{Mode: mode, Reason: reason, Outcome: outcome}]
}

func TestIdleTimeout(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		wait    time.Duration
		want    uint64 // graceful idle_timeout closes
	}{
		{"before the timeout", 30 * time.Second, 29 * time.Second, 0},
		{"at the timeout", 30 * time.Second, 30*time.Second + time.Millisecond, 1},
		{"default is 90s: not yet", 0, 89 * time.Second, 0},
		{"default is 90s", 0, 91 * time.Second, 1},
		{"negative: never", -1, 24 * time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fn := &fakeNet{}
				tr := &endwell.Transport{DialContext: fn.dial, IdleConnTimeout: tt.timeout}
				defer tr.Close()
				get(t, tr, "http://a.test/")
				time.Sleep(tt.wait)
				synctest.Wait()
				if got := closes(tr, "graceful", "idle_timeout", "clean"); got != tt.want {
					t.Errorf("got %d clean idle_timeout closes, want %d (stats %+v)", got, tt.want, tr.Stats())
				}
				if tt.want == 1 {
					sc := fn.ends[0]
					<-sc.done
					if !sc.sawFIN {
						t.Errorf("got no FIN at the server, want the graceful close's FIN")
					}
				}
			})
		})
	}
}

func TestIdleTimeoutIsPerConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{}
		tr := &endwell.Transport{DialContext: fn.dial, IdleConnTimeout: 10 * time.Second}
		defer tr.Close()
		get(t, tr, "http://a.test/")
		time.Sleep(6 * time.Second)
		get(t, tr, "http://b.test/")
		time.Sleep(5 * time.Second) // a has been idle 11s, b 5s
		synctest.Wait()
		s := tr.Stats()
		if got := s.Idle; got != 1 {
			t.Errorf("got %d idle, want 1 (b)", got)
		}
		if _, ok := s.Hosts["http://b.test:80"]; !ok {
			t.Errorf("got hosts %v, want b.test still there", s.Hosts)
		}
		// Reuse resets the idle clock.
		get(t, tr, "http://b.test/")
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if got := tr.Stats().Idle; got != 1 {
			t.Errorf("got %d idle after reuse, want 1", got)
		}
		if got := fn.dialCount(); got != 2 {
			t.Errorf("got %d dials, want 2", got)
		}
	})
}

func TestIdleLimitPerHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{}
		// A handler that holds each request until all have arrived, so that n connections
		// are open at once.
		tr := &endwell.Transport{DialContext: fn.dial, MaxIdleConnsPerHost: 2}
		defer tr.Close()
		const n = 5
		resps := make([]*http.Response, n)
		for i := range resps {
			req, _ := http.NewRequest("GET", "http://a.test/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resps[i] = resp // held: the next request needs a new connection
		}
		for _, resp := range resps {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		synctest.Wait()
		if got, want := closes(tr, "graceful", "idle_limit", "clean"), uint64(n-2); got != want {
			t.Errorf("got %d idle_limit closes, want %d", got, want)
		}
		if got := tr.Stats().Idle; got != 2 {
			t.Errorf("got %d idle, want 2", got)
		}
	})
}

func TestMaxConnLifetimeJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{}
		tr := &endwell.Transport{DialContext: fn.dial, MaxConnLifetime: 100 * time.Second, IdleConnTimeout: -1}
		defer tr.Close()
		const n = 40
		for i := range n {
			get(t, tr, "http://h"+string(rune('a'+i%26))+string(rune('a'+i/26))+".test/")
		}
		start := time.Now()
		var expiries []time.Duration
		for len(expiries) < n && time.Since(start) < 200*time.Second {
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
			for range int(closes(tr, "graceful", "max_lifetime", "clean")) - len(expiries) {
				expiries = append(expiries, time.Since(start))
			}
		}
		if len(expiries) != n {
			t.Fatalf("got %d max_lifetime closes, want %d", len(expiries), n)
		}
		first, last := expiries[0], expiries[n-1]
		if first < 89*time.Second || last > 111*time.Second {
			t.Errorf("got expiries from %v to %v, want within 90s..110s (±10%%)", first, last)
		}
		if last-first < 5*time.Second {
			t.Errorf("got expiries spread over %v, want jitter to spread them (> 5s)", last-first)
		}
	})
}

func TestMaxConnLifetimeFinishesCurrentRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{}
		tr := &endwell.Transport{DialContext: fn.dial, MaxConnLifetime: 10 * time.Second}
		defer tr.Close()
		req, _ := http.NewRequest("GET", "http://a.test/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second) // past the lifetime while the body is unread
		synctest.Wait()
		if got := closes(tr, "graceful", "max_lifetime", "clean"); got != 0 {
			t.Fatalf("got %d max_lifetime closes while in use, want 0", got)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "ok" {
			t.Fatalf("got %q, %v, want ok", b, err)
		}
		resp.Body.Close()
		synctest.Wait()
		if got := closes(tr, "graceful", "max_lifetime", "clean"); got != 1 {
			t.Errorf("got %d max_lifetime closes after the request, want 1", got)
		}
	})
}

func TestShutdownBudgetAgainstSilentPeer(t *testing.T) {
	tests := []struct {
		name     string
		budget   time.Duration
		ctx      time.Duration // Shutdown's deadline; 0 means none
		wantTime time.Duration // fake time Shutdown takes
		wantErr  error
	}{
		{"default budget", 0, 0, 2 * time.Second, nil},
		{"own budget", 500 * time.Millisecond, 0, 500 * time.Millisecond, nil},
		{"ctx earlier than the budget", 0, 300 * time.Millisecond, 300 * time.Millisecond, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fn := &fakeNet{silent: true}
				tr := &endwell.Transport{DialContext: fn.dial, ShutdownTimeout: tt.budget}
				for _, h := range []string{"a", "b", "c"} {
					get(t, tr, "http://"+h+".test/")
				}
				ctx := context.Background()
				if tt.ctx > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctx)
					defer cancel()
				}
				start := time.Now()
				err := tr.Shutdown(ctx)
				if d := time.Since(start); d != tt.wantTime {
					t.Errorf("got Shutdown after %v, want %v: all connections share one deadline", d, tt.wantTime)
				}
				if err != tt.wantErr {
					t.Errorf("got error %v, want %v", err, tt.wantErr)
				}
				if got := closes(tr, "graceful", "shutdown", "timed_out"); got != 3 {
					t.Errorf("got %d timed_out shutdown closes, want 3 (%v)", got, tr.Stats().Closes)
				}
				for _, sc := range fn.ends {
					<-sc.done
				}
			})
		})
	}
}

func TestCloseIdleConnectionsReturnsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{}
		tr := &endwell.Transport{DialContext: fn.dial}
		defer tr.Close()
		for _, h := range []string{"a", "b", "c"} {
			get(t, tr, "http://"+h+".test/")
		}
		start := time.Now()
		tr.CloseIdleConnections()
		if d := time.Since(start); d != 0 {
			t.Errorf("CloseIdleConnections took %v of fake time, want 0", d)
		}
		synctest.Wait()
		if got := closes(tr, "graceful", "close_idle", "clean"); got != 3 {
			t.Errorf("got %d clean close_idle closes, want 3", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			t.Errorf("got Shutdown error %v, want nil", err)
		}
	})
}
