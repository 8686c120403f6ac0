package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/endwell/endwell"
	"github.com/endwell/endwell/internal/witness"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is one in-process run of the command.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func (r result) wantCode(t *testing.T, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("exit code: got %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
	}
}

// jsonLines decodes every line of out as a JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", sc.Text(), err)
		}
		objs = append(objs, m)
	}
	return objs
}

// startTestWitness starts a TLS witness server for the test.
func startTestWitness(t *testing.T, opts witness.Options) *witness.Server {
	t.Helper()
	opts.TLS = true
	s := witness.New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// want is how a scenario's connection must end, per DESIGN.md's contract.
type want struct {
	reason, mode string
	outcomes     []string // any of these
	// sawNotify says whether the server must have seen close_notify.
	sawNotify bool
}

// wantH2 is how the scenarios played over HTTP/2 must end: a graceful close sends GOAWAY,
// an abort does not.
//
// The HTTP/2 server is net/http's, which closes its socket as soon as it has read our
// GOAWAY: its close_notify then sometimes races the reset that our own close_notify draws,
// and a reset discards what the kernel had queued. So clean or peer_silent.
var wantH2 = map[string]want{
	"finished, CloseIdleConnections": {"close_idle", "graceful", []string{"clean", "peer_silent"}, false},
	"idle timeout (150ms)":           {"idle_timeout", "graceful", []string{"clean", "peer_silent"}, false},
	"server closes idle conn":        {"goaway_received", "graceful", []string{"clean", "peer_silent"}, false},
	"Transport.Close":                {"close", "abort", []string{"aborted"}, false},
}

var wantScenarios = map[string]want{
	"finished, CloseIdleConnections": {"close_idle", "graceful", []string{"clean"}, true},
	"idle timeout (150ms)":           {"idle_timeout", "graceful", []string{"clean"}, true},
	"early Body.Close (4 MiB)":       {"body_closed_early", "abort", []string{"aborted"}, false},
	"request cancelled":              {"context_canceled", "abort", []string{"aborted"}, false},
	// The server sends close_notify and FIN together, and keeps reading (a half-close):
	// endwell answers its close_notify with its own before its FIN (RFC 8446, section
	// 6.1), even when the server's FIN has arrived too.
	"server Connection: close": {"server_close", "graceful", []string{"clean"}, true},
	"server closes idle conn":  {"peer_closed", "graceful", []string{"clean"}, true},
	"Shutdown, silent peer":    {"shutdown", "graceful", []string{"peer_silent"}, true},
	"Shutdown, stalled peer":   {"shutdown", "graceful", []string{"timed_out"}, false},
	"Transport.Close":          {"close", "abort", []string{"aborted"}, false},
}

// wantH3 is how the scenarios played over HTTP/3 must end. A stream reset (early
// Body.Close, a cancelled request) leaves the connection alive: the row is its later
// CloseIdleConnections.
var wantH3 = map[string]want{
	"finished, CloseIdleConnections": {"close_idle", "graceful", []string{"clean"}, false},
	"idle timeout (150ms)":           {"idle_timeout", "graceful", []string{"clean"}, false},
	"early Body.Close (4 MiB)":       {"close_idle", "graceful", []string{"clean"}, false},
	"request cancelled":              {"close_idle", "graceful", []string{"clean"}, false},
	"server closes idle conn":        {"peer_closed", "graceful", []string{"clean"}, false},
	"server GOAWAY":                  {"goaway_received", "graceful", []string{"clean"}, false},
	"Shutdown, silent peer":          {"shutdown", "graceful", []string{"clean"}, false},
	"Transport.Close":                {"close", "abort", []string{"aborted"}, false},
}

// h3StreamResets are the scenarios whose story resets a stream over HTTP/3.
var h3StreamResets = map[string]bool{"early Body.Close (4 MiB)": true, "request cancelled": true}

// resent matches the end of what the h3 server saw when the client's closing period
// answered its late packet.
var resent = regexp.MustCompile(`, re-sent [1-9][0-9]*x$`)

// h3Row is an h3 row of the scenario table, or its JSON object.
type h3Row struct {
	reason, mode, outcome string
	// quicClose is the code of endwell's CONNECTION_CLOSE as the QUIC CLOSE column
	// renders it ("0x100"), "recv" or "no".
	quicClose string
	// over says the closing period ran its course, cut that the budget cut it short.
	over, cut bool
	took      time.Duration // how long the teardown took
	saw       string        // what the server saw
}

// defaultBudget is endwell's ShutdownTimeout by default, the h3 rows' budget.
const defaultBudget = 2 * time.Second

// checkH3 checks an h3 row against its want, and against what the server saw.
func checkH3(t *testing.T, name string, w want, r h3Row) {
	t.Helper()
	quicClose, over, saw := r.quicClose, r.over, r.saw
	if r.reason != w.reason || r.mode != w.mode {
		t.Errorf("got %s %s, want %s %s", r.reason, r.mode, w.reason, w.mode)
	}
	switch {
	case slices.Contains(w.outcomes, r.outcome):
	case r.outcome == "timed_out" && r.cut && r.took >= defaultBudget*9/10:
		// The closing period is three probe timeouts, within the budget: a machine so
		// busy that its RTT samples make that longer than the budget cuts it there.
		t.Logf("closing period cut at the %v budget (the teardown took %v): a busy machine", defaultBudget, r.took)
		over = true // the late packet came within it
	default:
		t.Errorf("outcome: got %s, want %v", r.outcome, w.outcomes)
	}
	wantClose := "0x100" // a goodbye: H3_NO_ERROR
	switch {
	case w.mode == "abort":
		wantClose = "0x10c" // H3_REQUEST_CANCELLED
	case w.reason == "peer_closed":
		wantClose = "recv" // the server's CONNECTION_CLOSE came first: draining
	}
	if quicClose != wantClose {
		t.Errorf("QUIC CLOSE: got %q, want %q", quicClose, wantClose)
	}
	// A goodbye keeps its closing period; an abort is a rapid close, and a draining
	// connection sent nothing.
	if want := wantClose == "0x100"; over != want {
		t.Errorf("closing period ran its course: got %v, want %v", over, want)
	}

	// The row agrees with what the server saw: its stream resets, the CONNECTION_CLOSE with
	// the code endwell recorded, and answers to its late packet if and only if endwell's
	// closing period ran.
	end, found := strings.CutPrefix(saw, "STOP_SENDING+RESET_STREAM(0x10c), then ")
	if found != h3StreamResets[name] {
		t.Errorf("the server saw %q: stream reset STOP_SENDING+RESET_STREAM(0x10c) %v, want %v", saw, found, h3StreamResets[name])
	}
	if strings.Contains(end, "STOP_SENDING") || strings.Contains(end, "RESET_STREAM") {
		t.Errorf("the server saw %q: unexpected stream resets", saw)
	}
	switch quicClose {
	case "recv":
		if end != "nothing after its CONNECTION_CLOSE(app 0x100)" {
			t.Errorf("QUIC CLOSE recv, but the server saw %q, want nothing after its own CONNECTION_CLOSE", saw)
		}
	case "no":
		if strings.Contains(end, "CONNECTION_CLOSE(app") && !strings.HasPrefix(end, "nothing after its") {
			t.Errorf("QUIC CLOSE no, but the server saw %q", saw)
		}
	default:
		if !strings.HasPrefix(end, "CONNECTION_CLOSE(app "+quicClose+"), ") {
			t.Errorf("endwell sent CONNECTION_CLOSE %s, but the server saw %q", quicClose, saw)
		}
		if over && !resent.MatchString(end) {
			t.Errorf("endwell's closing period ran, but the server saw %q: its late packet unanswered", saw)
		}
		// The late packet reaches the client h3OneWay after its close: a rapid close
		// released its socket long before (a busy machine may take longer; then, and
		// when the budget cut the closing period short, either may be seen).
		if w.mode == "abort" && r.took < h3OneWay && !strings.HasSuffix(end, ", not re-sent") {
			t.Errorf("a rapid close in %v, but the server saw %q: its late packet answered", r.took, saw)
		}
	}
}

// scenarioTable parses the scenario table: each row's cells by column name, keyed by
// scenario and protocol. Columns are at least two spaces apart, and no cell holds two
// spaces in a row.
func scenarioTable(t *testing.T, out string) map[string]map[string]string {
	t.Helper()
	sep := regexp.MustCompile(` {2,}`)
	var header []string
	rows := map[string]map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "SCENARIO ") {
			header = sep.Split(line, -1)
			continue
		}
		if header == nil {
			continue
		}
		if line == "" {
			break
		}
		f := sep.Split(line, -1)
		if len(f) != len(header) {
			t.Fatalf("row %q: got %d cells, want %d (%v)", line, len(f), len(header), header)
		}
		row := map[string]string{}
		for i, h := range header {
			row[h] = f[i]
		}
		rows[row["SCENARIO"]+" "+row["PROTO"]] = row
	}
	if header == nil {
		t.Fatalf("no table in:\n%s", out)
	}
	return rows
}

