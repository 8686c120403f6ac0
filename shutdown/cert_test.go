package shutdown

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCert is the tests' self-signed certificate for 127.0.0.1, made once.
var testCert = sync.OnceValues(func() (*testCertificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		// Fixed dates: the certificate may be made inside a synctest bubble, whose clock
		// starts in 2000, and used outside it.
		NotBefore:             time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &testCertificate{
		cert:    tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pool:    pool,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
})

type testCertificate struct {
	cert            tls.Certificate
	pool            *x509.CertPool
	certPEM, keyPEM []byte
}

func loadTestCert(t *testing.T) *testCertificate {
	t.Helper()
	c, err := testCert()
	if err != nil {
		t.Fatalf("test certificate: %v", err)
	}
	return c
}

func testServerConfig(t *testing.T) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{loadTestCert(t).cert}}
}

func testClientConfig(t *testing.T) *tls.Config {
	return &tls.Config{RootCAs: loadTestCert(t).pool, ServerName: "127.0.0.1"}
}

// writeTestCert writes the certificate and key as PEM files in a temporary directory.
func writeTestCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	c := loadTestCert(t)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
