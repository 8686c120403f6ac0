package endwell_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// newTLSWitness starts a TLS witness server for a test or an example.
func newTLSWitness(opts witness.Options) *witness.Server {
	opts.TLS = true
	s := witness.New(opts)
	if err := s.Start(); err != nil {
		panic(err)
	}
	return s
}

// spanAttrs renders the endwell attributes of a teardown span in a fixed order.
func spanAttrs(s sdktrace.ReadOnlySpan) string {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	var events []string
	for _, e := range s.Events() {
		events = append(events, e.Name)
	}
	return fmt.Sprintf("%s mode=%s reason=%s outcome=%s close_notify.sent=%v close_notify.received=%v fin.sent=%v events=%s",
		s.Name(), m["endwell.close.mode"].AsString(), m["endwell.close.reason"].AsString(),
		m["endwell.close.outcome"].AsString(), m["endwell.tls.close_notify.sent"].AsBool(),
		m["endwell.tls.close_notify.received"].AsBool(), m["endwell.tcp.fin.sent"].AsBool(),
		strings.Join(events, ","))
}

// A finished conversation ends gracefully when the transport shuts down: both goodbyes are
// exchanged, and the teardown span says so.
func Example_gracefulCloseSpan() {
	srv := newTLSWitness(witness.Options{})
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	t := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig(), TracerProvider: tp}
	client := &http.Client{Transport: t}
	resp, err := client.Get(srv.URL())
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	t.Shutdown(context.Background())

	for _, s := range rec.Ended() {
		fmt.Println(spanAttrs(s))
	}
	// Output:
	// endwell.conn.close mode=graceful reason=shutdown outcome=clean close_notify.sent=true close_notify.received=true fin.sent=true events=close_notify_sent,fin_sent,close_notify_received,fin_received
}

// A body closed before its end, with more left than the drain allows, aborts the
// connection: no close_notify, so the server cannot take the transfer as complete.
func Example_abortSpan() {
	srv := newTLSWitness(witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
		c.Respond(200, nil, strings.Repeat("x", 4<<20))
		return witness.KeepAlive
	}})
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	t := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig(), TracerProvider: tp}
	client := &http.Client{Transport: t}
	resp, err := client.Get(srv.URL())
	if err != nil {
		panic(err)
	}
	resp.Body.Close() // 4 MiB unread
	t.Shutdown(context.Background())

	for _, s := range rec.Ended() {
		fmt.Println(spanAttrs(s))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reps, _ := srv.WaitConns(ctx, 1)
	fmt.Println("server saw close_notify:", reps[0].CloseNotifyReceived)
	// Output:
	// endwell.conn.close mode=abort reason=body_closed_early outcome=aborted close_notify.sent=false close_notify.received=false fin.sent=false events=
	// server saw close_notify: false
}

func TestTeardownSpanParentAndLink(t *testing.T) {
	srv := newTLSWitness(witness.Options{})
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracer := tp.Tracer("test")

	tr := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig(), TracerProvider: tp}
	reqCtx, reqSpan := tracer.Start(context.Background(), "request")
	req, _ := http.NewRequestWithContext(reqCtx, "GET", srv.URL(), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	reqSpan.End()

	// CloseIdleConnections: no span in the context, so a root span linked to the request.
	tr.CloseIdleConnections()
	pollUntil(t, func() bool { return len(rec.Ended()) == 2 })
	var closeSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "endwell.conn.close" {
			closeSpan = s
		}
	}
	if closeSpan == nil {
		t.Fatal("no endwell.conn.close span")
	}
	if closeSpan.Parent().IsValid() {
		t.Errorf("got parent %v, want a root span", closeSpan.Parent())
	}
	if links := closeSpan.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != reqSpan.SpanContext().SpanID() {
		t.Errorf("got links %v, want one to the request span %v", links, reqSpan.SpanContext().SpanID())
	}

	// Shutdown with a span in its context: the teardown spans are its children.
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	shutCtx, shutSpan := tracer.Start(context.Background(), "shutdown")
	if err := tr.Shutdown(shutCtx); err != nil {
		t.Fatal(err)
	}
	shutSpan.End()
	var child sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "endwell.conn.close" && s.Parent().SpanID() == shutSpan.SpanContext().SpanID() {
			child = s
		}
	}
	if child == nil {
		t.Fatalf("no teardown span under the shutdown span; spans: %v", names(rec.Ended()))
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func TestConnectionMetrics(t *testing.T) {
	srv := newTLSWitness(witness.Options{})
	defer srv.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tr := &endwell.Transport{TLSClientConfig: srv.ClientTLSConfig(), MeterProvider: mp}

	get := func() {
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	get()
	if got := openConns(t, reader, "idle"); got != 1 {
		t.Errorf("got %d idle connections in http.client.open_connections, want 1", got)
	}
	if got := openConns(t, reader, "active"); got != 0 {
		t.Errorf("got %d active connections, want 0", got)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := openConns(t, reader, "idle"); got != 0 {
		t.Errorf("got %d idle connections after Shutdown, want 0", got)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	closes := findMetric(rm, "endwell.client.connection.closes")
	sum, ok := closes.Data.(metricdata.Sum[int64])
	if !ok || len(sum.DataPoints) != 1 {
		t.Fatalf("got %#v, want one data point of endwell.client.connection.closes", closes.Data)
	}
	dp := sum.DataPoints[0]
	reason, _ := dp.Attributes.Value("endwell.close.reason")
	outcome, _ := dp.Attributes.Value("endwell.close.outcome")
	if dp.Value != 1 || reason.AsString() != "shutdown" || outcome.AsString() != "clean" {
		t.Errorf("got %d closes reason=%s outcome=%s, want 1 shutdown clean", dp.Value, reason.AsString(), outcome.AsString())
	}
	if d := findMetric(rm, "http.client.connection.duration"); d.Name == "" {
		t.Error("no http.client.connection.duration")
	}
}

func openConns(t *testing.T, r *sdkmetric.ManualReader, state string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	m := findMetric(rm, "http.client.open_connections")
	sum, _ := m.Data.(metricdata.Sum[int64])
	var n int64
	for _, dp := range sum.DataPoints {
		if v, _ := dp.Attributes.Value("http.connection.state"); v.AsString() == state {
			n += dp.Value
		}
	}
	return n
}

func findMetric(rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	return metricdata.Metrics{}
}

// pollUntil polls cond for up to 5 seconds.
func pollUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
