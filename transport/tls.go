package transport

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ALPN is braid's application protocol on QUIC.
const ALPN = "braid/1"

// Both ends authenticate with an ed25519 key, pinned by the peer as
// WireGuard pins public keys: the certificate is only the envelope TLS 1.3
// needs, self-signed and made at start-up. The TLS handshake's
// CertificateVerify proves possession of the private key behind the pinned
// public key, so no CA is involved.

// certificate wraps key in a self-signed certificate.
func certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		DNSNames:     []string{"braid"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ErrUnknownPeer is returned when a peer presents a key we do not know.
var ErrUnknownPeer = errors.New("peer key not authorised")

// peerKey extracts the ed25519 key of the first certificate in raw.
func peerKey(raw [][]byte) (ed25519.PublicKey, error) {
	if len(raw) == 0 {
		return nil, errors.New("peer sent no certificate")
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("peer certificate has a %T key, want ed25519", cert.PublicKey)
	}
	return pub, nil
}

// pinned verifies that the peer's certificate holds a key that ok accepts.
func pinned(who string, ok func(ed25519.PublicKey) bool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		pub, err := peerKey(raw)
		if err != nil {
			return err
		}
		if !ok(pub) {
			return fmt.Errorf("%s key %x...: %w", who, pub[:4], ErrUnknownPeer)
		}
		return nil
	}
}

// ClientTLS is the TLS configuration of a client that authenticates with
// key and accepts only a concentrator holding the private half of server.
func ClientTLS(key ed25519.PrivateKey, server ed25519.PublicKey) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		NextProtos:            []string{ALPN},
		ServerName:            "braid",
		InsecureSkipVerify:    true, // replaced by the key pin below
		VerifyPeerCertificate: pinned("concentrator", func(k ed25519.PublicKey) bool { return bytes.Equal(k, server) }),
	}, nil
}

// ServerTLS is the TLS configuration of a concentrator that authenticates
// with key and admits a client only when authorised(its key) is true.
func ServerTLS(key ed25519.PrivateKey, authorised func(ed25519.PublicKey) bool) (*tls.Config, error) {
	cert, err := certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cert},
		NextProtos:            []string{ALPN},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: pinned("client", authorised),
	}, nil
}
