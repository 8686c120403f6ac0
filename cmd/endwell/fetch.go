package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/endwell/endwell"
)

// This file fetches the URLs given on the command line, once each or as a small load, then
// shuts the transport down and reports how each connection ended.

// checkURL reports whether raw is a URL endwell can fetch, with a hint when it is not.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("malformed URL %q: %v", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "":
		return fmt.Errorf("URL %q has no scheme: did you mean https://%s ?", raw, strings.TrimPrefix(raw, "//"))
	default:
		if _, err := strconv.Atoi(u.Opaque); err == nil {
			return fmt.Errorf("URL %q has no scheme: did you mean https://%s ?", raw, raw)
		}
		return fmt.Errorf("unsupported scheme %q in %q: endwell fetches http:// and https:// URLs", u.Scheme, raw)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("URL %q has no host", raw)
	}
	return nil
}

// fetchResult is one request's outcome.
type fetchResult struct {
	url      string
	status   string
	code     int
	proto    string
	bytes    int64
	location string
	latency  time.Duration
	err      error
}

// fetcher sends the requests of one run through one endwell Transport.
type fetcher struct {
	cfg    *config
	client *http.Client
}

// fetch GETs u and reads the body to its end, within the -timeout.
func (f *fetcher) fetch(ctx context.Context, u string) fetchResult {
	res := fetchResult{url: u}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("User-Agent", "endwell")
	resp, err := f.client.Do(req)
	if err != nil {
		res.err = err
		res.latency = time.Since(start)
		return res
	}
	res.status, res.code, res.proto = resp.Status, resp.StatusCode, resp.Proto
	res.location = resp.Header.Get("Location")
	res.bytes, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	res.latency = time.Since(start)
	if err != nil {
		res.err = fmt.Errorf("reading the body: %w", err)
	}
	return res
}

// describe explains a request's failure in a sentence, with a hint where one helps.
func describe(err error, timeout time.Duration) string {
	var ue *url.Error
	host := "the server"
	if errors.As(err, &ue) {
		err = ue.Err
		if u, perr := url.Parse(ue.URL); perr == nil {
			host = u.Host
		}
	}
	var (
		de  *endwell.DialError
		dns *net.DNSError
		cve *tls.CertificateVerificationError
		re  tls.RecordHeaderError
		oe  *net.OpError
	)
	// A failed dial or handshake comes back as net/http returns it (a certificate error or
	// a record header error bare, a *net.OpError otherwise), with endwell's DialError
	// inside its chain where it has one.
	switch {
	case errors.As(err, &cve):
		return fmt.Sprintf("TLS handshake with %s failed: the server's certificate is not trusted: %v (use -insecure to skip verification)", host, cve.Err)
	case errors.As(err, &re), errors.Is(err, http.ErrSchemeMismatch):
		return fmt.Sprintf("TLS handshake with %s failed: the server does not speak TLS (try http://)", host)
	case errors.As(err, &de) && de.Op == "tls":
		switch {
		case de.Timeout():
			return fmt.Sprintf("TLS handshake with %s timed out", de.Addr)
		}
		return fmt.Sprintf("TLS handshake with %s failed: %v", de.Addr, de.Err)
	case errors.As(err, &de) && de.Op == "proxy":
		return fmt.Sprintf("proxy %s: %v", de.Addr, de.Err)
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot resolve host %q: %v", dns.Name, dns.Err)
	case errors.As(err, &de) && de.Op == "h3":
		var hs *quic.HandshakeTimeoutError
		var idle *quic.IdleTimeoutError
		if errors.As(err, &hs) || errors.As(err, &idle) || de.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Sprintf("QUIC handshake with %s timed out: nothing answered over UDP (does the server speak HTTP/3 on that port?)", de.Addr)
		}
		return fmt.Sprintf("QUIC handshake with %s failed: %v", de.Addr, de.Err)
	case errors.As(err, &de) && errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot connect to %s: connection refused", de.Addr)
	case errors.As(err, &de) && de.Timeout():
		return fmt.Sprintf("cannot connect to %s: timed out", de.Addr)
	case errors.As(err, &de):
		return fmt.Sprintf("cannot connect to %s: %v", de.Addr, de.Err)
	case errors.As(err, &oe) && oe.Op == "dial" && oe.Addr != nil:
		// A failed dial as net/http returns it, with no DialError in its chain.
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Sprintf("cannot connect to %s: connection refused", oe.Addr)
		case oe.Timeout():
			return fmt.Sprintf("cannot connect to %s: timed out", oe.Addr)
		}
		return fmt.Sprintf("cannot connect to %s: %v", oe.Addr, oe.Err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no complete response within %v (-timeout)", timeout)
	}
	return strings.TrimPrefix(err.Error(), "endwell: ")
}

