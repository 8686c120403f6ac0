package h3_test

import (
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/endwell/endwell/internal/h3"
)

// quicGoVersion is the quic-go release whose internals this package relies on: the
// message of its unexported errConnUnusable, the qlog events that carry the peer's
// transport parameters and the GOAWAY its ClientConn received, that its ClientConn closes
// with H3_NO_ERROR only after a GOAWAY, that its response body's Close sends STOP_SENDING
// alone, and the length of its own closing period (3×PTO(false)).
const quicGoVersion = "v0.65.0"

// TestQUICGoCanary fails loudly when quic-go changes: re-check the fences above (and the
// tests that prove them: TestStreamAbort, TestServerGoAway, TestRoundTrip's MaxStreams,
// TestGracefulClosingPeriod), then update quicGoVersion.
func TestQUICGoCanary(t *testing.T) {
	// A test binary's build info lists no dependencies: read the module's go.mod.
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/quic-go/quic-go (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod requires no github.com/quic-go/quic-go")
	}
	if v := string(m[1]); v != quicGoVersion {
		t.Fatalf("quic-go is %s; internal/h3 was checked against %s: re-check its fences", v, quicGoVersion)
	}
}

// TestConnUnusableCanary: quic-go's error for a request it could not open a stream for
// (the request was not sent) is recognised.
func TestConnUnusableCanary(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	c := dial(t, s.addr(), nil)
	c.Layer().Abort()
	req, _ := http.NewRequest("GET", s.url("/hello"), nil)
	_, err := c.QUICRoundTrip(req)
	if err == nil || !h3.IsConnUnusable(err) {
		t.Fatalf("quic-go's RoundTrip on a closed connection: got %v, want its errConnUnusable (\"http3: conn unusable: …\")", err)
	}
}

func TestClosingPeriod(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		s    quic.ConnectionStats
		want time.Duration
	}{
		{"variance dominates", quic.ConnectionStats{SmoothedRTT: 10 * ms, MeanDeviation: ms}, 3 * (10*ms + 4*ms)},
		{"granularity dominates", quic.ConnectionStats{SmoothedRTT: 10 * ms, MeanDeviation: 100 * time.Microsecond}, 3 * (10*ms + ms)},
		{"loopback", quic.ConnectionStats{SmoothedRTT: 200 * time.Microsecond, MeanDeviation: 50 * time.Microsecond}, 3 * (200*time.Microsecond + ms)},
		{"no RTT sample", quic.ConnectionStats{}, 600 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := h3.ClosingPeriod(tt.s); got != tt.want {
				t.Errorf("closingPeriod(srtt %v, rttvar %v) = %v, want %v", tt.s.SmoothedRTT, tt.s.MeanDeviation, got, tt.want)
			}
		})
	}
}

// TestGoAwayContextCanary: quic-go's ClientConn still has the unexported goAwayCtx that
// endwell reads to learn of the server's GOAWAY at once (TestServerGoAway proves it is
// cancelled then).
func TestGoAwayContextCanary(t *testing.T) {
	checkLeaks(t)
	s := startServer(t, serverOptions{})
	c := dial(t, s.addr(), nil)
	defer abort(c)
	if h3.GoAwayContext(c) == nil {
		t.Fatalf("quic-go %s: http3.ClientConn has no goAwayCtx of type context.Context: endwell learns of a GOAWAY only when the connection closes; re-check goAwayContext", quicGoVersion)
	}
}