func TestScenariosTable(t *testing.T) {
	r := runCmd(t)
	r.wantCode(t, exitOK)
	rows := scenarioTable(t, r.stdout)
	if want := len(wantScenarios) + len(wantH2) + len(wantH3); len(rows) != want {
		t.Errorf("got %d rows, want %d", len(rows), want)
	}
	check := func(name, proto string, w want) {
		t.Run(name+" "+proto, func(t *testing.T) {
			f, ok := rows[name+" "+proto]
			if !ok {
				t.Fatalf("no %s row for %q in:\n%s", proto, name, r.stdout)
			}
			notify, goAway, fin, saw := f["NOTIFY"], f["GOAWAY"], f["FIN"], f["SERVER SAW"]
			if proto != "h3" && (f["REASON"] != w.reason || f["MODE"] != w.mode || !slices.Contains(w.outcomes, f["OUTCOME"])) {
				t.Errorf("got %s %s %s, want %s %s %v", f["REASON"], f["MODE"], f["OUTCOME"], w.reason, w.mode, w.outcomes)
			}
			if proto == "h3" {
				for _, col := range []string{"NOTIFY", "GOAWAY", "FIN", "DRAINED"} {
					if f[col] != "-" {
						t.Errorf("%s: got %q, want - over HTTP/3", col, f[col])
					}
				}
				over := f["CLOSING"] != "-" && f["CLOSING"] != "no" && f["CLOSING"] != "cut"
				if over {
					if _, err := time.ParseDuration(f["CLOSING"]); err != nil {
						t.Errorf("CLOSING: got %q, want a duration", f["CLOSING"])
					}
				}
				if f["QUIC CLOSE"] == "recv" && f["CLOSING"] != "-" {
					t.Errorf("CLOSING: got %q, want - when endwell sent no CONNECTION_CLOSE", f["CLOSING"])
				}
				took, err := time.ParseDuration(f["TOOK"])
				if err != nil {
					t.Errorf("TOOK: %v", err)
				}
				checkH3(t, name, w, h3Row{f["REASON"], f["MODE"], f["OUTCOME"], f["QUIC CLOSE"], over, f["CLOSING"] == "cut", took, saw})
				return
			}
			if f["QUIC CLOSE"] != "-" || f["CLOSING"] != "-" {
				t.Errorf("QUIC CLOSE %q, CLOSING %q: want - over TCP", f["QUIC CLOSE"], f["CLOSING"])
			}
			if w.mode == "abort" && notify != "no" {
				t.Errorf("NOTIFY: got %q, want no: an abort sends no close_notify", notify)
			}
			wantGoAway := map[string]string{"http/1.1": "-", "h2": "no"}[proto]
			if proto == "h2" && w.mode == "graceful" {
				wantGoAway = "sent"
			}
			if goAway != wantGoAway {
				t.Errorf("GOAWAY: got %q, want %q", goAway, wantGoAway)
			}
			if f["OUTCOME"] == "clean" && (notify != "sent+recv" || !strings.HasPrefix(fin, "sent+recv") || proto == "h2" && goAway != "sent") {
				t.Errorf("clean with NOTIFY %q, GOAWAY %q, FIN %q: want every goodbye said both ways", notify, goAway, fin)
			}
			if proto != "http/1.1" {
				return
			}
			// The row agrees with what the server saw: endwell's close_notify, and its
			// FIN unless the server had stopped reading.
			if sent := strings.HasPrefix(notify, "sent"); saw != "still open" && sent != strings.HasPrefix(saw, "close_notify") {
				t.Errorf("NOTIFY %q, but the server saw %q", notify, saw)
			}
			if sent := strings.HasPrefix(fin, "sent"); sent && saw != "still open" && !strings.Contains(saw, "FIN") {
				t.Errorf("FIN %q, but the server saw %q", fin, saw)
			}
			if w.mode == "abort" && !strings.Contains(saw, "no close_notify") {
				t.Errorf("server saw %q, want no close_notify", saw)
			}
			if w.sawNotify && saw != "close_notify+FIN" {
				t.Errorf("server saw %q, want close_notify+FIN", saw)
			}
		})
	}
	for name, w := range wantScenarios {
		check(name, "http/1.1", w)
	}
	for name, w := range wantH2 {
		check(name, "h2", w)
	}
	for name, w := range wantH3 {
		check(name, "h3", w)
	}
}

