package endwell

import (
	"context"
	"testing"
)

// A dial finds its target by the pool key, even after the target cache was started afresh.
func TestDialTarget(t *testing.T) {
	tests := []struct {
		name               string
		key                string
		scheme, addr, host string // empty scheme: no target
	}{
		{"https", "https://example.com:443", "https", "example.com:443", "example.com"},
		{"http IPv6", "http://[::1]:8080", "http", "[::1]:8080", "::1"},
		{"a proxy's key is never guessed", "proxy http://p:3128 https://example.com:443", "", "", ""},
		{"garbage", "nonsense", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &Transport{}
			tg := tr.dialTarget(context.Background(), tt.key)
			if tt.scheme == "" {
				if tg != nil {
					t.Fatalf("got %+v, want no target", tg)
				}
				return
			}
			if tg == nil || tg.scheme != tt.scheme || tg.addr != tt.addr || tg.host != tt.host || tg.key != tt.key {
				t.Fatalf("got %+v, want scheme %q addr %q host %q", tg, tt.scheme, tt.addr, tt.host)
			}
		})
	}
}
