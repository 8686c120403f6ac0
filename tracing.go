package endwell

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/endwell/endwell/shutdown"
)

// This file is the only one that imports OpenTelemetry. It turns every teardown record into
// a span named endwell.conn.close, and keeps the connection metrics of the OpenTelemetry HTTP
// semantic conventions plus endwell's own counter of closes.

const instrumentationName = "github.com/endwell/endwell"

// The types of Transport's TracerProvider and MeterProvider fields: aliases, so that
// transport.go need not import OpenTelemetry.
type (
	tracerProvider = trace.TracerProvider // go.opentelemetry.io/otel/trace.TracerProvider
	meterProvider  = metric.MeterProvider // go.opentelemetry.io/otel/metric.MeterProvider
)

// Span and metric attribute keys of endwell's own.
const (
	attrCloseMode           = attribute.Key("endwell.close.mode")
	attrCloseReason         = attribute.Key("endwell.close.reason")
	attrCloseOutcome        = attribute.Key("endwell.close.outcome")
	attrCloseNotifySent     = attribute.Key("endwell.tls.close_notify.sent")
	attrCloseNotifyReceived = attribute.Key("endwell.tls.close_notify.received")
	attrGoAwaySent          = attribute.Key("endwell.h2.goaway.sent")
	attrFINSent             = attribute.Key("endwell.tcp.fin.sent")
	attrFINReceived         = attribute.Key("endwell.tcp.fin.received")
	attrRSTReceived         = attribute.Key("endwell.tcp.rst.received")
	attrDrainBytes          = attribute.Key("endwell.drain.bytes")
	attrQUICCloseCode       = attribute.Key("endwell.quic.close.code")
	attrQUICClosingPeriod   = attribute.Key("endwell.quic.closing_period")
)

// telemetry holds the transport's tracer and instruments, made once by init.
type telemetry struct {
	tracer    trace.Tracer
	open      metric.Int64UpDownCounter // http.client.open_connections
	duration  metric.Float64Histogram   // http.client.connection.duration
	closes    metric.Int64Counter       // endwell.client.connection.closes
	teardowns metric.Float64Histogram   // endwell.client.connection.teardown.duration

	// closeOpts caches the closes counter's attribute sets: building one (sorting and
	// hashing a dozen attributes) cost more than the rest of a report. Keyed by
	// closeOptKey; as many entries as the counter has series, up to maxCloseOpts.
	closeOpts     sync.Map
	closeOptCount atomic.Int32
}

// maxCloseOpts bounds the cache of the closes counter's attribute sets; past it, sets
// are built for each report (a program talking to that many hosts pays as before).
const maxCloseOpts = 4096

type closeOptKey struct {
	conn attribute.Distinct // the connection's own attributes
	key  CloseKey
}

// closeOpt returns the closes counter's option for a connection with attributes set
// (its record set) ending as k.
func (tel *telemetry) closeOpt(ct *connTelemetry, k CloseKey) metric.AddOption {
	ck := closeOptKey{ct.set.Equivalent(), k}
	if o, ok := tel.closeOpts.Load(ck); ok {
		return o.(metric.AddOption)
	}
	attrs := make([]attribute.KeyValue, 0, len(ct.attrs)+3)
	attrs = append(attrs, ct.attrs...)
	attrs = append(attrs, attrCloseMode.String(k.Mode), attrCloseReason.String(k.Reason),
		attrCloseOutcome.String(k.Outcome))
	o := metric.WithAttributeSet(attribute.NewSet(attrs...))
	if tel.closeOptCount.Load() < maxCloseOpts {
		if _, loaded := tel.closeOpts.LoadOrStore(ck, o); !loaded {
			tel.closeOptCount.Add(1)
		}
	}
	return o
}

