package witness

import (
	"fmt"
	"strings"
	"time"
)

// ClientEnd says how the client ended its side of a connection on the wire.
type ClientEnd int

const (
	// EndOpen means the client has not ended the connection: it is live,
	// or the server closed the socket while the client still held it open
	// (see [ConnReport.ServerEnd]).
	EndOpen ClientEnd = iota
	// EndFIN means the client sent a TCP FIN.
	EndFIN
	// EndRST means the client sent a TCP RST.
	EndRST
)

// String returns "open", "FIN" or "RST".
func (e ClientEnd) String() string {
	switch e {
	case EndOpen:
		return "open"
	case EndFIN:
		return "FIN"
	case EndRST:
		return "RST"
	}
	return fmt.Sprintf("ClientEnd(%d)", int(e))
}

// ServerEnd says why and how the server ended a connection.
type ServerEnd int

const (
	// ServerEndNone means the server has not begun to end the connection.
	ServerEndNone ServerEnd = iota
	// ServerEndAfterClient means the client ended first (close_notify, FIN
	// or RST) and the server answered as [Options.OnCloseNotify] says, then
	// closed its socket.
	ServerEndAfterClient
	// ServerEndGraceful means the server closed first: close_notify (TLS)
	// then FIN, then it read until the client's FIN or RST, within
	// [Options.DrainTimeout].
	ServerEndGraceful
	// ServerEndFIN means the server closed first with a FIN and no
	// close_notify.
	ServerEndFIN
	// ServerEndRST means the server closed first with an RST.
	ServerEndRST
	// ServerEndTimeout means [Options.ConnTimeout] ran out and the server
	// closed the socket.
	ServerEndTimeout
	// ServerEndShutdown means [Server.Close] closed the socket.
	ServerEndShutdown
	// ServerEndError means a handshake failure or a malformed request ended
	// the connection; [ConnReport.Err] says which.
	ServerEndError
)

// String returns a short description such as "graceful" or "after client".
func (e ServerEnd) String() string {
	switch e {
	case ServerEndNone:
		return "none"
	case ServerEndAfterClient:
		return "after client"
	case ServerEndGraceful:
		return "graceful"
	case ServerEndFIN:
		return "FIN, no close_notify"
	case ServerEndRST:
		return "RST"
	case ServerEndTimeout:
		return "timeout"
	case ServerEndShutdown:
		return "shutdown"
	case ServerEndError:
		return "error"
	}
	return fmt.Sprintf("ServerEnd(%d)", int(e))
}

// ConnReport is what the witness saw on one connection. Reports are
// snapshots: a live connection's report changes until [ConnReport.Ended] is set.
type ConnReport struct {
	// ID numbers connections in accept order, from 1.
	ID int64
	// RemoteAddr is the client's address.
	RemoteAddr string
	// TLS reports whether the connection was served over TLS.
	TLS bool
	// Proto is the ALPN protocol negotiated, "" if none.
	Proto string
	// Requests counts the requests read.
	Requests int
	// RequestLines holds "METHOD request-target" for each request read.
	RequestLines []string

	// CloseNotifyReceived reports whether the client sent a TLS close_notify.
	CloseNotifyReceived bool
	// ClientEnd is the first end of TCP seen from the client: FIN or RST,
	// or EndOpen if none was seen.
	ClientEnd ClientEnd
	// BytesAfterCloseNotify counts raw bytes the client sent after its
	// close_notify (bytes that arrived in the same read as the alert are
	// buffered by crypto/tls and not counted).
	BytesAfterCloseNotify int64

	// ServerEnd says why and how the server ended the connection.
	ServerEnd ServerEnd
	// ServerClosedFirst reports whether the server began ending the
	// connection before the client sent close_notify, FIN or RST.
	ServerClosedFirst bool
	// ServerSentCloseNotify reports whether the server sent close_notify.
	ServerSentCloseNotify bool
	// ServerSentFIN reports whether the server half-closed TCP (FIN) before
	// closing its socket.
	ServerSentFIN bool
	// ServerSentRST reports whether the server reset the connection.
	ServerSentRST bool
	// Err is the first unexpected error: a failed handshake, a malformed
	// request, a TLS error. Nil if none.
	Err error

	// Accepted is when the TCP connection was accepted.
	Accepted time.Time
	// CloseNotifyAt is when the client's close_notify was read.
	CloseNotifyAt time.Time
	// ClientEndAt is when the client's FIN or RST was seen.
	ClientEndAt time.Time
	// ServerEndAt is when the server began ending the connection.
	ServerEndAt time.Time
	// Ended is when the server closed its socket and the report became
	// final; zero while the connection is live.
	Ended time.Time
}

// Done reports whether the connection has ended and the report is final.
func (r ConnReport) Done() bool { return !r.Ended.IsZero() }

// ClientEnding describes how the client ended the connection, for tables:
// "close_notify+FIN", "FIN, no close_notify", "close_notify+RST",
// "RST, no close_notify", "close_notify, still open", "still open";
// for plain TCP just "FIN", "RST" or "still open".
func (r ConnReport) ClientEnding() string {
	if !r.TLS {
		if r.ClientEnd == EndOpen {
			return "still open"
		}
		return r.ClientEnd.String()
	}
	switch {
	case r.CloseNotifyReceived && r.ClientEnd == EndOpen:
		return "close_notify, still open"
	case r.CloseNotifyReceived:
		return "close_notify+" + r.ClientEnd.String()
	case r.ClientEnd == EndOpen:
		return "still open"
	default:
		return r.ClientEnd.String() + ", no close_notify"
	}
}

// ServerEnding describes what the server sent to end the connection:
// "close_notify+FIN", "FIN, no close_notify", "RST", "close_notify",
// "close only" (plain TCP: "FIN", "RST", "close only").
func (r ConnReport) ServerEnding() string {
	var parts []string
	if r.ServerSentCloseNotify {
		parts = append(parts, "close_notify")
	}
	if r.ServerSentFIN {
		parts = append(parts, "FIN")
	}
	if r.ServerSentRST {
		parts = append(parts, "RST")
	}
	s := strings.Join(parts, "+")
	switch {
	case s == "":
		return "close only"
	case r.TLS && !r.ServerSentCloseNotify:
		return s + ", no close_notify"
	}
	return s
}

// String formats the report as one table row, for example
// "#1 tls http/1.1 2 req: client close_notify+FIN; server close_notify+FIN (after client)".
func (r ConnReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d ", r.ID)
	if r.TLS {
		b.WriteString("tls ")
		if r.Proto != "" {
			b.WriteString(r.Proto + " ")
		}
	} else {
		b.WriteString("tcp ")
	}
	fmt.Fprintf(&b, "%d req: client %s; server %s (%s)", r.Requests, r.ClientEnding(), r.ServerEnding(), r.ServerEnd)
	if !r.Done() {
		b.WriteString(" [live]")
	}
	if r.Err != nil {
		fmt.Fprintf(&b, " err=%v", r.Err)
	}
	return b.String()
}