func TestScenariosJSON(t *testing.T) {
	r := runCmd(t, "-json")
	r.wantCode(t, exitOK)
	objs := jsonLines(t, r.stdout)
	if want := len(wantScenarios) + len(wantH2) + len(wantH3); len(objs) != want {
		t.Fatalf("got %d JSON objects, want %d (one per scenario and protocol)", len(objs), want)
	}
	quicKeys := []string{"connection_close_sent", "connection_close_received", "closing_period_ms", "closing_period_over"}
	for _, o := range objs {
		name, _ := o["scenario"].(string)
		w, ok := wantScenarios[name]
		switch o["protocol"] {
		case "h2":
			w, ok = wantH2[name]
			if want := w.mode == "graceful"; o["goaway_sent"] != want {
				t.Errorf("%s over h2: got goaway_sent %v, want %v", name, o["goaway_sent"], want)
			}
		case "h3":
			w, ok = wantH3[name]
		}
		if !ok {
			t.Errorf("unexpected scenario %q over %v", name, o["protocol"])
			continue
		}
		if o["protocol"] == "h3" {
			t.Run(name+" h3", func(t *testing.T) {
				for _, key := range quicKeys {
					if _, ok := o[key]; !ok {
						t.Errorf("no %q field in %v", key, o)
					}
				}
				code, hasCode := o["quic_close_code"].(float64)
				if sent := o["connection_close_sent"] == true; sent != hasCode {
					t.Errorf("connection_close_sent %v, quic_close_code %v: want the code with the close", sent, o["quic_close_code"])
				}
				quicClose := "no"
				switch {
				case hasCode:
					quicClose = fmt.Sprintf("%#x", int(code))
				case o["connection_close_received"] == true:
					quicClose = "recv"
				}
				over := o["closing_period_over"] == true
				if ms, _ := o["closing_period_ms"].(float64); over && ms <= 0 {
					t.Errorf("closing_period_ms %v: want the period's length", ms)
				}
				saw, _ := o["server_saw"].(string)
				took := time.Duration(o["duration_ms"].(float64) * float64(time.Millisecond))
				cut := o["connection_close_sent"] == true && !over && o["mode"] == "graceful"
				checkH3(t, name, w, h3Row{o["reason"].(string), o["mode"].(string), o["outcome"].(string), quicClose, over, cut, took, saw})
			})
		} else {
			for _, key := range append(quicKeys, "quic_close_code") {
				if _, ok := o[key]; ok {
					t.Errorf("%s over %v: a QUIC field %q", name, o["protocol"], key)
				}
			}
		}
		for _, key := range []string{"kind", "client", "protocol", "server", "reason", "mode", "outcome",
			"close_notify_sent", "close_notify_received", "goaway_sent", "fin_sent", "fin_received",
			"rst_received", "drain_bytes", "start", "duration_ms", "server_saw"} {
			if _, ok := o[key]; !ok {
				t.Errorf("%s: no %q field in %v", name, key, o)
			}
		}
		if o["kind"] != "connection" || o["client"] != clientEndwell {
			t.Errorf("%s: got kind %v client %v, want connection endwell", name, o["kind"], o["client"])
		}
		if o["protocol"] != "h3" && (o["reason"] != w.reason || o["mode"] != w.mode || !slices.Contains(w.outcomes, o["outcome"].(string))) {
			t.Errorf("%s: got %v/%v/%v, want %s/%s/%v", name, o["reason"], o["mode"], o["outcome"], w.reason, w.mode, w.outcomes)
		}
		if w.mode == "abort" && o["close_notify_sent"] != false {
			t.Errorf("%s: got close_notify_sent %v, want false", name, o["close_notify_sent"])
		}
		if o["outcome"] == "clean" && o["protocol"] != "h3" {
			for _, key := range []string{"close_notify_sent", "close_notify_received", "fin_sent", "fin_received"} {
				if o[key] != true {
					t.Errorf("%s over %v: clean with %s %v: want every goodbye said both ways", name, o["protocol"], key, o[key])
				}
			}
		}
		if saw, _ := o["server_saw"].(string); o["protocol"] == "http/1.1" && saw != "still open" && o["close_notify_sent"] != strings.HasPrefix(saw, "close_notify") {
			t.Errorf("%s: close_notify_sent %v, but the server saw %q", name, o["close_notify_sent"], saw)
		}
		if name == "Shutdown, stalled peer" {
			// Forced at the 300ms budget: not much before it (the budget counts from
			// the decision to close, the record from when its goroutine ran), and not
			// much after.
			if d := o["duration_ms"].(float64); d < 250 || d > 1500 {
				t.Errorf("%s: got duration %vms, want about 300ms", name, d)
			}
		}
	}
}

