package secret_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/secret"
)

func mustKey(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := mustKey(t)
	const plain = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
	a, b := k.Seal(plain), k.Seal(plain)
	if !secret.Sealed(a) || strings.Contains(a, "PRIVATE KEY") {
		t.Fatalf("sealed value %q", a)
	}
	if a == b {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
	if got, err := k.Open(a); err != nil || got != plain {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := mustKey(t).Open(a); !errors.Is(err, secret.ErrWrongKey) {
		t.Fatalf("Open with another key: %v; want ErrWrongKey", err)
	}
	tampered := a[:len(a)-2] + "AA"
	if _, err := k.Open(tampered); err == nil {
		t.Fatal("an altered value opened")
	}
}

func TestParseKey(t *testing.T) {
	for _, tt := range []struct{ name, text, want string }{
		{"not base64", "!!!", "not base64"},
		{"short", "YWJj", "3 bytes, want 32"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := secret.ParseKey([]byte(tt.text)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseKey(%q) = %v; want %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestOpenCertificate(t *testing.T) {
	k := mustKey(t)
	c := config.Certificate{Name: "site", CertPEM: "c", KeyPEM: k.Seal("key")}
	if got, err := secret.OpenCertificate(k, c); err != nil || got.KeyPEM != "key" {
		t.Fatalf("OpenCertificate = %+v, %v", got, err)
	}
	if _, err := secret.OpenCertificate(nil, c); err == nil || !strings.Contains(err.Error(), "--secret-key-file") {
		t.Fatalf("without a key: %v", err)
	}
	plain := config.Certificate{Name: "site", CertPEM: "c", KeyPEM: "key"}
	if got, err := secret.OpenCertificate(nil, plain); err != nil || got != plain {
		t.Fatalf("a clear key: %+v, %v", got, err)
	}
}
