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
// servers that report what they see on the wire: the witness (HTTP/1.1 over TLS), net/http's
// HTTP/2 server (which sees nothing), and an HTTP/3 server of ours (h3server.go).
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
	// h3, if set, plays the scenario over HTTP/3 too.
	h3 *h3Setup
	// h3Only marks a scenario played over HTTP/3 alone.
	h3Only bool
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
		h3:   &h3Setup{},
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
		h3:          &h3Setup{},
		play:        get,
	},
	{
		name: "early Body.Close (4 MiB)",
		server: witness.Options{Handler: func(c *witness.Conn, r *http.Request) witness.Action {
			c.Respond(http.StatusOK, nil, strings.Repeat("x", bigBody))
			return witness.KeepAlive
		}},
		h3: &h3Setup{reuse: true, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write(make([]byte, bigBody)) // until the client's STOP_SENDING
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
		h3: &h3Setup{reuse: true, handler: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
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
		// Over HTTP/3 the server sends CONNECTION_CLOSE(H3_NO_ERROR) once idle for 300ms,
		// counted from when its handler returned: long enough for a busy machine's client
		// to have read the response (a close throws away what the server had not sent).
		h3: &h3Setup{idleClose: 300 * time.Millisecond},
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
		// The server shuts down gracefully once the connection has been idle for 100ms:
		// its GOAWAY, then it waits for the client to close. (Over HTTP/2 the row above is
		// a GOAWAY already: net/http's server sends one when it closes an idle connection.)
		name:   "server GOAWAY",
		h3Only: true,
		h3:     &h3Setup{goAway: 100 * time.Millisecond},
		play:   get,
	},
	{
		// A peer that reads our close_notify and never answers it: it closes when our FIN
		// arrives. Over HTTP/3 every peer is silent after a CONNECTION_CLOSE (it drains,
		// RFC 9000, section 10.2.2): there, silence is the expected answer.
		name:   "Shutdown, silent peer",
		server: witness.Options{OnCloseNotify: witness.AnswerNone},
		h3:     &h3Setup{},
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
		h3:          &h3Setup{},
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
	name string // "http/1.1", "h2", "h3"
	// configure makes an endwell Transport speak this protocol only.
	configure func(t *endwell.Transport)
	// plays reports whether sc has a story over this protocol.
	plays func(sc scenario) bool
	// start starts the server sc plays against.
	start func(sc scenario) (server, error)
	// blind means the server cannot see how clients end connections.
	blind bool
	// endwellOnly means net/http does not speak the protocol: nothing to compare.
	endwellOnly bool
}

// server is an embedded server that reports how clients ended its connections.
type server interface {
	URL() string
	ClientTLSConfig() *tls.Config
	// WaitConns waits until n connections have ended and returns how the server saw the
	// client end each one, in the order they ended.
	WaitConns(ctx context.Context, n int) ([]string, error)
	// Reports returns what the server has seen so far, ended connections or not.
	Reports() []string
	Close() error
}

var protocols = []protocol{
	{
		name:      "http/1.1",
		configure: func(t *endwell.Transport) { t.Protocols = newProtocols(true, false) },
		plays:     func(sc scenario) bool { return !sc.h3Only },
		start:     startWitness,
	},
	{
		name:      "h2",
		configure: func(t *endwell.Transport) { t.Protocols = newProtocols(false, true) },
		plays:     func(sc scenario) bool { return sc.h2 != nil },
		start:     startH2,
		blind:     true,
	},
	{
		name:        "h3",
		configure:   func(t *endwell.Transport) { t.HTTP3 = &endwell.HTTP3Config{Only: true} },
		plays:       func(sc scenario) bool { return sc.h3 != nil },
		start:       func(sc scenario) (server, error) { return startH3Witness(*sc.h3) },
		endwellOnly: true,
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
	return witnessServer{s}, nil
}

// witnessServer is a witness as a [server].
type witnessServer struct{ *witness.Server }

func (s witnessServer) WaitConns(ctx context.Context, n int) ([]string, error) {
	reps, err := s.Server.WaitConns(ctx, n)
	return clientEndings(reps), err
}

func (s witnessServer) Reports() []string { return clientEndings(s.Server.Reports()) }

func clientEndings(reps []witness.ConnReport) []string {
	out := make([]string, 0, len(reps))
	for _, r := range reps {
		out = append(out, r.ClientEnding())
	}
	return out
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

func (s blindServer) WaitConns(context.Context, int) ([]string, error) { return nil, nil }
func (s blindServer) Reports() []string                                { return nil }
func (s blindServer) Close() error                                     { s.srv.Close(); return nil }

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
		budget := sc.budget
		if p.name == "h3" {
			// A QUIC goodbye never waits on the peer: a budget cut short to bound a TCP
			// peer would only cut the closing period short.
			budget = 0
		}
		t := &endwell.Transport{
			TLSClientConfig: srv.ClientTLSConfig(),
			TracerProvider:  col.tracerProvider(),
			IdleConnTimeout: sc.idleTimeout,
			ShutdownTimeout: budget,
		}
		p.configure(t)
		defer t.Close()
		c = endwellClient{t}
	default:
		t := &http.Transport{TLSClientConfig: srv.ClientTLSConfig(), IdleConnTimeout: sc.idleTimeout}
		defer t.CloseIdleConnections()
		c = netHTTPClient{t}
	}

	story := sc.play
	if p.name == "h3" && sc.h3.reuse {
		story = reuse(sc.play, srv.(*h3Witness))
	}
	if err := story(ctx, c, srv.URL()); err != nil {
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
	switch {
	case p.blind:
		res.saw = []string{"(not observed)"}
	case sc.serverStalls:
		res.saw = srv.Reports()
	default:
		if res.saw, err = srv.WaitConns(ctx, 1); err != nil {
			res.err = fmt.Errorf("waiting for the server to see the connection end: %w", err)
		}
	}
	return res
}

// reuse plays a story that resets a stream over HTTP/3, which leaves the connection alive:
// then one more request, which must go over the same connection, and CloseIdleConnections,
// which ends it.
func reuse(story func(ctx context.Context, c client, url string) error, srv *h3Witness) func(ctx context.Context, c client, url string) error {
	return func(ctx context.Context, c client, url string) error {
		if err := story(ctx, c, url); err != nil {
			return err
		}
		if err := get(ctx, c, url+againPath); err != nil {
			return fmt.Errorf("the request after the stream reset: %w", err)
		}
		if n := srv.numConns(); n != 1 {
			return fmt.Errorf("the stream reset ended its connection: the next request opened connection #%d", n)
		}
		c.closeIdle()
		return nil
	}
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
				// A server that sees nothing has nothing to compare; net/http speaks no
				// HTTP/3.
				if kind == clientNetHTTP && (p.blind || p.endwellOnly) {
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

	fmt.Fprintf(stdout, "How each connection ends: %d scenarios against embedded TLS and QUIC servers on 127.0.0.1 (%s)\n\n",
		len(scenarios), fmtDur(elapsed.Round(time.Millisecond)))
	played := map[string]bool{}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SCENARIO\tPROTO\tREASON\tMODE\tOUTCOME\tNOTIFY\tGOAWAY\tFIN\tQUIC CLOSE\tCLOSING\tDRAINED\tTOOK\tSERVER SAW")
	for _, c := range cells {
		if c.client != clientEndwell {
			continue
		}
		for _, row := range cellRows(c) {
			fmt.Fprintln(tw, row.Scenario+"\t"+row.cells())
		}
		played[c.protocol] = true
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "NOTIFY, FIN: TLS close_notify and TCP FIN, sent by endwell / received from the server;")
	fmt.Fprintln(stdout, "+RST: the server then reset the connection (it had closed its socket).")
	if played["h3"] {
		fmt.Fprintln(stdout, quicLegend)
	}
	fmt.Fprintln(stdout, "SERVER SAW: how the server saw the client end the connection (still open: it had stopped reading).")
	if played["h2"] {
		fmt.Fprintln(stdout, "h2 rows play against net/http's HTTP/2 server, which cannot report what it saw.")
	}
	if played["h3"] {
		fmt.Fprintf(stdout, h3Legend, fmtDur(h3OneWay))
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

// The legends of the QUIC columns and of the h3 rows.
const (
	quicLegend = `QUIC CLOSE: the code of endwell's CONNECTION_CLOSE (0x100 H3_NO_ERROR, 0x10c H3_REQUEST_CANCELLED);
recv: the server's came first, and endwell drained (it sends nothing). CLOSING: endwell's closing
period after its CONNECTION_CLOSE (3 probe timeouts answering late packets, then the socket is
released); no: a rapid close, one packet and the socket released at once.`
	h3Legend = `h3 rows play against quic-go's HTTP/3 server, its packets delayed %s (the round trip the closing
period is made of); once the client's CONNECTION_CLOSE is in, it sends the client a late packet:
re-sent Nx counts the CONNECTION_CLOSE packets the client sent again (its closing period answering).
A QUIC peer says nothing after a CONNECTION_CLOSE (it drains): its silence is a clean ending.
Over h3, an early Body.Close or a cancelled request resets its stream only: the connection serves
one more request, and the row is the CloseIdleConnections that ends it.
`
)

// cells renders a row's columns from PROTO on, tab-separated.
func (r connRow) cells() string {
	td := r.teardown
	if td == nil {
		return r.Protocol + strings.Repeat("\t-", 10) + "\t" + r.sawCell()
	}
	return strings.Join(append(teardownCells(*td, true), r.sawCell()), "\t")
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