// runFetch fetches the URLs, shuts down, and reports how each connection ended.
func runFetch(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	col := newSpanCollector()
	t := &endwell.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: cfg.insecure},
		TracerProvider:  col.tracerProvider(),
		ShutdownTimeout: cfg.budget,
	}
	if cfg.h3 {
		// HTTP/3 alone, no TCP. QUIC goes through no HTTP or SOCKS proxy: direct.
		t.HTTP3 = &endwell.HTTP3Config{Only: true}
		t.Proxy = nil
	}
	defer t.Close()
	f := &fetcher{cfg: cfg, client: &http.Client{
		Transport: t,
		// Report redirects rather than follow them: each URL is one exchange.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}

	var results []fetchResult
	var elapsed time.Duration
	if cfg.n > 0 {
		results, elapsed = f.load(ctx, cfg.urls, cfg.n, cfg.c, cfg.progressOut)
	} else {
		for _, u := range cfg.urls {
			r := f.fetch(ctx, u)
			results = append(results, r)
			if r.err == nil && !cfg.json {
				line := fmt.Sprintf("GET %s: %s, %s in %s (%s)", u, r.status, fmtBytes(r.bytes), fmtDur(r.latency), r.proto)
				if r.location != "" {
					line += ", Location: " + r.location + " (not followed)"
				}
				fmt.Fprintln(stdout, line)
			}
		}
	}

	code := exitOK
	failed := reportErrors(results, cfg, stderr)
	if failed > 0 {
		code = exitFailure
	}

	tds, err := shutdownAndCollect(ctx, t, col, cfg.budget)
	if err != nil {
		fmt.Fprintf(stderr, "endwell: %v\n", err)
		code = exitFailure
	}

	if cfg.json {
		for _, td := range tds {
			row := connRow{Kind: "connection", Client: clientEndwell, Protocol: td.Protocol, teardown: &td}
			if err := writeJSON(stdout, row); err != nil {
				fmt.Fprintf(stderr, "endwell: %v\n", err)
				return exitFailure
			}
		}
		if cfg.n > 0 {
			if err := writeJSON(stdout, newSummary(results, elapsed, tds, cfg.c)); err != nil {
				fmt.Fprintf(stderr, "endwell: %v\n", err)
				return exitFailure
			}
		}
		return code
	}

	if cfg.n > 0 {
		printSummary(stdout, newSummary(results, elapsed, tds, cfg.c))
	}
	printConnections(stdout, tds, cfg)
	return code
}

// reportErrors writes the failed requests to stderr, each distinct error once with a count,
// and returns how many failed.
func reportErrors(results []fetchResult, cfg *config, stderr io.Writer) int {
	type seen struct {
		msg string
		n   int
	}
	var order []*seen
	byMsg := map[string]*seen{}
	failed := 0
	for _, r := range results {
		if r.err == nil {
			continue
		}
		failed++
		msg := "GET " + r.url + ": " + describe(r.err, cfg.timeout)
		s := byMsg[msg]
		if s == nil {
			s = &seen{msg: msg}
			byMsg[msg] = s
			order = append(order, s)
		}
		s.n++
	}
	for i, s := range order {
		if i == 5 {
			fmt.Fprintf(stderr, "endwell: ... and %d more kinds of error\n", len(order)-i)
			break
		}
		if s.n > 1 {
			fmt.Fprintf(stderr, "endwell: %s (%d times)\n", s.msg, s.n)
		} else {
			fmt.Fprintf(stderr, "endwell: %s\n", s.msg)
		}
	}
	return failed
}

// shutdownAndCollect shuts t down gracefully and returns the teardown of every connection
// it ever opened, in the order they ended.
func shutdownAndCollect(ctx context.Context, t *endwell.Transport, col *spanCollector, budget time.Duration) ([]teardown, error) {
	// Shutdown is over within the budget; the extra second is for the reports to land.
	ctx, cancel := context.WithTimeoutCause(ctx, budget+time.Second,
		errors.New("connections still closing after the budget"))
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		return col.teardowns(), fmt.Errorf("shutdown: %w", err)
	}
	// A teardown is counted in Stats before its span ends: wait for the spans to catch up.
	for {
		st := t.Stats()
		var closed uint64
		for _, n := range st.Closes {
			closed += n
		}
		if st.Active+st.Idle+st.Closing == 0 && uint64(len(col.teardowns())) >= closed {
			return col.teardowns(), nil
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return col.teardowns(), context.Cause(ctx)
		}
	}
}

