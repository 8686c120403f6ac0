package h3

import (
	"net/http"

	"github.com/quic-go/quic-go"
)

// Test hooks into the package's internals, for the tests of package h3_test.

var (
	IsConnUnusable = isConnUnusable
	ClosingPeriod  = closingPeriod
)

// QUICRoundTrip sends req straight through quic-go's ClientConn, bypassing Conn's checks.
func (c *Conn) QUICRoundTrip(req *http.Request) (*http.Response, error) { return c.cc.RoundTrip(req) }

// Stats returns the QUIC connection's statistics.
func (c *Conn) Stats() quic.ConnectionStats { return c.qc.ConnectionStats() }

// GoAwayContext returns what goAwayContext reads of c's quic-go ClientConn.
func GoAwayContext(c *Conn) interface{ Done() <-chan struct{} } {
	if ctx := goAwayContext(c.cc); ctx != nil {
		return ctx
	}
	return nil
}
