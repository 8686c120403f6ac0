// Command endwell shows how HTTP connections end.
//
// With no arguments it starts embedded loopback TLS servers that report what they see on the
// wire (close_notify or not, FIN or RST) and an HTTP/3 server that reports the QUIC frames it
// receives (CONNECTION_CLOSE, stream resets) and whether the client's closing period answers
// a late packet, plays each ending of endwell's contract through an [endwell.Transport], and
// prints one row per connection: why it closed, how, what each side sent, and what the server
// saw. -compare plays the same scenarios through [net/http.Transport] as well, so that the
// difference is visible.
//
// With URLs it fetches each one with endwell, shuts the transport down, and reports how each
// connection ended: whether the server answers close_notify, how long its goodbye took, and
// whether a GOAWAY was sent. -h3 does the same over HTTP/3 alone: endwell's CONNECTION_CLOSE
// and its closing period. -n and -c turn that into a small load test.
//
// Usage:
//
//	endwell [flags]            play the embedded scenarios
//	endwell [flags] URL...     fetch URLs and report how their connections ended
//	endwell -h3 [flags] URL... the same over HTTP/3 (QUIC)
//
// Run endwell -h for the flags.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a request, a scenario or a server failed
	exitUsage   = 2 // bad flags or arguments
)

func main() {
	// quic-go logs a warning on stderr when it cannot grow a UDP socket's buffers to
	// 7 MB (the kernel's limit is lower on most machines): it is about throughput, and
	// would only clutter endwell's tables. Set the variable to false to see it.
	if _, ok := os.LookupEnv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"); !ok {
		os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the parsed command line.
type config struct {
	compare  bool
	json     bool
	h3       bool
	n, c     int
	timeout  time.Duration
	budget   time.Duration
	insecure bool
	urls     []string
	// progressOut is where -n draws its progress bar: stdout when it is a terminal, else nil.
	progressOut io.Writer
}

const usageText = `endwell shows how HTTP connections end: who said goodbye, how, and what the other side saw.

Usage:
  endwell [flags]             play each ending of endwell's contract against embedded
                              loopback TLS and QUIC servers, one row per connection
  endwell [flags] URL...      fetch each URL with endwell, shut down, and report how
                              each connection ended
  endwell -h3 [flags] URL...  the same over HTTP/3 alone (QUIC, no TCP)

With no URL, endwell starts local TLS servers that report what they receive on the wire
(close_notify or not, then FIN or RST), and a local HTTP/3 server that reports the QUIC
frames it receives (CONNECTION_CLOSE and its code, STOP_SENDING, RESET_STREAM) and whether
the client's closing period answers a late packet. It plays: a finished exchange then an
idle close, an idle timeout, a body closed early, a cancelled request, a server's
Connection: close, a server closing an idle connection, a server's GOAWAY, Shutdown
against a peer that never answers close_notify and against one that has stopped reading
(forced at a 300ms budget), and Close, over HTTP/1.1, HTTP/2 and HTTP/3 where the story
applies. Nothing leaves the machine; it takes about a second.

With URLs, endwell GETs each one (redirects are not followed), then shuts the transport
down and reads its teardown records: does the server answer close_notify, how long did its
goodbye take, was a GOAWAY sent. With -h3, over HTTP/3: endwell's CONNECTION_CLOSE
(H3_NO_ERROR) and whether its closing period ran its course, or the server's close first.

Columns:
  REASON, MODE, OUTCOME  why the connection closed, graceful or abort, and how it went
                         (clean: every goodbye exchanged, close_notify and FIN both ways
                         and endwell's GOAWAY over HTTP/2, with no reset from the peer;
                         over HTTP/3 endwell's CONNECTION_CLOSE and a closing period that
                         ran its course, or the server's CONNECTION_CLOSE;
                         peer_silent: not all of them, and no failure of endwell's: most
                         often the peer closed without close_notify, or it reset the
                         connection rather than read endwell's; timed_out: forced at the
                         budget; aborted; failed: a write, a read or the peer's data broke
                         the goodbye)
  NOTIFY, FIN            TLS close_notify and TCP FIN: sent by endwell / received from
                         the peer; +RST: the peer then reset the connection (it had
                         closed its socket without reading endwell's goodbye); "-" for
                         HTTP/3
  GOAWAY                 HTTP/2 GOAWAY sent by endwell ("-" for HTTP/1.1 and HTTP/3)
  QUIC CLOSE, CLOSING    HTTP/3: the code of endwell's CONNECTION_CLOSE (0x100
                         H3_NO_ERROR for a goodbye, 0x10c H3_REQUEST_CANCELLED for an
                         abort; recv: the server's came first, and endwell sent nothing),
                         and its closing period (three probe timeouts in which late
                         packets are answered; no: a rapid close; cut: by the budget)
  DRAINED, TOOK          bytes read from the peer while closing; how long the close took
  SERVER SAW             how the embedded server saw the client end the connection

Flags:
`

const examplesText = `
Examples:
  endwell                                  the embedded scenarios
  endwell -compare                         the same, next to net/http.Transport
  endwell https://example.com/             does example.com answer close_notify?
  endwell -json https://example.com/ | jq  one JSON object per connection
  endwell -h3 https://cloudflare.com/      the same over HTTP/3: CONNECTION_CLOSE, closing period
  endwell -n 200 -c 8 https://localhost:8443/   200 requests, 8 at a time, then a summary
  endwell -insecure https://127.0.0.1:8443/     skip certificate verification

Exit status: 0 on success, 1 if a request or scenario failed, 2 for bad usage.
`

// run is main without the process: it parses args, does the work, writes to stdout and
// stderr, and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("endwell", flag.ContinueOnError)
	var cfg config
	fs.BoolVar(&cfg.compare, "compare", false, "play the embedded scenarios through net/http.Transport too, side by side (no URL)")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object per connection (and a summary object with -n) instead of tables")
	fs.BoolVar(&cfg.h3, "h3", false, "fetch the URLs over HTTP/3 alone: QUIC, no TCP fallback, no proxy (https:// URLs)")
	fs.IntVar(&cfg.n, "n", 0, "send `N` requests in all, spread over the URLs, then print a summary (latency, closes by outcome)")
	fs.IntVar(&cfg.c, "c", 1, "with -n, run `C` requests at a time")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "bound each request, from dial to the last byte of the body")
	fs.DurationVar(&cfg.budget, "budget", 2*time.Second, "the budget of each graceful close (Transport.ShutdownTimeout): a goodbye is cut off after it")
	fs.BoolVar(&cfg.insecure, "insecure", false, "skip TLS certificate verification")
	fs.BoolVar(&cfg.insecure, "k", false, "alias of -insecure")
	// The flag package's own messages are replaced by ours: the full text for -h, on
	// stdout; the error and a hint for a bad flag, on stderr.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, usageText)
			fs.PrintDefaults()
			fmt.Fprint(stdout, examplesText)
			return exitOK
		}
		fmt.Fprintf(stderr, "endwell: %v\nRun 'endwell -h' for usage.\n", err)
		return exitUsage
	}
	cfg.urls = fs.Args()
	if err := cfg.check(); err != nil {
		fmt.Fprintf(stderr, "endwell: %v\nRun 'endwell -h' for usage.\n", err)
		return exitUsage
	}
	if f, ok := stdout.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			cfg.progressOut = stdout
		}
	}

	ctx := context.Background()
	if len(cfg.urls) == 0 {
		return runScenarios(ctx, &cfg, stdout, stderr)
	}
	return runFetch(ctx, &cfg, stdout, stderr)
}

