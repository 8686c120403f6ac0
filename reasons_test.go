package endwell

// The reasons as the span attribute endwell.close.reason spells them (DESIGN.md's
// teardown span): the tests hold the records to these words, not to proto's table.
const (
	reasonIdleTimeout     = "idle_timeout"
	reasonIdleLimit       = "idle_limit"
	reasonCloseIdle       = "close_idle"
	reasonShutdown        = "shutdown"
	reasonClose           = "close"
	reasonPeerClosed      = "peer_closed"
	reasonGoAwayReceived  = "goaway_received"
	reasonServerClose     = "server_close"
	reasonBodyClosedEarly = "body_closed_early"
	reasonTimeout         = "timeout"
	reasonProtocolError   = "protocol_error"
)
