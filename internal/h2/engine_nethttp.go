//go:build go1.27

package h2

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
)

// newClient starts net/http's HTTP/2 client connection over w. Built by Go 1.27, x/net's
// ClientConn is a wrapper of net/http's own (golang/go#78064), whose locks and state hooks
// cost every request (a tenth of HTTP/2's throughput at 32 concurrent requests): endwell
// asks net/http for the connection itself, through the public NewClientConn. Its Transport
// is private to the connection, dials nothing but hands over w, and speaks HTTP/2 with
// prior knowledge (Protocols: unencrypted HTTP/2 alone), which frames exactly as HTTP/2 over
// TLS: the TLS session is w's, below, and its state reaches responses through w's
// ConnectionState.
func newClient(w *wire, cfg *Config, countError func(string)) (h2Client, error) {
	var handed atomic.Bool
	t1 := &http.Transport{
		DisableCompression:     cfg.DisableCompression,
		MaxResponseHeaderBytes: cfg.MaxHeaderBytes,
		ExpectContinueTimeout:  max(cfg.ExpectContinueTimeout, 0),
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if !handed.CompareAndSwap(false, true) {
				return nil, errDialOnce
			}
			return w, nil
		},
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t1.Protocols = &p
	c := cfg.engineConfig(countError)
	// The pool hands a connection out only below the server's MAX_CONCURRENT_STREAMS;
	// the engine also holds a slot for each stream it reset until the server's next
	// frame: a request in such a slot waits for it.
	c.StrictMaxConcurrentRequests = true
	t1.HTTP2 = &c
	cc, err := t1.NewClientConn(context.Background(), "http", "endwell.invalid:80")
	if err != nil {
		return nil, err
	}
	return netHTTPClient{cc}, nil
}

// errDialOnce is what a second dial of newClient's Transport gets: it has one connection.
var errDialOnce = errors.New("endwell: HTTP/2 engine dials nothing")

// netHTTPClient adapts net/http's ClientConn to h2Client.
type netHTTPClient struct{ *http.ClientConn }

// MaxStreams is the server's MAX_CONCURRENT_STREAMS, as net/http's ClientConn tells it:
// what is available plus what is in flight.
func (c netHTTPClient) MaxStreams() int {
	if c.Err() != nil {
		return 0
	}
	return c.Available() + c.InFlight()
}
