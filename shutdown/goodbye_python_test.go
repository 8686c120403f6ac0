package shutdown

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/endwell/endwell/internal/testpeer"
)

// pythonPeer is a TLS server in Python's ssl module (OpenSSL underneath): once the
// handshake is done it says its goodbye the way Python programs do, with unwrap (the
// close_notify) and then either shutdown(SHUT_WR), keeping the socket to read the client's
// answer, or close. It prints its port, then one JSON line saying what it saw.
const pythonPeer = `
import json, socket, ssl, sys
cert, key, style = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
print(ls.getsockname()[1], flush=True)
ls.settimeout(10)
raw, _ = ls.accept()
raw.settimeout(5)
s = ctx.wrap_socket(raw, server_side=True)
rep = {"close_notify": False, "end": "", "error": ""}
# The client sends nothing after its handshake: wait for its word on stdin that it is
# ready (its handshake done, the session tickets read).
sys.stdin.readline()
s.setblocking(False)
try:
    s.unwrap()  # sends close_notify; the second half, reading the client's, would block
except ssl.SSLWantReadError:
    pass
if style == "close":
    s.close()
    print(json.dumps(rep), flush=True)
    sys.exit(0)
socket.socket.shutdown(s, socket.SHUT_WR)  # the FIN, past SSLSocket.shutdown
s.settimeout(5)
plain = s
try:
    plain = s.unwrap()  # reads until the client's close_notify
    rep["close_notify"] = True
except Exception as e:
    rep["error"] = repr(e)
try:
    b = plain.recv(4096)
    rep["end"] = "fin" if b == b"" else "data"
except ConnectionResetError:
    rep["end"] = "rst"
except Exception as e:
    rep["end"] = repr(e)
print(json.dumps(rep), flush=True)
`

// pythonReport is what the Python peer saw: whether the client's close_notify arrived
// (before its FIN: unwrap reads TLS records, and fails at a FIN), and how TCP then ended.
type pythonReport struct {
	CloseNotify bool   `json:"close_notify"`
	End         string `json:"end"`
	Error       string `json:"error"`
}

// The Python peer's lines: its port, then its report.
var (
	pythonPort       = regexp.MustCompile(`(?m)^(\d+)$`)
	pythonReportLine = regexp.MustCompile(`(?m)^\{.*\}$`)
)

// startPythonPeer starts the Python peer with the goodbye style ("half" or "close") and
// returns its address, a function that tells it to say goodbye, and one that returns its
// report. It skips the test if python3 is missing, unless ENDWELL_PEERS=require.
func startPythonPeer(t *testing.T, style string) (addr string, goodbye func(), report func() pythonReport) {
	t.Helper()
	bin := testpeer.Need(t, "python3", "python3")
	certFile, keyFile := writeTestCert(t)
	p := testpeer.Start(t, exec.Command(bin, "-c", pythonPeer, certFile, keyFile, style))
	out, ok := p.WaitOutput(pythonPort, 10*time.Second)
	if !ok {
		t.Fatalf("python peer: no port; output: %s", out)
	}
	port := pythonPort.FindStringSubmatch(out)[1]
	goodbye = func() { io.WriteString(p.Stdin, "go\n") }
	report = func() pythonReport {
		out, ok := p.WaitOutput(pythonReportLine, 10*time.Second)
		if !ok {
			t.Fatalf("python peer: no report; output: %s", out)
		}
		var r pythonReport
		l := pythonReportLine.FindString(out)
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("python peer: report %q: %v", l, err)
		}
		return r
	}
	return net.JoinHostPort("127.0.0.1", port), goodbye, report
}

// TestGoodbyePythonPeer: a peer in Python that says goodbye first. The one that half-closes
// (unwrap, then shutdown(SHUT_WR)) waits for our close_notify and gets it before our FIN:
// clean; the one that closes after unwrap answers our close_notify with a reset, recorded
// as such: peer_silent, ours was not read.
func TestGoodbyePythonPeer(t *testing.T) {
	needPeek(t)
	checkFDs(t)
	tests := []struct {
		style    string
		want     Record
		wantPeer pythonReport
	}{
		{
			style:    "half",
			want:     Record{Outcome: Clean, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true},
			wantPeer: pythonReport{CloseNotify: true, End: "fin"},
		},
		{
			style: "close",
			want:  Record{Outcome: PeerSilent, CloseNotifySent: true, CloseNotifyReceived: true, FINSent: true, FINReceived: true, RSTReceived: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.style, func(t *testing.T) {
			addr, goodbye, report := startPythonPeer(t, tt.style)
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw := Watch(c)
			tc := tls.Client(raw, testClientConfig(t))
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			goodbye()
			// The idle connection's watcher: it reads the peer's close_notify, then the
			// FIN arrives.
			if _, err := io.Copy(io.Discard, tc); err != nil {
				t.Fatalf("reading the peer's close_notify: %v", err)
			}
			if raw.PeerFIN() {
				t.Fatalf("the raw conn saw EOF: the peer's close_notify was not told apart")
			}
			waitFor(t, "the peer's FIN", raw.PeerClosed)
			c.SetDeadline(time.Time{})
			r := Run(t.Context(), Job{
				Layers: []Layer{&TLS{Conn: tc, Raw: raw, PeerClosed: true}, &TCP{Conn: raw, Drain: tc}},
				Mode:   Graceful,
				Budget: time.Second,
			})
			rep := report()
			t.Logf("record: %v, err %v, events %v; python saw %+v", r.Outcome, r.Err, steps(r), rep)
			wantRecord(t, r, tt.want)
			if rep != tt.wantPeer {
				t.Errorf("python saw: got %+v, want %+v", rep, tt.wantPeer)
			}
		})
	}
}
