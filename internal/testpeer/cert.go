package testpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Cert is a self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost, made once
// per process. It is its own CA: a client trusts it with [Cert.Pool].
type Cert struct {
	// Certificate is the certificate and its key, as a server's [tls.Config] holds them.
	Certificate tls.Certificate
	// Leaf is the parsed certificate.
	Leaf *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its key (PKCS #8), PEM-encoded.
	CertPEM, KeyPEM []byte
}

// LoadCert returns the process's certificate, generating it on first use. Cert's methods
// return new values: the certificate itself is shared, and must not be modified.
var LoadCert = sync.OnceValues(generateCert)

// TestCert returns [LoadCert]'s certificate, failing the test if it could not be made.
func TestCert(t TB) *Cert {
	t.Helper()
	c, err := LoadCert()
	if err != nil {
		t.Fatalf("test certificate: %v", err)
	}
	return c
}

func generateCert() (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpeer: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("testpeer: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "endwell loopback"},
		// Fixed dates: the certificate may be made inside a synctest bubble, whose clock
		// starts in 2000, and used outside it (or the other way round).
		NotBefore:             time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testpeer: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testpeer: parse certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpeer: marshal key: %w", err)
	}
	return &Cert{
		Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		Leaf:        leaf,
		CertPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

// ServerConfig returns a new server configuration that serves the certificate and offers
// nextProtos by ALPN (none if empty).
func (c *Cert) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.Certificate}, NextProtos: nextProtos}
}

// Pool returns a new pool that trusts the certificate: the caller may add to it.
func (c *Cert) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

// ClientConfig returns a new client configuration that trusts the certificate (RootCAs
// only: the server name comes from the URL, or the caller sets it).
func (c *Cert) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: c.Pool()}
}

// WriteFiles writes the certificate and its key into dir as PEM files, cert.pem and key.pem
// (the key readable by its owner only), for a child process, and returns their paths.
func (c *Cert) WriteFiles(t TB, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.CertPEM, 0o644); err != nil {
		t.Fatalf("testpeer: %v", err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatalf("testpeer: %v", err)
	}
	return certFile, keyFile
}
