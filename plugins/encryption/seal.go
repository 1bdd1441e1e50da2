package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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
	a := kr.active
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(value)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := a.Seal(nonce, nonce, []byte(value), []byte(strings.ToLower(name)))
	return sealPrefix + kr.activeID + ":" + base64.RawURLEncoding.EncodeToString(out), nil
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