// check validates flag combinations and the URLs.
func (cfg *config) check() error {
	switch {
	case cfg.compare && len(cfg.urls) > 0:
		return errors.New("-compare plays the embedded scenarios: it takes no URL")
	case cfg.n < 0:
		return fmt.Errorf("-n %d: want 0 or more requests", cfg.n)
	case cfg.c < 1:
		return fmt.Errorf("-c %d: want 1 or more concurrent requests", cfg.c)
	case cfg.n > 0 && len(cfg.urls) == 0:
		return errors.New("-n needs at least one URL")
	case cfg.h3 && len(cfg.urls) == 0:
		return errors.New("-h3 probes servers over HTTP/3: give at least one https:// URL")
	case cfg.timeout <= 0:
		return fmt.Errorf("-timeout %v: want a positive duration", cfg.timeout)
	case cfg.budget <= 0:
		return fmt.Errorf("-budget %v: want a positive duration", cfg.budget)
	}
	for _, u := range cfg.urls {
		if err := checkURL(u); err != nil {
			return err
		}
		if cfg.h3 && !strings.HasPrefix(strings.ToLower(u), "https://") {
			return fmt.Errorf("-h3: %q is not an https:// URL: HTTP/3 runs over QUIC, with TLS", u)
		}
	}
	return nil
}