// printConnections prints the connection table and, per server, what its goodbyes say.
func printConnections(w io.Writer, tds []teardown, cfg *config) {
	if len(tds) == 0 {
		fmt.Fprintln(w, "No connection was opened.")
		return
	}
	fmt.Fprintf(w, "\nHow the connections ended (endwell's goodbye budget: %v):\n", cfg.budget)
	// The QUIC columns only when a connection was HTTP/3.
	quicCols := slices.ContainsFunc(tds, func(td teardown) bool { return td.quicTeardown != nil })
	const maxRows = 20
	if len(tds) <= maxRows {
		tw := newTable(w)
		if quicCols {
			fmt.Fprintln(tw, "SERVER\tPROTO\tREASON\tMODE\tOUTCOME\tNOTIFY\tGOAWAY\tFIN\tQUIC CLOSE\tCLOSING\tDRAINED\tGOODBYE")
		} else {
			fmt.Fprintln(tw, "SERVER\tPROTO\tREASON\tMODE\tOUTCOME\tNOTIFY\tGOAWAY\tFIN\tDRAINED\tGOODBYE")
		}
		for _, td := range tds {
			fmt.Fprintln(tw, td.Server+"\t"+strings.Join(teardownCells(td, quicCols), "\t"))
		}
		tw.Flush()
	} else {
		fmt.Fprintf(w, "(%d connections: -json lists each one)\n", len(tds))
	}
	fmt.Fprintln(w)
	for _, v := range verdicts(tds, cfg.budget) {
		fmt.Fprintln(w, v)
	}
	if !quicCols || slices.ContainsFunc(tds, func(td teardown) bool { return td.quicTeardown == nil }) {
		fmt.Fprintln(w, "NOTIFY and FIN: TLS close_notify and TCP FIN, sent by endwell / received from the server;")
		fmt.Fprintln(w, "+RST: the server then reset the connection (it had closed its socket).")
	}
	if quicCols {
		fmt.Fprintln(w, quicLegend)
	}
}