func (t *Transport) initTelemetry() {
	tp := t.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := t.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	tel := &t.tel
	tel.tracer = tp.Tracer(instrumentationName)
	m := mp.Meter(instrumentationName)
	// Instrument errors leave a working no-op instrument behind: telemetry never fails
	// the transport.
	tel.open, _ = m.Int64UpDownCounter("http.client.open_connections",
		metric.WithDescription("Number of outbound HTTP connections that are currently active or idle on the client."),
		metric.WithUnit("{connection}"))
	tel.duration, _ = m.Float64Histogram("http.client.connection.duration",
		metric.WithDescription("The duration of the successfully established outbound HTTP connections."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 120, 300))
	tel.closes, _ = m.Int64Counter("endwell.client.connection.closes",
		metric.WithDescription("Connections closed by endwell, by mode, reason and outcome."),
		metric.WithUnit("{connection}"))
	tel.teardowns, _ = m.Float64Histogram("endwell.client.connection.teardown.duration",
		metric.WithDescription("How long connection teardowns took, from the decision to close to the closed socket."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
}

// connTelemetry is a connection's precomputed attributes, so that state changes on the
// request path allocate nothing.
type connTelemetry struct {
	attrs     []attribute.KeyValue // server.address, server.port, network.peer.address, network.protocol.version
	set       attribute.Set        // attrs as a set
	activeAdd []metric.AddOption   // attrs + http.connection.state=active
	idleAdd   []metric.AddOption   // attrs + http.connection.state=idle
	record    []metric.RecordOption
	// lastRequest is the span context of the last request that used the connection,
	// stored only when it is valid: the teardown span links to it.
	lastRequest atomic.Pointer[trace.SpanContext]
}

// connState is where a connection stands in the open_connections metric.
type connState int32

const (
	stateNone connState = iota
	stateActive
	stateIdle
	stateGone
)

func newConnTelemetry(serverAddr string, peer net.Addr, protoVersion string) *connTelemetry {
	host, port, _ := net.SplitHostPort(serverAddr)
	p, _ := strconv.Atoi(port)
	attrs := []attribute.KeyValue{
		semconv.ServerAddress(host),
		semconv.ServerPort(p),
		semconv.NetworkProtocolVersion(protoVersion),
	}
	if peer != nil {
		if ph, _, err := net.SplitHostPort(peer.String()); err == nil {
			attrs = append(attrs, semconv.NetworkPeerAddress(ph))
		}
	}
	with := func(kv attribute.KeyValue) attribute.Set {
		all := make([]attribute.KeyValue, 0, len(attrs)+1)
		return attribute.NewSet(append(append(all, attrs...), kv)...)
	}
	set := attribute.NewSet(attrs...)
	return &connTelemetry{
		attrs:     attrs,
		set:       set,
		activeAdd: []metric.AddOption{metric.WithAttributeSet(with(semconv.HTTPConnectionStateActive))},
		idleAdd:   []metric.AddOption{metric.WithAttributeSet(with(semconv.HTTPConnectionStateIdle))},
		record:    []metric.RecordOption{metric.WithAttributeSet(set)},
	}
}

// setState moves pc in the open_connections metric. It is called by the goroutine that owns
// the connection at that moment.
func (pc *conn) setState(s connState) {
	old := connState(pc.state.Swap(int32(s)))
	if old == s || old == stateGone {
		if old == stateGone {
			pc.state.Store(int32(stateGone))
		}
		return
	}
	tel, ct := &pc.t.tel, pc.tel
	ctx := context.Background()
	switch old {
	case stateActive:
		tel.open.Add(ctx, -1, ct.activeAdd...)
	case stateIdle:
		tel.open.Add(ctx, -1, ct.idleAdd...)
	}
	switch s {
	case stateActive:
		tel.open.Add(ctx, 1, ct.activeAdd...)
	case stateIdle:
		tel.open.Add(ctx, 1, ct.idleAdd...)
	}
}

// noteRequest remembers the span of a request that uses pc, for the teardown span's link.
func (pc *conn) noteRequest(ctx context.Context) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		p := new(trace.SpanContext) // allocated only when there is a span to link to
		*p = sc
		pc.tel.lastRequest.Store(p)
	}
}

// traceClose turns a teardown record into a span and metrics. ctx is the context the teardown
// ran under: Shutdown's, whose span then parents the teardown span; otherwise the span is a
// root span linked to the last request that used the connection. Recording ignores ctx's
// cancellation and never blocks the teardown.
func (pc *conn) traceClose(ctx context.Context, r *shutdown.Record) {
	tel, ct := &pc.t.tel, pc.tel
	end := r.Start.Add(r.Duration)
	attrs := make([]attribute.KeyValue, 0, len(ct.attrs)+11)
	attrs = append(attrs, ct.attrs...)
	attrs = append(attrs,
		attrCloseMode.String(r.Mode.String()),
		attrCloseReason.String(r.Reason),
		attrCloseOutcome.String(r.Outcome.String()),
		attrCloseNotifySent.Bool(r.CloseNotifySent),
		attrCloseNotifyReceived.Bool(r.CloseNotifyReceived),
		attrGoAwaySent.Bool(r.GoAwaySent),
		attrFINSent.Bool(r.FINSent),
		attrFINReceived.Bool(r.FINReceived),
		attrRSTReceived.Bool(r.RSTReceived),
		attrDrainBytes.Int64(r.DrainBytes),
	)
	if r.ConnectionCloseSent {
		// QUIC: the CONNECTION_CLOSE's code, and how long the closing period lasted (s).
		attrs = append(attrs,
			attrQUICCloseCode.Int64(int64(r.QUICCloseCode)),
			attrQUICClosingPeriod.Float64(r.ClosingPeriod.Seconds()))
	}
	if r.Outcome == shutdown.Failed && r.Err != nil {
		attrs = append(attrs, semconv.ErrorType(errorTypeOf(r.Err)))
	}
	opts := []trace.SpanStartOption{
		trace.WithTimestamp(r.Start),
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrs...),
	}
	parent := context.WithoutCancel(ctx)
	if !trace.SpanContextFromContext(parent).IsValid() {
		parent = context.Background()
		opts = append(opts, trace.WithNewRoot())
		if sc := ct.lastRequest.Load(); sc != nil {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: *sc}))
		}
	}
	_, span := tel.tracer.Start(parent, "endwell.conn.close", opts...)
	if span.IsRecording() {
		for _, ev := range r.Events {
			span.AddEvent(ev.Step.String(), trace.WithTimestamp(ev.At))
		}
		if r.Outcome == shutdown.Failed {
			span.SetStatus(codes.Error, errString(r.Err))
		}
	}
	span.End(trace.WithTimestamp(end))

	mctx := context.Background()
	tel.duration.Record(mctx, end.Sub(pc.created).Seconds(), ct.record...)
	tel.teardowns.Record(mctx, r.Duration.Seconds(), ct.record...)
	tel.closes.Add(mctx, 1, tel.closeOpt(ct, CloseKey{r.Mode.String(), r.Reason, r.Outcome.String()}))
}

// errorTypeOf names an error for error.type: the exported type or sentinel when endwell has
// one, else semconv's own naming.
func errorTypeOf(err error) error {
	switch {
	case errors.Is(err, shutdown.ErrBudget):
		return errTypeNamed{"budget_exceeded"}
	case errors.Is(err, shutdown.ErrDrainLimit):
		return errTypeNamed{"drain_limit"}
	}
	return err
}

type errTypeNamed struct{ name string }

func (e errTypeNamed) Error() string     { return e.name }
func (e errTypeNamed) ErrorType() string { return e.name }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