// teardown is how one connection ended, read from endwell's endwell.conn.close span.
// Its JSON field names are stable.
type teardown struct {
	Server              string    `json:"server"` // host:port
	Protocol            string    `json:"protocol"`
	Reason              string    `json:"reason"`
	Mode                string    `json:"mode"`
	Outcome             string    `json:"outcome"`
	CloseNotifySent     bool      `json:"close_notify_sent"`
	CloseNotifyReceived bool      `json:"close_notify_received"`
	GoAwaySent          bool      `json:"goaway_sent"`
	FINSent             bool      `json:"fin_sent"`
	FINReceived         bool      `json:"fin_received"`
	RSTReceived         bool      `json:"rst_received"`
	DrainBytes          int64     `json:"drain_bytes"`
	Start               time.Time `json:"start"`
	DurationMS          float64   `json:"duration_ms"`
	ErrorType           string    `json:"error_type,omitempty"`
	// The QUIC fields, for HTTP/3 connections only.
	*quicTeardown

	duration time.Duration
}

// quicTeardown is how an HTTP/3 connection ended on the wire: the CONNECTION_CLOSE, and the
// closing period after it. Its JSON field names are stable.
type quicTeardown struct {
	// ConnectionCloseSent says endwell's CONNECTION_CLOSE went out, with the code
	// QUICCloseCode (absent when none was sent).
	ConnectionCloseSent bool    `json:"connection_close_sent"`
	QUICCloseCode       *uint64 `json:"quic_close_code,omitempty"`
	// ConnectionCloseReceived says the server's CONNECTION_CLOSE came first: endwell
	// drained, sending nothing.
	ConnectionCloseReceived bool `json:"connection_close_received"`
	// ClosingPeriodMS is how long the socket was kept after endwell's CONNECTION_CLOSE,
	// answering late packets; ClosingPeriodOver says the period ran its course (a rapid
	// close has none, and the budget may cut one short).
	ClosingPeriodMS   float64 `json:"closing_period_ms"`
	ClosingPeriodOver bool    `json:"closing_period_over"`

	closingPeriod time.Duration
}

