package config

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	pub, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	priv, err := LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		t.Error("loaded key does not match the generated public key")
	}
	if _, err := GenerateKeyFile(path); err == nil || !strings.Contains(err.Error(), path+" already exists") {
		t.Errorf("overwrite: got %v", err)
	}
}

func TestLoadPrivateKeyMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.pem")
	if _, err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode os.FileMode
		want string
	}{
		{0o600, ""},
		{0o400, ""},
		{0o644, "private key file " + path + " is accessible by others (mode 0644); chmod 600 it"},
		{0o640, "private key file " + path + " is accessible by others (mode 0640); chmod 600 it"},
		{0o602, "private key file " + path + " is accessible by others (mode 0602); chmod 600 it"},
	}
	for _, tt := range tests {
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPrivateKey(path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || err.Error() != tt.want) {
			t.Errorf("mode %#o: got %v, want %q", tt.mode, err, tt.want)
		}
	}
}

func TestLoadPrivateKeyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rsaLike := "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
	tests := []struct{ path, want string }{
		{filepath.Join(dir, "missing.pem"), "no such file or directory"},
		{write("garbage.pem", "hello"), `no PEM "PRIVATE KEY" block`},
		{write("public.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), `no PEM "PRIVATE KEY" block`},
		{write("bad.pem", rsaLike), "bad PKCS#8 key"},
	}
	for _, tt := range tests {
		_, err := LoadPrivateKey(tt.path)
		if prefix := "private key file " + tt.path + ": "; err == nil || !strings.HasPrefix(err.Error(), prefix+tt.want) {
			t.Errorf("%s: got %v, want %s%s", tt.path, err, prefix, tt.want)
		}
	}
}

func TestPublicKey(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePublicKey(EncodePublicKey(pub))
	if err != nil || !bytes.Equal(got, pub) {
		t.Errorf("round trip: got %x, %v; want %x", got, err, pub)
	}
	for _, s := range []string{"", "AAAA", "not base64", strings.Repeat("A", 44) + "AAAA"} {
		if _, err := ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", s)
		}
	}
}
