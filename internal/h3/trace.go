package h3

import (
	"context"

	"github.com/quic-go/quic-go"
	h3qlog "github.com/quic-go/quic-go/http3/qlog"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// The qlog seam: quic-go exports neither the peer's transport parameters nor the GOAWAY
// that its ClientConn received, but it records both as qlog events. When the user's QUIC
// configuration has a Tracer, endwell wraps it: the wrapper reads those two and passes
// every event on. Without one, endwell sets none: quic-go builds its events only for a
// tracer, and they cost a third of the throughput at 32 concurrent requests
// (BenchmarkHTTP3, 2026-12-02); the GOAWAY is then read from quic-go's ClientConn
// (goAwayContext) and the stream limit is DefaultMaxStreams.

// tracer returns the quic.Config.Tracer that endwell dials with, wrapping user's.
func (c *Conn) tracer(user func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace) func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	return func(ctx context.Context, isClient bool, id quic.ConnectionID) qlogwriter.Trace {
		t := &trace{c: c}
		if user != nil {
			t.user = user(ctx, isClient, id)
		}
		return t
	}
}

type trace struct {
	c    *Conn
	user qlogwriter.Trace // may be nil
}

func (t *trace) AddProducer() qlogwriter.Recorder {
	r := &recorder{c: t.c}
	if t.user != nil {
		r.user = t.user.AddProducer()
	}
	return r
}

// recorder is called by quic-go's goroutines, concurrently; it touches only atomics, and
// calls OnGoAway.
type recorder struct {
	c    *Conn
	user qlogwriter.Recorder // may be nil
}

func (r *recorder) RecordEvent(ev qlogwriter.Event) {
	switch e := ev.(type) {
	case qlog.ParametersSet:
		if e.Initiator == qlog.InitiatorRemote {
			r.c.peerMaxStreams.Store(e.InitialMaxStreamsBidi)
		}
	case h3qlog.FrameParsed:
		if _, ok := e.Frame.Frame.(h3qlog.GoAwayFrame); ok {
			r.c.noteGoAway()
		}
	}
	if r.user != nil {
		r.user.RecordEvent(ev)
	}
}

func (r *recorder) Close() error {
	if r.user != nil {
		return r.user.Close()
	}
	return nil
}
