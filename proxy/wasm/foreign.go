package wasm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// Foreign functions are what proxy_call_foreign_function offers: Envoy's
// extension point for work a host does better than a guest. Envoy's own
// (compress, expr_evaluate, ...) are Envoy's; wasmgate offers these, and
// NOT_FOUND for any other name, as Envoy does for a name it lacks. A guest
// that uses them keeps a fallback of its own for other hosts.
var foreignFuncs = map[string]func(in *instance, args []byte) ([]byte, abi.Status){
	// AES-GCM with the host's instructions: a guest's software AES is
	// tens of times slower, and reads key-dependent tables, which leaks
	// timing. The first-party encryption filter seals with these.
	"wasmgate_aes_gcm_seal": foreignAESGCM(true),
	"wasmgate_aes_gcm_open": foreignAESGCM(false),
}

func hostCallForeignFunction(in *instance, a []uint64) abi.Status {
	name, ok := in.mem.Read(u32(a[0]), u32(a[1]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	fn := foreignFuncs[string(name)]
	if fn == nil {
		return abi.StatusNotFound
	}
	args, ok := in.mem.Read(u32(a[2]), u32(a[3]))
	if !ok {
		return abi.StatusInvalidMemoryAccess
	}
	out, st := fn(in, args)
	if st != abi.StatusOK {
		return st
	}
	return in.copyOut(out, u32(a[4]), u32(a[5]))
}

// foreignAESGCM seals (or opens) with AES-GCM. Its arguments, integers
// little-endian:
//
//	u32 key length (16, 24 or 32) | u32 nonce length (12) | u32 AAD length |
//	key | nonce | AAD | plaintext (to seal) or ciphertext and tag (to open)
//
// It returns the ciphertext and its 16-byte tag, or the plaintext:
// BAD_ARGUMENT for arguments not so made, PARSE_FAILURE for a ciphertext
// that does not authenticate.
func foreignAESGCM(seal bool) func(in *instance, args []byte) ([]byte, abi.Status) {
	return func(in *instance, args []byte) ([]byte, abi.Status) {
		if len(args) < 12 {
			return nil, abi.StatusBadArgument
		}
		kn := binary.LittleEndian.Uint32(args)
		nn := binary.LittleEndian.Uint32(args[4:])
		an := binary.LittleEndian.Uint32(args[8:])
		rest := args[12:]
		if (kn != 16 && kn != 24 && kn != 32) || nn != gcmNonceSize ||
			uint64(kn)+uint64(nn)+uint64(an) > uint64(len(rest)) {
			return nil, abi.StatusBadArgument
		}
		key, nonce := rest[:kn], rest[kn:kn+nn]
		aad, data := rest[kn+nn:kn+nn+an], rest[kn+nn+an:]
		aead := in.aeads.get(key)
		// The result goes to a buffer of the instance: copyOut copies it
		// into the guest before the next call can reuse it.
		if seal {
			in.foreignOut = aead.Seal(in.foreignOut[:0], nonce, data, aad)
			return in.foreignOut, abi.StatusOK
		}
		if len(data) < aead.Overhead() {
			return nil, abi.StatusBadArgument
		}
		out, err := aead.Open(in.foreignOut[:0], nonce, data, aad)
		if err != nil {
			return nil, abi.StatusParseFailure
		}
		in.foreignOut = out
		return out, abi.StatusOK
	}
}

const gcmNonceSize = 12

// aeadCache keeps an instance's AES-GCM ciphers by key, so that a filter
// sealing with the same few keys request after request does not expand
// its key every time. A guest runs one call at a time: no lock.
type aeadCache struct {
	entries [4]struct {
		key  []byte
		aead cipher.AEAD
	}
	next int
}

func (c *aeadCache) get(key []byte) cipher.AEAD {
	for i := range c.entries {
		if e := &c.entries[i]; e.aead != nil && bytes.Equal(e.key, key) {
			return e.aead
		}
	}
	block, _ := aes.NewCipher(key) // the length was checked
	aead, _ := cipher.NewGCM(block)
	e := &c.entries[c.next]
	c.next = (c.next + 1) % len(c.entries)
	e.key, e.aead = append(e.key[:0], key...), aead
	return aead
}
