package endwell

import (
	"github.com/endwell/endwell/internal/proto"

	"crypto/tls"
	"fmt"
	"net"
	"testing"
)

// TestGoodbyeFailureReason: the reasons of the aborts issue 18 found misnamed. crypto/tls
// returns a malformed record's error as the value tls.RecordHeaderError, never a pointer:
// a protocol error, however deep in the chain. A request body still going out when the
// response is complete is a body left before its end.
func TestGoodbyeFailureReason(t *testing.T) {
	rhe := tls.RecordHeaderError{Msg: "received record with version 5454 when expecting version 303"}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"tls.RecordHeaderError", rhe, reasonProtocolError},
		{"tls.RecordHeaderError, wrapped", fmt.Errorf("reading the response: %w", rhe), reasonProtocolError},
		{"tls.RecordHeaderError, in a net.OpError", &net.OpError{Op: "read", Net: "tcp", Err: rhe}, reasonProtocolError},
		{"request body still being written", proto.ErrBodyStillWriting, reasonBodyClosedEarly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := failureReason(tt.err).String(); got != tt.want {
				t.Errorf("failureReason(%v): got %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
