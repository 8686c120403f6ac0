package endwell_test

import (
	"crypto/tls"
	"testing"

	"github.com/endwell/endwell/internal/testpeer"
)

// benchTLS returns a server and a client TLS configuration that trust each other (testpeer's
// certificate); the server's offers HTTP/1.1 by ALPN.
func benchTLS(tb testing.TB) (server, client *tls.Config) {
	c := testpeer.TestCert(tb)
	return c.ServerConfig("http/1.1"), c.ClientConfig()
}
