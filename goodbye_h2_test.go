package endwell

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/endwell/endwell/shutdown"
	"golang.org/x/net/http2"
)

// TestGoodbyeH2FlowControlError: a server that sends DATA beyond the window the client
// gave its stream breaks flow control: RFC 9113, section 6.9.1, makes that a connection
// error of type FLOW_CONTROL_ERROR. The GOAWAY endwell sends says so, and so does the
// record's error.
//
// x/net (v0.62.0 built by Go 1.26) and net/http's HTTP/2 under Go 1.27 both find the
// violation in processData, whose ConnectionError(ErrCodeFlowControl) ends the read loop
// without a call of CountError (it counts only the errors of ReadFrame, as
// "read_frame_conn_error_..."), and both queue their own GOAWAY(FLOW_CONTROL_ERROR)
// unflushed before closing: endwell's closedByNet sees no code, and says PROTOCOL_ERROR.
func TestGoodbyeH2FlowControlError(t *testing.T) {
	h2CheckLeaks(t)
	s := newH2FrameServer(t, func(s *h2FrameServer) {
		s.onHeaders = func(sc *h2ServerConn, id uint32, path string) bool {
			sc.respond(id, 200, "", false)
			// DATA, never waiting for a WINDOW_UPDATE, until the client goes: the
			// client's stream window (4 MiB by default) runs out long before 64 MiB.
			chunk := make([]byte, 16<<10)
			for range 4096 {
				if err := sc.write(func(fr *http2.Framer) error { return fr.WriteData(id, false, chunk) }); err != nil {
					break
				}
			}
			return true
		}
	})
	tr, recs := h2Transport(t, &Transport{})
	resp, err := tr.RoundTrip(mustGet(t, s.url("/")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // the body is not read: the window fills
	sc := s.conn(t, 0)
	f := sc.waitFrame(t, "GOAWAY", isFrame(http2.FrameGoAway, 0))
	if f.Code != http2.ErrCodeFlowControl {
		t.Errorf("got %v, want GOAWAY code=FLOW_CONTROL_ERROR", f)
	}
	wantRecord(t, recs.next(t), shutdown.Abort, reasonProtocolError)
	// What the request sees once it has read what arrived in the window: why endwell
	// ended the connection.
	_, err = io.Copy(io.Discard, resp.Body)
	var pe *ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "FLOW_CONTROL_ERROR") {
		t.Errorf("reading the body: got %v, want a *ProtocolError saying FLOW_CONTROL_ERROR", err)
	}
}