func TestCompare(t *testing.T) {
	r := runCmd(t, "-compare")
	r.wantCode(t, exitOK)
	var row string
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "early Body.Close") && strings.Contains(line, "<-") {
			row = line
		}
	}
	if row == "" {
		t.Fatalf("no comparison row for early Body.Close marking net/http's close_notify:\n%s", r.stdout)
	}
	if !strings.Contains(row, "RST, no close_notify") && !strings.Contains(row, "FIN, no close_notify") {
		t.Errorf("endwell column: got %q, want no close_notify", row)
	}
	if !strings.Contains(row, "close_notify+") {
		t.Errorf("net/http column: got %q, want close_notify", row)
	}

	r = runCmd(t, "-compare", "-json")
	r.wantCode(t, exitOK)
	clients := map[any]int{}
	for _, o := range jsonLines(t, r.stdout) {
		clients[o["client"]]++
		if o["client"] == clientNetHTTP && o["scenario"] == "early Body.Close (4 MiB)" {
			if saw, _ := o["server_saw"].(string); !strings.HasPrefix(saw, "close_notify") {
				t.Errorf("net/http early Body.Close: server saw %q, want close_notify", saw)
			}
			if _, ok := o["mode"]; ok {
				t.Errorf("net/http row has endwell's teardown fields: %v", o)
			}
		}
	}
	if want := len(wantScenarios) + len(wantH2) + len(wantH3); clients[clientEndwell] != want || clients[clientNetHTTP] != len(wantScenarios) {
		t.Errorf("got rows per client %v, want %d endwell and %d net/http", clients, want, len(wantScenarios))
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		inStderr string
	}{
		{"malformed URL", []string{"http://[::1"}, exitUsage, "malformed URL"},
		{"unsupported scheme", []string{"ftp://example.com/"}, exitUsage, `unsupported scheme "ftp"`},
		{"no scheme", []string{"example.com"}, exitUsage, "did you mean https://example.com"},
		{"host:port without scheme", []string{"localhost:8443"}, exitUsage, "did you mean https://localhost:8443"},
		{"no host", []string{"https:///path"}, exitUsage, "has no host"},
		{"unknown flag", []string{"-bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{"compare with URL", []string{"-compare", "https://127.0.0.1/"}, exitUsage, "-compare"},
		{"n without URL", []string{"-n", "3"}, exitUsage, "-n needs at least one URL"},
		{"zero concurrency", []string{"-n", "3", "-c", "0", "https://127.0.0.1/"}, exitUsage, "-c 0"},
		{"bad timeout", []string{"-timeout", "-1s", "https://127.0.0.1/"}, exitUsage, "-timeout"},
		{"h3 without URL", []string{"-h3"}, exitUsage, "-h3 probes servers over HTTP/3"},
		{"h3 with http URL", []string{"-h3", "http://127.0.0.1/"}, exitUsage, "not an https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, tt.args...)
			r.wantCode(t, tt.code)
			if !strings.Contains(r.stderr, tt.inStderr) || !strings.HasPrefix(r.stderr, "endwell: ") {
				t.Errorf("stderr: got %q, want an endwell: message containing %q", r.stderr, tt.inStderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout: got %q, want nothing", r.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	r := runCmd(t, "-h")
	r.wantCode(t, exitOK)
	for _, s := range []string{"Usage:", "Examples:", "-compare", "-json", "-n N", "-c C", "-timeout", "-budget", "-insecure", "-k", "-h3", "QUIC CLOSE"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("-h output lacks %q", s)
		}
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachable(t *testing.T) {
	r := runCmd(t, "-timeout", "5s", "https://"+closedPort(t)+"/")
	r.wantCode(t, exitFailure)
	if !strings.Contains(r.stderr, "cannot connect") || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("stderr: got %q, want cannot connect ... connection refused", r.stderr)
	}
}

func TestTLSFailure(t *testing.T) {
	s := startTestWitness(t, witness.Options{})
	r := runCmd(t, s.URL()+"/")
	r.wantCode(t, exitFailure)
	if !strings.Contains(r.stderr, "TLS handshake") || !strings.Contains(r.stderr, "-insecure") {
		t.Errorf("stderr: got %q, want a TLS handshake failure with a hint about -insecure", r.stderr)
	}
}

func TestNotTLS(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	r := runCmd(t, strings.Replace(srv.URL, "http://", "https://", 1))
	r.wantCode(t, exitFailure)
	if !strings.Contains(r.stderr, "does not speak TLS") {
		t.Errorf("stderr: got %q, want a hint that the server does not speak TLS", r.stderr)
	}
}

func TestFetch(t *testing.T) {
	s := startTestWitness(t, witness.Options{})
	r := runCmd(t, "-insecure", s.URL()+"/a", s.URL()+"/b")
	r.wantCode(t, exitOK)
	for _, s := range []string{"/a: 200 OK", "/b: 200 OK", "shutdown", "graceful", "clean", "sent+recv", "answers close_notify"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	// The command exits once its socket is closed; the server's side of the story may
	// still be on its way (its reader sees the FIN a moment later).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reps, err := s.WaitConns(ctx, 1)
	if err != nil || len(s.Reports()) != 1 || reps[0].Requests != 2 || reps[0].ClientEnding() != "close_notify+FIN" {
		t.Errorf("server saw %v (%v), want one connection, 2 requests, ended with close_notify+FIN", s.Reports(), err)
	}
}

func TestFetchJSON(t *testing.T) {
	s := startTestWitness(t, witness.Options{OnCloseNotify: witness.AnswerNone})
	r := runCmd(t, "-json", "-k", s.URL())
	r.wantCode(t, exitOK)
	objs := jsonLines(t, r.stdout)
	if len(objs) != 1 {
		t.Fatalf("got %d JSON objects, want 1:\n%s", len(objs), r.stdout)
	}
	o := objs[0]
	if o["kind"] != "connection" || o["server"] != s.Addr() || o["protocol"] != "http/1.1" {
		t.Errorf("got kind %v server %v protocol %v, want connection %s http/1.1", o["kind"], o["server"], o["protocol"], s.Addr())
	}
	// A peer that never answers close_notify closes when endwell's FIN arrives.
	if o["reason"] != "shutdown" || o["outcome"] != "peer_silent" || o["close_notify_sent"] != true || o["close_notify_received"] != false {
		t.Errorf("got %v, want shutdown, peer_silent, close_notify sent and not received", o)
	}
}

func TestFetchPlainHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello\n"))
	}))
	defer srv.Close()
	r := runCmd(t, srv.URL)
	r.wantCode(t, exitOK)
	if !strings.Contains(r.stdout, "200 OK") || !strings.Contains(r.stdout, "answers FIN") {
		t.Errorf("stdout lacks 200 OK or the FIN verdict:\n%s", r.stdout)
	}
}

func TestLoad(t *testing.T) {
	s := startTestWitness(t, witness.Options{})
	r := runCmd(t, "-k", "-n", "40", "-c", "4", "-json", s.URL())
	r.wantCode(t, exitOK)
	objs := jsonLines(t, r.stdout)
	if len(objs) < 2 {
		t.Fatalf("got %d JSON objects, want connections and a summary:\n%s", len(objs), r.stdout)
	}
	sum := objs[len(objs)-1]
	if sum["kind"] != "summary" || sum["requests"] != 40.0 || sum["ok"] != 40.0 || sum["failed"] != 0.0 {
		t.Errorf("summary: got %v, want 40 requests, all ok", sum)
	}
	// Connections may outnumber -c: a request that waits dials, and the connection it dialled
	// may go idle when another frees first.
	if conns := sum["connections"].(float64); int(conns) != len(objs)-1 {
		t.Errorf("summary: got %v connections, want %d (one per connection object)", conns, len(objs)-1)
	}
	closes := 0.0
	for _, c := range sum["closes"].([]any) {
		closes += c.(map[string]any)["count"].(float64)
	}
	if closes != float64(len(objs)-1) {
		t.Errorf("summary: got %v closes, want %d", closes, len(objs)-1)
	}
	lat := sum["latency_ms"].(map[string]any)
	if !(lat["p50"].(float64) <= lat["p90"].(float64) && lat["p90"].(float64) <= lat["p99"].(float64) && lat["p99"].(float64) <= lat["max"].(float64)) {
		t.Errorf("latency percentiles out of order: %v", lat)
	}

	r = runCmd(t, "-k", "-n", "10", "-c", "2", s.URL())
	r.wantCode(t, exitOK)
	for _, s := range []string{"10 requests", "10 ok, 0 failed", "p50", "p99", "closes:", "graceful/shutdown/clean"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("summary lacks %q:\n%s", s, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\r") {
		t.Errorf("progress bar drawn on a stdout that is not a terminal:\n%q", r.stdout)
	}
}

func TestLoadFailures(t *testing.T) {
	r := runCmd(t, "-n", "6", "-c", "3", "https://"+closedPort(t)+"/")
	r.wantCode(t, exitFailure)
	if !strings.Contains(r.stderr, "connection refused (6 times)") {
		t.Errorf("stderr: got %q, want the refused error once, counted 6 times", r.stderr)
	}
	if !strings.Contains(r.stdout, "0 ok, 6 failed") {
		t.Errorf("summary: got %q, want 0 ok, 6 failed", r.stdout)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(1..100ms, %v): got %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil): got %v, want 0", got)
	}
}

func TestDrawBar(t *testing.T) {
	var b bytes.Buffer
	drawBar(&b, 5, 10, 1500*time.Millisecond)
	if got, want := b.String(), "\r[===============>              ] 5/10  50% 1.5s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// startTestH3 starts an embedded HTTP/3 server for the test.
func startTestH3(t *testing.T, setup h3Setup) *h3Witness {
	t.Helper()
	s, err := startH3Witness(setup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestFetchH3: -h3 fetches over HTTP/3 alone, on one connection, and Shutdown ends it with
// CONNECTION_CLOSE(H3_NO_ERROR) and a closing period that answered the server's late packet.
func TestFetchH3(t *testing.T) {
	s := startTestH3(t, h3Setup{})
	// A budget beyond any closing period a busy machine could measure.
	r := runCmd(t, "-h3", "-k", "-budget", "5s", s.URL()+"/a", s.URL()+"/b")
	r.wantCode(t, exitOK)
	for _, want := range []string{"/a: 200 OK", "/b: 200 OK", "(HTTP/3.0)", "QUIC CLOSE", "CLOSING",
		"endwell's CONNECTION_CLOSE sent, its closing period ran its course", "H3_NO_ERROR"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	var row []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, s.addr()+" ") {
			row = strings.Fields(line)
		}
	}
	// SERVER PROTO REASON MODE OUTCOME NOTIFY GOAWAY FIN QUIC-CLOSE CLOSING DRAINED GOODBYE
	if len(row) != 12 || row[1] != "h3" || row[2] != "shutdown" || row[3] != "graceful" || row[4] != "clean" || row[8] != "0x100" {
		t.Errorf("connection row: got %v, want h3 shutdown graceful clean ... 0x100", row)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	saw, err := s.WaitConns(ctx, 1)
	if err != nil || s.numConns() != 1 || s.requests.Load() != 2 {
		t.Fatalf("server saw %v (%v), %d connections, %d requests; want one connection, 2 requests", saw, err, s.numConns(), s.requests.Load())
	}
	checkH3(t, "Shutdown", want{reason: "shutdown", mode: "graceful", outcomes: []string{"clean"}},
		h3Row{row[2], row[3], row[4], row[8], row[9] != "cut", row[9] == "cut", 0, saw[0]})
}

func TestFetchH3JSON(t *testing.T) {
	s := startTestH3(t, h3Setup{})
	r := runCmd(t, "-h3", "-json", "-k", "-budget", "5s", s.URL())
	r.wantCode(t, exitOK)
	objs := jsonLines(t, r.stdout)
	if len(objs) != 1 {
		t.Fatalf("got %d JSON objects, want 1:\n%s", len(objs), r.stdout)
	}
	o := objs[0]
	if o["protocol"] != "h3" || o["server"] != s.addr() || o["reason"] != "shutdown" || o["outcome"] != "clean" {
		t.Errorf("got %v, want h3 to %s, shutdown, clean", o, s.addr())
	}
	if o["connection_close_sent"] != true || o["quic_close_code"] != float64(0x100) || o["connection_close_received"] != false ||
		o["closing_period_over"] != true || o["closing_period_ms"].(float64) <= 0 {
		t.Errorf("got %v, want CONNECTION_CLOSE 0x100 sent and a closing period over", o)
	}
}

// TestVerdictsH3: what fetch says of an HTTP/3 server: whether endwell's closing periods
// ran their course, and the connections it closed itself.
func TestVerdictsH3(t *testing.T) {
	code := uint64(0x100)
	over := &quicTeardown{ConnectionCloseSent: true, QUICCloseCode: &code, ClosingPeriodOver: true, closingPeriod: 90 * time.Millisecond}
	cut := &quicTeardown{ConnectionCloseSent: true, QUICCloseCode: &code}
	drained := &quicTeardown{ConnectionCloseReceived: true}
	tds := []teardown{
		{Server: "h:443", Protocol: "h3", Reason: "shutdown", Mode: "graceful", Outcome: "clean", quicTeardown: over, duration: 90 * time.Millisecond},
		{Server: "h:443", Protocol: "h3", Reason: "shutdown", Mode: "graceful", Outcome: "timed_out", quicTeardown: cut, duration: 2 * time.Second},
		{Server: "h:443", Protocol: "h3", Reason: "peer_closed", Mode: "graceful", Outcome: "clean", quicTeardown: drained},
	}
	v := verdicts(tds, 2*time.Second)
	if len(v) != 1 {
		t.Fatalf("got %q, want one verdict", v)
	}
	for _, want := range []string{"closing period ran its course on 1 of 2", "closing period cut short at the 2s budget on 1 of 2", "closed 1 itself (peer_closed)"} {
		if !strings.Contains(v[0], want) {
			t.Errorf("verdict %q lacks %q", v[0], want)
		}
	}
	if strings.Contains(v[0], "close_notify") {
		t.Errorf("verdict %q speaks of close_notify for HTTP/3", v[0])
	}
	for i, want := range []string{"0x100 90ms", "0x100 cut", "recv -"} {
		if got := quicCloseCell(tds[i]) + " " + closingCell(tds[i]); got != want {
			t.Errorf("QUIC CLOSE and CLOSING of %v: got %q, want %q", tds[i].Reason, got, want)
		}
	}
}

// TestDescribeH3: a QUIC handshake that nothing answers, as -h3 reports it.
func TestDescribeH3(t *testing.T) {
	err := &url.Error{Op: "Get", URL: "https://127.0.0.1:4433/", Err: &endwell.DialError{
		Op: "h3", Addr: "127.0.0.1:4433", Err: fmt.Errorf("h3: dial 127.0.0.1:4433: %w", &quic.HandshakeTimeoutError{}),
	}}
	got := describe(err, 10*time.Second)
	if !strings.HasPrefix(got, "QUIC handshake with 127.0.0.1:4433 timed out") || !strings.Contains(got, "HTTP/3") {
		t.Errorf("got %q, want the QUIC handshake timed out, with a hint", got)
	}
}
