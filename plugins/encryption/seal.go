package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A sealed header value reads "enc:v1:<key id>:<base64url(nonce || ciphertext)>".
// The header's lower-case name is the AEAD's additional data, so a value
// moved to another header does not decrypt.
const sealPrefix = "enc:v1:"

type keyring struct {
	byID     map[string]cipher.AEAD
	active   cipher.AEAD
	activeID string

	// Reused by sealTo: a guest runs one request at a time.
	nonces         nonceSource
	scratch, plain []byte
}

func newKeyring(keys map[string]string, active string) (*keyring, error) {
	kr := &keyring{byID: map[string]cipher.AEAD{}}
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if id == "" || strings.Contains(id, ":") {
			return nil, fmt.Errorf("keys: id %q must be non-empty and without ':'", id)
		}
		raw, err := base64.StdEncoding.DecodeString(keys[id])
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("keys.%s: want 32 bytes in standard base64 (AES-256)", id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		kr.byID[id] = aead
	}
	if active != "" {
		a, ok := kr.byID[active]
		if !ok {
			return nil, fmt.Errorf("active_key: %q is not among keys", active)
		}
		kr.active, kr.activeID = a, active
	}
	return kr, nil
}

func (kr *keyring) seal(name, value string) (string, error) {
	b, err := kr.sealTo(nil, []byte(strings.ToLower(name)), value)
	return string(b), err
}

// sealTo appends the sealed form of value to dst, with aad (the header's
// lower-case name) as additional data.
func (kr *keyring) sealTo(dst, aad []byte, value string) ([]byte, error) {
	a := kr.active
	ns, ov := a.NonceSize(), a.Overhead()
	kr.scratch = slices.Grow(kr.scratch[:0], ns+len(value)+ov)[:ns]
	if err := kr.nonces.read(kr.scratch); err != nil {
		return dst, err
	}
	kr.plain = append(kr.plain[:0], value...)
	out := a.Seal(kr.scratch, kr.scratch, kr.plain, aad)
	kr.scratch = out[:0]
	dst = append(dst, sealPrefix...)
	dst = append(dst, kr.activeID...)
	dst = append(dst, ':')
	return base64.RawURLEncoding.AppendEncode(dst, out), nil
}

// nonceSource hands out random nonces from a buffer filled from
// crypto/rand: one read of the system's randomness (a call into the host)
// serves 85 requests. Every byte is handed out once.
type nonceSource struct {
	buf  [1020]byte
	left int // unread bytes at the end of buf
}

func (n *nonceSource) read(dst []byte) error {
	if n.left < len(dst) {
		if _, err := rand.Read(n.buf[:]); err != nil {
			return err
		}
		n.left = len(n.buf)
	}
	copy(dst, n.buf[len(n.buf)-n.left:])
	n.left -= len(dst)
	return nil
}

var errNotSealed = errors.New("not an enc:v1 value")

func (kr *keyring) open(name, sealed string) (string, error) {
	rest, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return "", errNotSealed
	}
	id, data, ok := strings.Cut(rest, ":")
	if !ok {
		return "", errNotSealed
	}
	a := kr.byID[id]
	if a == nil {
		return "", fmt.Errorf("unknown key %q", id)
	}
	b, err := base64.RawURLEncoding.DecodeString(data)
	if err != nil || len(b) < a.NonceSize()+a.Overhead() {
		return "", errNotSealed
	}
	pt, err := a.Open(nil, b[:a.NonceSize()], b[a.NonceSize():], []byte(strings.ToLower(name)))
	if err != nil {
		return "", errors.New("authentication failed")
	}
	return string(pt), nil
}
