package shutdown

import (
	"crypto/tls"
	"testing"

	"github.com/endwell/endwell/internal/testpeer"
)

// The tests' certificate is testpeer's: self-signed, for 127.0.0.1, ::1 and localhost, made
// once, with fixed dates (it may be made inside a synctest bubble and used outside it).

func testServerConfig(t *testing.T) *tls.Config {
	return testpeer.TestCert(t).ServerConfig()
}

func testClientConfig(t *testing.T) *tls.Config {
	cfg := testpeer.TestCert(t).ClientConfig()
	cfg.ServerName = "127.0.0.1"
	return cfg
}

// writeTestCert writes the certificate and key as PEM files in a temporary directory.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	return testpeer.TestCert(t).WriteFiles(t, t.TempDir())
}