// teardownFromSpan reads a teardown span's attributes.
func teardownFromSpan(s sdktrace.ReadOnlySpan) teardown {
	var td teardown
	var quic quicTeardown
	var host string
	var port int64
	for _, kv := range s.Attributes() {
		v := kv.Value
		switch kv.Key {
		case "endwell.close.mode":
			td.Mode = v.AsString()
		case "endwell.close.reason":
			td.Reason = v.AsString()
		case "endwell.close.outcome":
			td.Outcome = v.AsString()
		case "endwell.tls.close_notify.sent":
			td.CloseNotifySent = v.AsBool()
		case "endwell.tls.close_notify.received":
			td.CloseNotifyReceived = v.AsBool()
		case "endwell.h2.goaway.sent":
			td.GoAwaySent = v.AsBool()
		case "endwell.tcp.fin.sent":
			td.FINSent = v.AsBool()
		case "endwell.tcp.fin.received":
			td.FINReceived = v.AsBool()
		case "endwell.tcp.rst.received":
			td.RSTReceived = v.AsBool()
		case "endwell.drain.bytes":
			td.DrainBytes = v.AsInt64()
		case "server.address":
			host = v.AsString()
		case "server.port":
			port = v.AsInt64()
		case "network.protocol.version":
			td.Protocol = protoName(v.AsString())
		case "error.type":
			td.ErrorType = v.String()
		case "endwell.quic.close.code":
			// Set only when endwell's CONNECTION_CLOSE went out (an abort's has no
			// connection_close_sent event).
			code := uint64(v.AsInt64())
			quic.ConnectionCloseSent, quic.QUICCloseCode = true, &code
		case "endwell.quic.closing_period":
			quic.closingPeriod = time.Duration(v.AsFloat64() * float64(time.Second))
		}
	}
	for _, ev := range s.Events() {
		switch ev.Name {
		case "connection_close_sent":
			quic.ConnectionCloseSent = true
		case "connection_close_received":
			quic.ConnectionCloseReceived = true
		case "closing_period_over":
			quic.ClosingPeriodOver = true
		}
	}
	if td.Protocol == "h3" {
		quic.ClosingPeriodMS = float64(quic.closingPeriod.Microseconds()) / 1000
		td.quicTeardown = &quic
	}
	td.Server = fmt.Sprintf("%s:%d", host, port)
	if strings.Contains(host, ":") {
		td.Server = fmt.Sprintf("[%s]:%d", host, port)
	}
	td.Start = s.StartTime()
	td.duration = s.EndTime().Sub(s.StartTime())
	td.DurationMS = float64(td.duration.Microseconds()) / 1000
	return td
}

// protoName turns network.protocol.version into an ALPN-style name.
func protoName(version string) string {
	switch version {
	case "1.1":
		return "http/1.1"
	case "2":
		return "h2"
	case "3":
		return "h3"
	case "":
		return "?"
	}
	return "http/" + version
}

// spanCollector is an in-memory span processor that keeps endwell's teardown spans.
type spanCollector struct {
	mu      sync.Mutex // guards the following
	spans   []sdktrace.ReadOnlySpan
	changed chan struct{} // closed and replaced when a span arrives
}

var _ sdktrace.SpanProcessor = (*spanCollector)(nil)

func newSpanCollector() *spanCollector { return &spanCollector{changed: make(chan struct{})} }

// tracerProvider returns a provider that feeds c, for a Transport's TracerProvider.
func (c *spanCollector) tracerProvider() *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(c))
}

