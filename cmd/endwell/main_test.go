package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

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

func TestScenariosTable(t *testing.T) {
	r := runCmd(t)
	r.wantCode(t, exitOK)
	// rows holds each row's fields after the scenario's name, by name and protocol.
	rows := map[string][]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		for name := range wantScenarios {
			if f := strings.Fields(strings.TrimPrefix(line, name+" ")); strings.HasPrefix(line, name+" ") && len(f) > 0 {
				rows[name+" "+f[0]] = f
			}
		}
	}
	check := func(name, proto string, w want) {
		t.Run(name+" "+proto, func(t *testing.T) {
			f, ok := rows[name+" "+proto]
			if !ok {
				t.Fatalf("no %s row for %q in:\n%s", proto, name, r.stdout)
			}
			// PROTO REASON MODE OUTCOME NOTIFY GOAWAY FIN DRAINED(2 fields) TOOK SERVER SAW...
			if len(f) < 11 {
				t.Fatalf("got %d fields, want at least 11: %v", len(f), f)
			}
			if f[1] != w.reason || f[2] != w.mode || !slices.Contains(w.outcomes, f[3]) {
				t.Errorf("got %v, want %s %s %v", f[1:4], w.reason, w.mode, w.outcomes)
			}
			if w.mode == "abort" && f[4] != "no" {
				t.Errorf("NOTIFY: got %q, want no: an abort sends no close_notify", f[4])
			}
			wantGoAway := map[string]string{"http/1.1": "-", "h2": "no"}[proto]
			if proto == "h2" && w.mode == "graceful" {
				wantGoAway = "sent"
			}
			if f[5] != wantGoAway {
				t.Errorf("GOAWAY: got %q, want %q", f[5], wantGoAway)
			}
			if f[3] == "clean" && (f[4] != "sent+recv" || !strings.HasPrefix(f[6], "sent+recv") || proto == "h2" && f[5] != "sent") {
				t.Errorf("clean with NOTIFY %q, GOAWAY %q, FIN %q: want every goodbye said both ways", f[4], f[5], f[6])
			}
			if proto != "http/1.1" {
				return
			}
			saw := strings.Join(f[10:], " ")
			// The row agrees with what the server saw: endwell's close_notify, and its
			// FIN unless the server had stopped reading.
			if sent := strings.HasPrefix(f[4], "sent"); saw != "still open" && sent != strings.HasPrefix(saw, "close_notify") {
				t.Errorf("NOTIFY %q, but the server saw %q", f[4], saw)
			}
			if sent := strings.HasPrefix(f[6], "sent"); sent && saw != "still open" && !strings.Contains(saw, "FIN") {
				t.Errorf("FIN %q, but the server saw %q", f[6], saw)
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
}

func TestScenariosJSON(t *testing.T) {
	r := runCmd(t, "-json")
	r.wantCode(t, exitOK)
	objs := jsonLines(t, r.stdout)
	if want := len(wantScenarios) + len(wantH2); len(objs) != want {
		t.Fatalf("got %d JSON objects, want %d (one per scenario and protocol)", len(objs), want)
	}
	for _, o := range objs {
		name, _ := o["scenario"].(string)
		w, ok := wantScenarios[name]
		if o["protocol"] == "h2" {
			w, ok = wantH2[name]
			if want := w.mode == "graceful"; o["goaway_sent"] != want {
				t.Errorf("%s over h2: got goaway_sent %v, want %v", name, o["goaway_sent"], want)
			}
		}
		if !ok {
			t.Errorf("unexpected scenario %q", name)
			continue
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
		if o["reason"] != w.reason || o["mode"] != w.mode || !slices.Contains(w.outcomes, o["outcome"].(string)) {
			t.Errorf("%s: got %v/%v/%v, want %s/%s/%v", name, o["reason"], o["mode"], o["outcome"], w.reason, w.mode, w.outcomes)
		}
		if w.mode == "abort" && o["close_notify_sent"] != false {
			t.Errorf("%s: got close_notify_sent %v, want false", name, o["close_notify_sent"])
		}
		if o["outcome"] == "clean" {
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
	if clients[clientEndwell] != len(wantScenarios)+len(wantH2) || clients[clientNetHTTP] != len(wantScenarios) {
		t.Errorf("got rows per client %v, want %d endwell and %d net/http", clients, len(wantScenarios)+len(wantH2), len(wantScenarios))
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
	for _, s := range []string{"Usage:", "Examples:", "-compare", "-json", "-n N", "-c C", "-timeout", "-budget", "-insecure", "-k"} {
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