// verdicts says, per server, how it answers endwell's goodbyes.
func verdicts(tds []teardown, budget time.Duration) []string {
	type server struct {
		name                                      string
		graceful, answered, finOnly, silent, slow int
		goaway                                    int
		plain                                     bool
		took                                      []time.Duration
		aborted, serverFirst                      []string
		// HTTP/3: closingOver counts the graceful endings whose closing period ran its
		// course, closingCut those the budget cut short.
		closingOver, closingCut int
		// resetAnswer counts the connections the server closed first whose answer,
		// endwell's close_notify and FIN, it reset: it had closed its socket.
		resetAnswer int
	}
	var order []*server
	by := map[string]*server{}
	for _, td := range tds {
		s := by[td.Server]
		if s == nil {
			s = &server{name: td.Server}
			by[td.Server] = s
			order = append(order, s)
		}
		if td.GoAwaySent {
			s.goaway++
		}
		switch {
		case td.Mode != "graceful":
			s.aborted = append(s.aborted, td.Reason)
			continue
		case td.Reason == "server_close" || td.Reason == "peer_closed" || td.Reason == "goaway_received":
			s.serverFirst = append(s.serverFirst, td.Reason)
			if td.RSTReceived && td.CloseNotifySent {
				s.resetAnswer++
			}
			continue
		}
		s.graceful++
		s.took = append(s.took, td.duration)
		if q := td.quicTeardown; q != nil {
			// A QUIC peer answers a CONNECTION_CLOSE with silence (it drains): what
			// there is to say is whether the closing period ran its course.
			if q.ClosingPeriodOver {
				s.closingOver++
			} else {
				s.closingCut++
			}
			continue
		}
		s.plain = s.plain || !td.CloseNotifySent && td.FINSent
		switch {
		case td.CloseNotifyReceived:
			s.answered++
		case td.Outcome == "timed_out":
			s.slow++
		case td.Outcome == "clean" || td.FINReceived:
			s.finOnly++
		default:
			s.silent++
		}
	}
	var out []string
	for _, s := range order {
		var parts []string
		if s.graceful > 0 {
			slices.Sort(s.took)
			took := fmtDur(percentile(s.took, 0.5))
			if len(s.took) > 1 {
				took += " (median)"
			}
			of := func(n int) string {
				if s.graceful == 1 {
					return ""
				}
				return fmt.Sprintf(" on %d of %d connections", n, s.graceful)
			}
			if s.answered > 0 {
				parts = append(parts, "answers close_notify"+of(s.answered))
			}
			if s.finOnly > 0 {
				if s.plain {
					parts = append(parts, "answers FIN (plain TCP, no TLS)"+of(s.finOnly))
				} else {
					parts = append(parts, "does not answer close_notify, closes TCP without it"+of(s.finOnly))
				}
			}
			if s.silent > 0 {
				parts = append(parts, "closes without a goodbye"+of(s.silent))
			}
			if s.slow > 0 {
				parts = append(parts, fmt.Sprintf("did not answer within the %v budget, socket closed underneath%s", budget, of(s.slow)))
			}
			if s.closingOver > 0 {
				parts = append(parts, "endwell's CONNECTION_CLOSE sent, its closing period ran its course"+of(s.closingOver))
			}
			if s.closingCut > 0 {
				parts = append(parts, fmt.Sprintf("closing period cut short at the %v budget%s", budget, of(s.closingCut)))
			}
			parts = append(parts, "goodbye took "+took)
			if s.goaway > 0 {
				parts = append(parts, "GOAWAY sent")
			}
		}
		if len(s.serverFirst) > 0 {
			parts = append(parts, fmt.Sprintf("closed %d itself (%s)", len(s.serverFirst), strings.Join(dedup(s.serverFirst), ", ")))
			if s.resetAnswer > 0 {
				parts = append(parts, fmt.Sprintf("reset endwell's answering close_notify on %d of them (it closes its socket right after its own)", s.resetAnswer))
			}
		}
		if len(s.aborted) > 0 {
			parts = append(parts, fmt.Sprintf("%d aborted by endwell (%s)", len(s.aborted), strings.Join(dedup(s.aborted), ", ")))
		}
		out = append(out, s.name+": "+strings.Join(parts, "; "))
	}
	return out
}

func dedup(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}

// percentile returns the p-th percentile (nearest rank) of sorted ds.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// load sends n requests over urls, c at a time, drawing a progress bar on progress if it is
// not nil. It returns the results in completion order and how long the load took.
func (f *fetcher) load(ctx context.Context, urls []string, n, c int, progress io.Writer) ([]fetchResult, time.Duration) {
	results := make([]fetchResult, n)
	var next, done atomic.Int64
	start := time.Now()

	stopBar := make(chan struct{})
	var bar sync.WaitGroup
	if progress != nil {
		// The progress bar's goroutine redraws every 100ms until load closes stopBar.
		bar.Go(func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				drawBar(progress, int(done.Load()), n, time.Since(start))
				select {
				case <-tick.C:
				case <-stopBar:
					fmt.Fprint(progress, "\r\033[K")
					return
				}
			}
		})
	}

	var wg sync.WaitGroup
	for range min(c, n) {
		// A worker sends requests until all n are taken; load waits for every worker.
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				results[i] = f.fetch(ctx, urls[i%len(urls)])
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopBar)
	bar.Wait()
	return results, elapsed
}