func (c *spanCollector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (c *spanCollector) OnEnd(s sdktrace.ReadOnlySpan) {
	if s.Name() != "endwell.conn.close" {
		return
	}
	c.mu.Lock()
	c.spans = append(c.spans, s)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *spanCollector) Shutdown(context.Context) error   { return nil }
func (c *spanCollector) ForceFlush(context.Context) error { return nil }

// teardowns returns the teardowns collected so far, in the order they ended.
func (c *spanCollector) teardowns() []teardown {
	c.mu.Lock()
	spans := c.spans
	c.mu.Unlock()
	out := make([]teardown, len(spans))
	for i, s := range spans {
		out[i] = teardownFromSpan(s)
	}
	return out
}

// wait waits until at least n teardown spans have ended or ctx is done, and returns those
// collected.
func (c *spanCollector) wait(ctx context.Context, n int) ([]teardown, error) {
	for {
		c.mu.Lock()
		got, ch := len(c.spans), c.changed
		c.mu.Unlock()
		if got >= n {
			return c.teardowns(), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c.teardowns(), context.Cause(ctx)
		}
	}
}

// sentRecv renders a pair of goodbye flags: "sent+recv", "sent", "recv" or "no".
func sentRecv(sent, recv bool) string {
	switch {
	case sent && recv:
		return "sent+recv"
	case sent:
		return "sent"
	case recv:
		return "recv"
	}
	return "no"
}

// finCell renders the FIN column: sentRecv of the FINs, and "+RST" when the peer reset the
// connection (a peer that closed its socket answers what arrives after with a reset).
func finCell(td teardown) string {
	s := sentRecv(td.FINSent, td.FINReceived)
	if td.RSTReceived {
		s += "+RST"
	}
	return s
}

// goAwayCell renders the GOAWAY column: "-" where HTTP/1.1 has no GOAWAY.
func goAwayCell(td teardown) string {
	switch {
	case td.GoAwaySent:
		return "sent"
	case td.Protocol == "h2":
		return "no"
	}
	return "-"
}

// teardownCells renders a teardown's columns: PROTO, REASON, MODE, OUTCOME, NOTIFY, GOAWAY,
// FIN, then if quic QUIC CLOSE and CLOSING, then DRAINED and how long the close took.
func teardownCells(td teardown, quic bool) []string {
	notify, fin, drained := sentRecv(td.CloseNotifySent, td.CloseNotifyReceived), finCell(td), fmtBytes(td.DrainBytes)
	if td.quicTeardown != nil {
		// No TLS record layer, no TCP: nothing to say in these columns.
		notify, fin, drained = "-", "-", "-"
	}
	cells := []string{td.Protocol, td.Reason, td.Mode, td.Outcome, notify, goAwayCell(td), fin}
	if quic {
		cells = append(cells, quicCloseCell(td), closingCell(td))
	}
	return append(cells, drained, fmtDur(td.duration))
}

// quicCloseCell renders the QUIC CLOSE column: the code of endwell's CONNECTION_CLOSE,
// "recv" when the server's came first, "no" for neither (a QUIC idle timeout, a stateless
// reset), "-" for a connection over TCP.
func quicCloseCell(td teardown) string {
	q := td.quicTeardown
	switch {
	case q == nil:
		return "-"
	case q.ConnectionCloseSent && q.QUICCloseCode != nil:
		return fmt.Sprintf("%#x", *q.QUICCloseCode)
	case q.ConnectionCloseSent:
		return "sent"
	case q.ConnectionCloseReceived:
		return "recv"
	}
	return "no"
}

// closingCell renders the CLOSING column: how long endwell's closing period lasted when it
// ran its course, "cut" when the budget cut it short, "no" for a rapid close, "-" when no
// CONNECTION_CLOSE of endwell's went out.
func closingCell(td teardown) string {
	q := td.quicTeardown
	switch {
	case q == nil || !q.ConnectionCloseSent:
		return "-"
	case q.ClosingPeriodOver:
		return fmtDur(q.closingPeriod)
	case td.Mode == "graceful":
		return "cut"
	}
	return "no"
}

// fmtBytes renders a byte count briefly.
func fmtBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// fmtDur renders a duration with about three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// table aligns tab-separated columns, like a [tabwriter.Writer], and trims the padding at
// the end of each line.
type table struct {
	out io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) Write(p []byte) (int, error) { return t.tw.Write(p) }

// Flush writes the aligned table out.
func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	lines := strings.SplitAfter(t.buf.String(), "\n")
	t.buf.Reset()
	for _, l := range lines {
		nl := strings.HasSuffix(l, "\n")
		l = strings.TrimRight(l, " \n")
		if nl {
			l += "\n"
		}
		if _, err := io.WriteString(t.out, l); err != nil {
			return err
		}
	}
	return nil
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// countKey orders close counts for printing.
type countKey struct {
	mode, reason, outcome string
}

// closeCount is how many connections ended one way.
type closeCount struct {
	key countKey
	n   int
}

// closeCounts counts teardowns by mode, reason and outcome, most frequent first.
func closeCounts(tds []teardown) []closeCount {
	m := map[countKey]int{}
	for _, td := range tds {
		m[countKey{td.Mode, td.Reason, td.Outcome}]++
	}
	out := make([]closeCount, 0, len(m))
	for k, n := range m {
		out = append(out, closeCount{k, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n > out[j].n
		}
		a, b := out[i].key, out[j].key
		return a.mode+a.reason+a.outcome < b.mode+b.reason+b.outcome
	})
	return out
}
