package endwell

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/endwell/endwell/shutdown"
)

// TestWebSocketOverTLSToH2Server: a WebSocket handshake (an Upgrade request) to an https
// server that also speaks HTTP/2 goes over an HTTP/1.1 connection, as net/http sends it,
// with a real WebSocket library (coder/websocket) on both ends; ordinary requests to the
// same server still share an HTTP/2 connection; the upgraded connection, closed by the
// library after its close handshake, ends through endwell's engine, gracefully.
func TestWebSocketOverTLSToH2Server(t *testing.T) {
	h2CheckLeaks(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			w.Write([]byte(r.Proto))
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), h2Wait)
		defer cancel()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, append([]byte("echo "), msg...)); err != nil {
				return
			}
		}
	}))
	srv.EnableHTTP2 = true
	srv.TLS = h2TestCert(t).server.Clone()
	srv.StartTLS()
	t.Cleanup(srv.Close)

	tr, recs := h2Transport(t, &Transport{})
	client := &http.Client{Transport: tr}

	// An ordinary request: HTTP/2.
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("plain request: got %s, want HTTP/2.0", resp.Proto)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), h2Wait)
	defer cancel()
	wsURL := "wss" + strings.TrimPrefix(srv.URL, "https")
	c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("websocket.Dial over endwell: %v", err)
	}
	if resp.ProtoMajor != 1 || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("handshake: got %s %d, want HTTP/1.1 101", resp.Proto, resp.StatusCode)
	}
	for _, msg := range []string{"hello", "again"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo "+msg {
			t.Errorf("got %q, want %q", got, "echo "+msg)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("close handshake: %v", err)
	}
	r := recs.next(t)
	if r.Mode != shutdown.Graceful || !r.CloseNotifySent {
		t.Errorf("the upgraded connection ended %v (reason %s, outcome %v, close_notify sent %v), want graceful with close_notify",
			r.Mode, r.Reason, r.Outcome, r.CloseNotifySent)
	}

	// The HTTP/2 connection is still there for ordinary requests.
	resp, err = client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("plain request after the WebSocket: got %s, want HTTP/2.0", resp.Proto)
	}
	tr.CloseIdleConnections()
	recs.next(t)
}
