// Package secret seals the private keys of certificates that the control
// plane stores: AES-256-GCM under a 32-byte key shared by the control plane
// and the proxies, so that etcd and its backups never hold a key in clear.
//
// A sealed value is "enc:v1:" followed by the base64 of a 12-byte nonce and
// the ciphertext.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/config/redact"
)

// Prefix starts every sealed value.
const Prefix = "enc:v1:"

// Key is an AES-256-GCM key. It is safe for concurrent use.
type Key struct{ aead cipher.AEAD }

// ParseKey reads a key from its base64 text (standard or URL encoding,
// surrounding space ignored). It must decode to 32 bytes.
func ParseKey(text []byte) (*Key, error) {
	s := strings.TrimSpace(string(text))
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.URLEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, fmt.Errorf("secret key: not base64: %w", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("secret key: %d bytes, want 32", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Key{aead: aead}, nil
}

// LoadKey reads a key from a file written by NewKeyText.
func LoadKey(file string) (*Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return k, nil
}

// NewKeyText returns a new random key as base64 text with a newline.
func NewKeyText() []byte {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return []byte(base64.StdEncoding.EncodeToString(raw) + "\n")
}

// Sealed reports whether s is a sealed value.
func Sealed(s string) bool { return strings.HasPrefix(s, Prefix) }

// Seal encrypts plain with a fresh random nonce.
func (k *Key) Seal(plain string) string {
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := k.aead.Seal(nonce, nonce, []byte(plain), nil)
	return Prefix + base64.StdEncoding.EncodeToString(out)
}

// ErrWrongKey is returned for a sealed value that does not open with the
// key: another key sealed it, or it was altered.
var ErrWrongKey = errors.New("cannot decrypt: sealed with another secret key, or altered")

// Open decrypts a sealed value.
func (k *Key) Open(sealed string) (string, error) {
	b64, ok := strings.CutPrefix(sealed, Prefix)
	if !ok {
		return "", errors.New("not a sealed value (want " + Prefix + "...)")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", fmt.Errorf("sealed value: %w", err)
	}
	n := k.aead.NonceSize()
	if len(raw) < n+k.aead.Overhead() {
		return "", errors.New("sealed value: too short")
	}
	plain, err := k.aead.Open(nil, raw[:n], raw[n:], nil)
	if err != nil {
		return "", ErrWrongKey
	}
	return string(plain), nil
}

// OpenCertificate returns c with its private key decrypted. A key that is
// not sealed is returned as it is. k may be nil when nothing is sealed.
func OpenCertificate(k *Key, c config.Certificate) (config.Certificate, error) {
	if !Sealed(c.KeyPEM) {
		return c, nil
	}
	if k == nil {
		return c, fmt.Errorf("certificate %q: key_pem is encrypted and no secret key is configured (--secret-key-file)", c.Name)
	}
	plain, err := k.Open(c.KeyPEM)
	if err != nil {
		return c, fmt.Errorf("certificate %q: key_pem: %w", c.Name, err)
	}
	c.KeyPEM = plain
	return c, nil
}

// Redacted is what reads through the control plane's API show in place of
// a private key.
const Redacted = redact.Marker
