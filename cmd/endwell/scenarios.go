package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

// This file plays each ending of DESIGN.md's contract table against embedded loopback
// servers that report what they see on the wire.
//
// A run is a grid: every scenario, over every protocol, through every client (endwell, and
// net/http with -compare). Each cell gets its own server and its own transport, so that the
// cells run in parallel and each server sees exactly the connection of its cell.

// Client names, as the JSON "client" field spells them.
const (
	clientEndwell = "endwell"
	clientNetHTTP = "net/http"
)

// scenarioTimeout bounds one cell: playing it and waiting for its connection to end.
const scenarioTimeout = 5 * time.Second

// scenario is one way a connection ends, played on one connection.
type scenario struct {
	name string
	// server configures the embedded server; the runner turns TLS on and bounds its timeouts.
	server witness.Options
	// idleTimeout, if set, is the client's IdleConnTimeout.
	idleTimeout time.Duration
	// budget, if set, is endwell's ShutdownTimeout.
	budget time.Duration
	// play drives the client through the scenario's story, against the server at url.
	play func(ctx context.Context, c client, url string) error
	// endwellOnly marks a scenario net/http has no counterpart for.
	endwellOnly bool
	// h2, if set, plays the scenario over HTTP/2 too.
	h2 *h2Setup
	// serverStalls marks a server that stops reading: it never sees the connection end, so
	// the runner reports what it saw once the client is done instead of waiting for it.
	serverStalls bool
}

// bigBody is larger than endwell's drain limit, so closing it early aborts.
const bigBody = 4 << 20

// scenarios lists the endings in the order of DESIGN.md's table.
var scenarios = []scenario{
	{
		name: "finished, CloseIdleConnections",
		h2:   &h2Setup{},
		play: func(ctx context.Context, c client, url string) error {
			if err := get(ctx, c, url); err != nil {
				return err
			}
			c.closeIdle()
			return nil
		},
	},
	{
		name:        "idle timeout (150ms)",
		idleTimeout: 150 * time.Millisecond,
		h2:          &h2Setup{},
		play:        get,
	},
	{
		name: "early Body.Close (4 MiB)",
		server: witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, nil, strings.Repeat("x", bigBody))
			return witness.KeepAlive
		}},
		play: func(ctx context.Context, c client, url string) error {
			resp, err := do(ctx, c, url)
			if err != nil {
				return err
			}
			io.CopyN(io.Discard, resp.Body, 1<<10)
			return resp.Body.Close()
		},
	},
	{
		name: "request cancelled",
		// The server never answers: the request is cancelled while it waits for headers.
		server: witness.Options{Handler: func(*witness.Conn, *http.Request) witness.Action {
			return witness.Hang
		}},
		play: func(ctx context.Context, c client, url string) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			// Cancel once the request is on the wire, while it waits for the headers.
			timer := time.AfterFunc(time.Hour, cancel)
			timer.Stop()
			defer timer.Stop()
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { timer.Reset(20 * time.Millisecond) },
			})
			resp, err := do(ctx, c, url)
			if err == nil {
				resp.Body.Close()
				return errors.New("the request was not cancelled: the server answered")
			}
			if !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	},
	{
		name: "server Connection: close",
		server: witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, http.Header{"Connection": {"close"}}, "bye\n")
			return witness.Auto
		}},
		play: get,
	},
	{
		// The server answers with keep-alive, then closes the connection gracefully once it
		// has been idle for 100ms. (Options.IdleClose would count the handshake as idle
		// time too, and could close before the first request on a busy machine.)
		name: "server closes idle conn",
		// net/http's HTTP/2 server counts its IdleTimeout from the connection's start:
		// long enough that a busy machine's handshake does not use it up (endwell
		// tries once more on a new connection if it does).
		h2: &h2Setup{idleTimeout: 400 * time.Millisecond},
		server: witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, nil, "ok\n")
			idle := time.NewTimer(100 * time.Millisecond)
			defer idle.Stop()
			select {
			case <-idle.C:
			case <-c.ClientDone():
			case <-c.Context().Done():
			}
			return witness.CloseGraceful
		}},
		play: get,
	},
	{
		// A peer that reads our close_notify and never answers it: it closes when our FIN
		// arrives.
		name:   "Shutdown, silent peer",
		server: witness.Options{OnCloseNotify: witness.AnswerNone},
		budget: 300 * time.Millisecond,
		play: func(ctx context.Context, c client, url string) error {
			if err := get(ctx, c, url); err != nil {
				return err
			}
			return c.shutdown(ctx)
		},
	},
	{
		// A peer that stops reading: it never sees the goodbye, never answers, never closes,
		// so the close is forced when the budget runs out.
		name:         "Shutdown, stalled peer",
		server:       witness.Options{NoRead: true, NoReadAfter: 1},
		serverStalls: true,
		budget:       300 * time.Millisecond,
		play: func(ctx context.Context, c client, url string) error {
			if err := get(ctx, c, url); err != nil {
				return err
			}
			return c.shutdown(ctx)
		},
	},
	{
		name:        "Transport.Close",
		endwellOnly: true,
		h2:          &h2Setup{},
		play: func(ctx context.Context, c client, url string) error {
			if err := get(ctx, c, url); err != nil {
				return err
			}
			return c.close()
		},
	},
}

