package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/wasmgate/wasmgate/sdk"
)

// A sealed header value reads "enc:v1:<key id>:<base64url(nonce || ciphertext)>".
// The header's lower-case name is the AEAD's additional data, so a value
// moved to another header does not decrypt.
const sealPrefix = "enc:v1:"

type keyring struct {
	byID      map[string]cipher.AEAD
	rawByID   map[string][]byte
	active    cipher.AEAD
	activeRaw []byte
	activeID  string

	// Reused by sealTo: a guest runs one request at a time.
	nonces               nonceSource
	scratch, plain, args []byte
}

// The host's AES-GCM (wasmgate's foreign functions), when it has it:
// hardware AES, tens of times faster than the guest's software AES, and
// without its key-dependent table reads. Other hosts answer NOT_FOUND,
// and the filter seals in the guest.
const (
	hostSeal = "wasmgate_aes_gcm_seal"
	hostOpen = "wasmgate_aes_gcm_open"
)

// hostAES says whether the host has its AES-GCM: unknown until the first
// call tells.
var hostAES = aesUnknown

const (
	aesUnknown = iota
	aesInHost
	aesInGuest
)

// hostAEAD seals (or opens) data with key in the host. ok is false when
// the host has no AES-GCM of its own, or refused the arguments: the
// caller does the work itself. A ciphertext that does not authenticate
// is err.
func (kr *keyring) hostAEAD(fn string, key, nonce, aad, data []byte) (out []byte, ok bool, err error) {
	if hostAES == aesInGuest {
		return nil, false, nil
	}
	a := kr.args[:0]
	a = binary.LittleEndian.AppendUint32(a, uint32(len(key)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(nonce)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(aad)))
	a = append(append(append(append(a, key...), nonce...), aad...), data...)
	kr.args = a
	out, err = sdk.CallForeignFunction(fn, a)
	switch {
	case err == nil:
		hostAES = aesInHost
		return out, true, nil
	case errors.Is(err, sdk.ErrNotFound) && hostAES == aesUnknown:
		hostAES = aesInGuest
	case errors.Is(err, sdk.ErrParse):
		return nil, true, errAuth
	}
	return nil, false, nil
}

var errAuth = errors.New("authentication failed")

// hostSealHeaderFn seals a header in place in the host (wasmgate's
// foreign function): one call where the guest makes three, and encodes.
const hostSealHeaderFn = "wasmgate_seal_header"

// hostSealHeader says whether the host seals headers in place: unknown
// until the first call tells.
var hostSealHeader = aesUnknown

// sealHeaderInHost seals the request header whose lower-case name is aad
// in the host, as sealTo would, in place. handled is false when the host
// has no such function, or refused the arguments: the caller does the
// work itself. found reports whether the request had the header.
func (kr *keyring) sealHeaderInHost(aad []byte) (found, handled bool) {
	if hostSealHeader == aesInGuest {
		return false, false
	}
	var nonce [12]byte
	if kr.nonces.read(nonce[:]) != nil {
		return false, false
	}
	a := kr.args[:0]
	a = binary.LittleEndian.AppendUint32(a, 0) // the request's headers
	a = binary.LittleEndian.AppendUint32(a, uint32(len(kr.activeRaw)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(nonce)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(aad)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(sealPrefix)+len(kr.activeID)+1))
	a = append(append(append(a, kr.activeRaw...), nonce[:]...), aad...)
	a = append(append(append(a, sealPrefix...), kr.activeID...), ':')
	kr.args = a
	_, err := sdk.CallForeignFunction(hostSealHeaderFn, a)
	switch {
	case err == nil:
		hostSealHeader = aesInHost
		return true, true
	case errors.Is(err, sdk.ErrEmpty):
		return false, true
	case errors.Is(err, sdk.ErrNotFound) && hostSealHeader == aesUnknown:
		hostSealHeader = aesInGuest
	}
	return false, false
}

func newKeyring(keys map[string]string, active string) (*keyring, error) {
	kr := &keyring{byID: map[string]cipher.AEAD{}, rawByID: map[string][]byte{}}
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
		kr.byID[id], kr.rawByID[id] = aead, raw
	}
	if active != "" {
		a, ok := kr.byID[active]
		if !ok {
			return nil, fmt.Errorf("active_key: %q is not among keys", active)
		}
		kr.active, kr.activeRaw, kr.activeID = a, kr.rawByID[active], active
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
	var out []byte
	if ct, ok, _ := kr.hostAEAD(hostSeal, kr.activeRaw, kr.scratch, aad, kr.plain); ok {
		out = append(kr.scratch, ct...)
	} else {
		out = a.Seal(kr.scratch, kr.scratch, kr.plain, aad)
	}
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
	nonce, ct, aad := b[:a.NonceSize()], b[a.NonceSize():], []byte(strings.ToLower(name))
	pt, ok, err := kr.hostAEAD(hostOpen, kr.rawByID[id], nonce, aad, ct)
	if !ok {
		pt, err = a.Open(nil, nonce, ct, aad)
	}
	if err != nil {
		return "", errAuth
	}
	return string(pt), nil
}
