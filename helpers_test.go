package endwell_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchTLS returns a server and a client TLS configuration that trust each other, borrowed
// from an httptest server's built-in certificate.
func benchTLS(tb testing.TB) (server, client *tls.Config) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.StartTLS()
	defer srv.Close()
	server = srv.TLS.Clone()
	server.NextProtos = []string{"http/1.1"}
	return server, srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}