// h2Setup is how a scenario's server behaves over HTTP/2. No witness speaks HTTP/2 yet, so
// these scenarios play against a net/http server (httptest), which cannot report how the
// client ended its connections: their SERVER SAW column stays empty. Early Body.Close and
// cancellation are not played: over HTTP/2 they reset a stream, and the connection lives on.
type h2Setup struct {
	// idleTimeout, if set, is the server's IdleTimeout: it then closes idle connections
	// with a GOAWAY.
	idleTimeout time.Duration
}

// protocol is a wire protocol the scenarios are played over, with its embedded server.
type protocol struct {
	name string // "http/1.1", "h2"
	// protocols is what the endwell client speaks: this protocol only.
	protocols func() *http.Protocols
	// plays reports whether sc has a story over this protocol.
	plays func(sc scenario) bool
	// start starts the server sc plays against.
	start func(sc scenario) (server, error)
	// blind means the server cannot see how clients end connections.
	blind bool
}

// server is an embedded server that reports how clients ended its connections.
type server interface {
	URL() string
	ClientTLSConfig() *tls.Config
	// WaitConns waits until n connections have ended and returns what the server saw.
	WaitConns(ctx context.Context, n int) ([]witness.ConnReport, error)
	// Reports returns what the server has seen so far, ended connections or not.
	Reports() []witness.ConnReport
	Close() error
}

var protocols = []protocol{
	{
		name:      "http/1.1",
		protocols: func() *http.Protocols { return newProtocols(true, false) },
		plays:     func(scenario) bool { return true },
		start:     startWitness,
	},
	{
		name:      "h2",
		protocols: func() *http.Protocols { return newProtocols(false, true) },
		plays:     func(sc scenario) bool { return sc.h2 != nil },
		start:     startH2,
		blind:     true,
	},
}

func newProtocols(h1, h2 bool) *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(h1)
	p.SetHTTP2(h2)
	return p
}

// startWitness starts an HTTP/1.1 TLS witness server for sc.
func startWitness(sc scenario) (server, error) {
	opts := sc.server
	opts.TLS = true
	opts.NextProtos = []string{"http/1.1"}
	if opts.ConnTimeout == 0 {
		opts.ConnTimeout = 2 * scenarioTimeout
	}
	opts.DrainTimeout = time.Second
	s := witness.New(opts)
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// startH2 starts an HTTP/2 TLS server for sc.
func startH2(sc scenario) (server, error) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	srv.EnableHTTP2 = true
	srv.Config.IdleTimeout = sc.h2.idleTimeout
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	return blindServer{srv}, nil
}

// blindServer is an httptest server as a [server] that sees nothing.
type blindServer struct{ srv *httptest.Server }

func (s blindServer) URL() string { return s.srv.URL }