// drawBar draws "[=====>    ] done/n  pct%  elapsed" over the current line.
func drawBar(w io.Writer, done, n int, elapsed time.Duration) {
	const width = 30
	fill := done * width / n
	b := strings.Repeat("=", fill)
	if fill < width {
		b += ">" + strings.Repeat(" ", width-fill-1)
	}
	fmt.Fprintf(w, "\r[%s] %d/%d %3d%% %s", b, done, n, done*100/n, elapsed.Round(100*time.Millisecond))
}

// summary is the outcome of a load, and its JSON object (kind "summary").
type summary struct {
	Kind        string          `json:"kind"` // "summary"
	Requests    int             `json:"requests"`
	OK          int             `json:"ok"`
	Failed      int             `json:"failed"`
	Concurrency int             `json:"concurrency"`
	DurationMS  float64         `json:"duration_ms"`
	PerSecond   float64         `json:"requests_per_second"`
	Status      map[string]int  `json:"status"`
	LatencyMS   latencySummary  `json:"latency_ms"`
	Connections int             `json:"connections"`
	Closes      []closeCountRow `json:"closes"`
}

type latencySummary struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type closeCountRow struct {
	Mode    string `json:"mode"`
	Reason  string `json:"reason"`
	Outcome string `json:"outcome"`
	Count   int    `json:"count"`
}

func newSummary(results []fetchResult, elapsed time.Duration, tds []teardown, c int) summary {
	s := summary{Kind: "summary", Requests: len(results), Concurrency: c, Status: map[string]int{}, Connections: len(tds)}
	s.DurationMS = ms(elapsed)
	if elapsed > 0 {
		s.PerSecond = math.Round(float64(len(results))/elapsed.Seconds()*10) / 10
	}
	var lat []time.Duration
	for _, r := range results {
		if r.err != nil {
			s.Failed++
			continue
		}
		s.OK++
		s.Status[strconv.Itoa(r.code)]++
		lat = append(lat, r.latency)
	}
	slices.Sort(lat)
	s.LatencyMS = latencySummary{
		P50: ms(percentile(lat, 0.50)),
		P90: ms(percentile(lat, 0.90)),
		P99: ms(percentile(lat, 0.99)),
		Max: ms(percentile(lat, 1)),
	}
	s.Closes = []closeCountRow{}
	for _, cc := range closeCounts(tds) {
		s.Closes = append(s.Closes, closeCountRow{cc.key.mode, cc.key.reason, cc.key.outcome, cc.n})
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func printSummary(w io.Writer, s summary) {
	fmt.Fprintf(w, "%d requests in %s (%.1f/s), %d at a time: %d ok, %d failed\n",
		s.Requests, fmtDur(time.Duration(s.DurationMS*float64(time.Millisecond))), s.PerSecond, s.Concurrency, s.OK, s.Failed)
	if len(s.Status) > 0 {
		codes := make([]string, 0, len(s.Status))
		for code := range s.Status {
			codes = append(codes, code)
		}
		sort.Strings(codes)
		var parts []string
		for _, code := range codes {
			parts = append(parts, fmt.Sprintf("%s x%d", code, s.Status[code]))
		}
		fmt.Fprintf(w, "status:      %s\n", strings.Join(parts, ", "))
		d := func(v float64) string { return fmtDur(time.Duration(v * float64(time.Millisecond))) }
		l := s.LatencyMS
		fmt.Fprintf(w, "latency:     p50 %s  p90 %s  p99 %s  max %s\n", d(l.P50), d(l.P90), d(l.P99), d(l.Max))
	}
	fmt.Fprintf(w, "connections: %d\n", s.Connections)
	for i, cc := range s.Closes {
		label := "closes:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-13s%d %s/%s/%s\n", label, cc.Count, cc.Mode, cc.Reason, cc.Outcome)
	}
}
