//lint:file-ignore SA1019 built by Go 1.26, x/net's ClientConn is endwell's HTTP/2 engine, run over endwell's own wire: http.Transport.NewClientConn, its replacement, is Go 1.27's (engine_nethttp.go)

//go:build !go1.27

package h2

import (
	"net/http"

	"golang.org/x/net/http2"
)

// newClient starts x/net's client connection over w: built by Go 1.26, x/net's own engine
// (net/http's bundled copy is the same code).
func newClient(w *wire, cfg *Config, countError func(string)) (h2Client, error) {
	// x/net reads ExpectContinueTimeout (and nothing else it does not have itself) from
	// a net/http Transport linked to its own: a private one, never used for requests,
	// carries it. Its IdleConnTimeout stays 0: the pool times idle connections out, and
	// ends them with a GOAWAY.
	t1 := &http.Transport{
		DisableCompression:     cfg.DisableCompression,
		MaxResponseHeaderBytes: cfg.MaxHeaderBytes,
		ExpectContinueTimeout:  max(cfg.ExpectContinueTimeout, 0),
	}
	t2, err := http2.ConfigureTransports(t1)
	if err != nil {
		return nil, err
	}
	t2.DisableCompression = cfg.DisableCompression
	t2.MaxHeaderListSize = uint32(min(cfg.MaxHeaderBytes, 1<<32-1))
	// The pool hands a connection out only below the server's MAX_CONCURRENT_STREAMS;
	// x/net also holds a slot for each stream it reset until the server's next frame (its
	// PING's answer), and would fail a request in such a slot ("client conn not usable").
	// Strict, it waits for the slot instead: a round trip, on the connection the pool chose.
	t2.StrictMaxConcurrentStreams = true
	// x/net has no receive buffer settings: HTTP2's MaxReceiveBuffer* are not applied.
	c := cfg.engineConfig(countError)
	t2.ReadIdleTimeout = c.SendPingTimeout
	t2.PingTimeout = c.PingTimeout
	t2.CountError = c.CountError
	t2.WriteByteTimeout = c.WriteByteTimeout
	t2.MaxDecoderHeaderTableSize = uint32(c.MaxDecoderHeaderTableSize)
	t2.MaxEncoderHeaderTableSize = uint32(c.MaxEncoderHeaderTableSize)
	t2.MaxReadFrameSize = uint32(c.MaxReadFrameSize)
	cc, err := t2.NewClientConn(w)
	if err != nil {
		return nil, err
	}
	return xnetClient{cc}, nil
}

// xnetClient adapts x/net's ClientConn to h2Client.
type xnetClient struct{ *http2.ClientConn }

func (c xnetClient) MaxStreams() int { return int(c.State().MaxConcurrentStreams) }