func (s blindServer) ClientTLSConfig() *tls.Config {
	return s.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

func (s blindServer) WaitConns(context.Context, int) ([]witness.ConnReport, error) { return nil, nil }
func (s blindServer) Reports() []witness.ConnReport                                { return nil }
func (s blindServer) Close() error                                                 { s.srv.Close(); return nil }

// client is the part of a transport the scenarios use.
type client interface {
	roundTrip(*http.Request) (*http.Response, error)
	// closeIdle is CloseIdleConnections.
	closeIdle()
	// shutdown ends the transport gracefully: endwell's Shutdown, net/http's
	// CloseIdleConnections (it has no more).
	shutdown(ctx context.Context) error
	// close aborts everything: endwell's Close.
	close() error
}

type endwellClient struct{ t *endwell.Transport }

func (c endwellClient) roundTrip(r *http.Request) (*http.Response, error) { return c.t.RoundTrip(r) }
func (c endwellClient) closeIdle()                                        { c.t.CloseIdleConnections() }
func (c endwellClient) shutdown(ctx context.Context) error                { return c.t.Shutdown(ctx) }
func (c endwellClient) close() error                                      { return c.t.Close() }

type netHTTPClient struct{ t *http.Transport }

func (c netHTTPClient) roundTrip(r *http.Request) (*http.Response, error) { return c.t.RoundTrip(r) }
func (c netHTTPClient) closeIdle()                                        { c.t.CloseIdleConnections() }
func (c netHTTPClient) shutdown(context.Context) error                    { c.t.CloseIdleConnections(); return nil }
func (c netHTTPClient) close() error                                      { c.t.CloseIdleConnections(); return nil }

// do sends a GET to url through c.
func do(ctx context.Context, c client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(req)
}

// get sends a GET to url through c and reads the response to its end.
func get(ctx context.Context, c client, url string) error {
	resp, err := do(ctx, c, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	return resp.Body.Close()
}

// cell is one scenario played over one protocol through one client.
type cell struct {
	scenario, protocol, client string
	// tds are the connection endings endwell reported, in the order they ended; none for
	// net/http, whose side is not observable.
	tds []teardown
	// saw is how the server saw the client end each connection, in the order they ended.
	saw []string
	err error
}

// play plays sc over p through the client named kind.
func play(ctx context.Context, sc scenario, p protocol, kind string) cell {
	res := cell{scenario: sc.name, protocol: p.name, client: kind}
	ctx, cancel := context.WithTimeoutCause(ctx, scenarioTimeout,
		fmt.Errorf("scenario %q did not finish within %v", sc.name, scenarioTimeout))
	defer cancel()

	srv, err := p.start(sc)
	if err != nil {
		res.err = fmt.Errorf("start the embedded server: %w", err)
		return res
	}
	defer srv.Close()

	var (
		c   client
		col *spanCollector
	)
	switch kind {
	case clientEndwell:
		col = newSpanCollector()
		t := &endwell.Transport{
			TLSClientConfig: srv.ClientTLSConfig(),
			TracerProvider:  col.tracerProvider(),
			IdleConnTimeout: sc.idleTimeout,
			ShutdownTimeout: sc.budget,
			Protocols:       p.protocols(),
		}
		defer t.Close()
		c = endwellClient{t}
	default:
		t := &http.Transport{TLSClientConfig: srv.ClientTLSConfig(), IdleConnTimeout: sc.idleTimeout}
		defer t.CloseIdleConnections()
		c = netHTTPClient{t}
	}

	if err := sc.play(ctx, c, srv.URL()); err != nil {
		res.err = err
		return res
	}
	// Each scenario plays one connection: wait until both sides have reported its end.
	if col != nil {
		if res.tds, err = col.wait(ctx, 1); err != nil {
			res.err = fmt.Errorf("waiting for endwell's teardown record: %w", err)
			return res
		}
	}
	var reps []witness.ConnReport
	switch {
	case p.blind:
		res.saw = []string{"(not observed)"}
		return res
	case sc.serverStalls:
		reps = srv.Reports()
	default:
		if reps, err = srv.WaitConns(ctx, 1); err != nil {
			res.err = fmt.Errorf("waiting for the server to see the connection end: %w", err)
			return res
		}
	}
	for _, r := range reps {
		res.saw = append(res.saw, r.ClientEnding())
	}
	return res
}

// runScenarios plays every scenario, in parallel, and prints one row per connection.
func runScenarios(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	clients := []string{clientEndwell}
	if cfg.compare {
		clients = append(clients, clientNetHTTP)
	}
	type job struct {
		sc   scenario
		p    protocol
		kind string
	}
	var jobs []job
	for _, sc := range scenarios {
		for _, p := range protocols {
			if !p.plays(sc) {
				continue
			}
			for _, kind := range clients {
				// A server that sees nothing has nothing to compare.
				if kind == clientNetHTTP && p.blind {
					continue
				}
				jobs = append(jobs, job{sc, p, kind})
			}
		}
	}

	start := time.Now()
	cells := make([]cell, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		if j.kind == clientNetHTTP && j.sc.endwellOnly {
			cells[i] = cell{scenario: j.sc.name, protocol: j.p.name, client: j.kind}
			continue
		}
		// One goroutine per cell; each cell is bounded by scenarioTimeout, and run waits
		// for all of them.
		wg.Go(func() { cells[i] = play(ctx, j.sc, j.p, j.kind) })
	}
	wg.Wait()
	elapsed := time.Since(start)

	code := exitOK
	for _, c := range cells {
		if c.err != nil {
			fmt.Fprintf(stderr, "endwell: %s (%s, %s): %v\n", c.scenario, c.protocol, c.client, c.err)
			code = exitFailure
		}
	}
	if cfg.json {
		for _, c := range cells {
			for _, row := range cellRows(c) {
				if err := writeJSON(stdout, row); err != nil {
					fmt.Fprintf(stderr, "endwell: %v\n", err)
					return exitFailure
				}
			}
		}
		return code
	}

	fmt.Fprintf(stdout, "How each connection ends: %d scenarios against embedded TLS servers on 127.0.0.1 (%s)\n\n",
		len(scenarios), fmtDur(elapsed.Round(time.Millisecond)))
	blind := false
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SCENARIO\tPROTO\tREASON\tMODE\tOUTCOME\tNOTIFY\tGOAWAY\tFIN\tDRAINED\tTOOK\tSERVER SAW")
	for _, c := range cells {
		if c.client != clientEndwell {
			continue
		}
		for _, row := range cellRows(c) {
			fmt.Fprintln(tw, row.Scenario+"\t"+row.cells())
		}
		blind = blind || c.protocol == "h2"
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "NOTIFY, FIN: TLS close_notify and TCP FIN, sent by endwell / received from the server;")
	fmt.Fprintln(stdout, "+RST: the server then reset the connection (it had closed its socket).")
	fmt.Fprintln(stdout, "SERVER SAW: how the server saw the client end the connection (still open: it had stopped reading).")
	if blind {
		fmt.Fprintln(stdout, "h2 rows play against net/http's HTTP/2 server, which cannot report what it saw.")
	}
	if cfg.compare {
		printComparison(stdout, cells)
	}
	return code
}

// printComparison prints, per scenario, what the server saw from endwell and from
// net/http, marking the rows where net/http said goodbye on a transfer it had aborted.
func printComparison(w io.Writer, cells []cell) {
	type pair struct {
		scenario, protocol string
		endwell, nethttp   []connRow
	}
	var order []*pair
	by := map[string]*pair{}
	for _, c := range cells {
		key := c.scenario + "\x00" + c.protocol
		p := by[key]
		if p == nil {
			p = &pair{scenario: c.scenario, protocol: c.protocol}
			by[key] = p
			order = append(order, p)
		}
		if c.client == clientEndwell {
			p.endwell = cellRows(c)
		} else {
			p.nethttp = cellRows(c)
		}
	}
	fmt.Fprintf(w, "\nThe same scenarios through net/http.Transport: what the server saw\n\n")
	tw := newTable(w)
	fmt.Fprintln(tw, "SCENARIO\tPROTO\tENDWELL\tNET/HTTP\t")
	for _, p := range order {
		if p.nethttp == nil {
			continue // played through endwell only: a server that sees nothing
		}
		for i := range max(len(p.endwell), len(p.nethttp)) {
			var ew, nh, note string
			aborted := false
			if i < len(p.endwell) {
				ew = p.endwell[i].sawCell()
				aborted = p.endwell[i].teardown != nil && p.endwell[i].Mode == "abort"
			}
			if i < len(p.nethttp) {
				nh = p.nethttp[i].sawCell()
			}
			if aborted && strings.HasPrefix(nh, "close_notify") {
				note = "<- net/http: close_notify on an aborted transfer"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.scenario, p.protocol, ew, nh, note)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A close_notify tells the server the transfer is complete: after an abort, it lies.")
}

// connRow is one row of the scenario table, and one JSON object of its -json output.
type connRow struct {
	Kind     string `json:"kind"` // "connection"
	Scenario string `json:"scenario,omitempty"`
	Client   string `json:"client"`
	Protocol string `json:"protocol"`
	// The teardown fields, absent for net/http, whose side is not observable.
	*teardown
	ServerSaw string `json:"server_saw,omitempty"`
	Error     string `json:"error,omitempty"`
}

// cellRows turns a cell into rows, one per connection.
func cellRows(c cell) []connRow {
	base := connRow{Kind: "connection", Scenario: c.scenario, Client: c.client, Protocol: c.protocol}
	if c.err != nil {
		base.Error = c.err.Error()
	}
	n := max(len(c.tds), len(c.saw), 1)
	rows := make([]connRow, n)
	for i := range rows {
		rows[i] = base
		if i < len(c.tds) {
			rows[i].teardown = &c.tds[i]
		}
		if i < len(c.saw) {
			rows[i].ServerSaw = c.saw[i]
		}
	}
	return rows
}

// cells renders a row's columns from PROTO on, tab-separated.
func (r connRow) cells() string {
	td := r.teardown
	if td == nil {
		return r.Protocol + "\t-\t-\t-\t-\t-\t-\t-\t-\t" + r.sawCell()
	}
	return strings.Join([]string{
		td.Protocol, td.Reason, td.Mode, td.Outcome,
		sentRecv(td.CloseNotifySent, td.CloseNotifyReceived), goAwayCell(*td),
		finCell(*td), fmtBytes(td.DrainBytes), fmtDur(td.duration),
		r.sawCell(),
	}, "\t")
}

// sawCell renders the SERVER SAW column.
func (r connRow) sawCell() string {
	switch {
	case r.Error != "":
		return "error: " + r.Error
	case r.Client == clientNetHTTP && r.ServerSaw == "":
		return "(no counterpart)"
	}
	return orDash(r.ServerSaw)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
