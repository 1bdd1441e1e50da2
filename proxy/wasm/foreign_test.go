package wasm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"testing"

	"github.com/wasmgate/wasmgate/sdk/abi"
)

// aeadArgs lays out the arguments of wasmgate_aes_gcm_seal and _open.
func aeadArgs(key, nonce, aad, data []byte) []byte {
	var a []byte
	a = binary.LittleEndian.AppendUint32(a, uint32(len(key)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(nonce)))
	a = binary.LittleEndian.AppendUint32(a, uint32(len(aad)))
	return append(append(append(append(a, key...), nonce...), aad...), data...)
}

// TestForeignAESGCM checks the host's AES-GCM against Go's crypto/cipher
// for every key size, and the statuses of arguments it refuses.
func TestForeignAESGCM(t *testing.T) {
	seal, open := foreignFuncs["wasmgate_aes_gcm_seal"], foreignFuncs["wasmgate_aes_gcm_open"]
	in := &instance{}
	nonce, aad, plain := bytes.Repeat([]byte{7}, 12), []byte("x-secret"), []byte("4111-1111-1111-1111")
	for _, n := range []int{16, 24, 32} {
		key := bytes.Repeat([]byte{byte(n)}, n)
		block, _ := aes.NewCipher(key)
		ref, _ := cipher.NewGCM(block)
		want := ref.Seal(nil, nonce, plain, aad)
		got, st := seal(in, aeadArgs(key, nonce, aad, plain))
		if st != abi.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("AES-%d seal: %x %v, want %x", n*8, got, st, want)
		}
		back, st := open(in, aeadArgs(key, nonce, aad, want))
		if st != abi.StatusOK || !bytes.Equal(back, plain) {
			t.Fatalf("AES-%d open: %q %v", n*8, back, st)
		}
		tampered := append([]byte(nil), want...)
		tampered[0] ^= 1
		if _, st := open(in, aeadArgs(key, nonce, aad, tampered)); st != abi.StatusParseFailure {
			t.Errorf("AES-%d: a tampered ciphertext gave %v", n*8, st)
		}
		if _, st := open(in, aeadArgs(key, nonce, []byte("x-other"), want)); st != abi.StatusParseFailure {
			t.Errorf("AES-%d: other additional data gave %v", n*8, st)
		}
	}
	key := bytes.Repeat([]byte{1}, 32)
	for name, args := range map[string][]byte{
		"short":            {1, 2, 3},
		"key of 20 bytes":  aeadArgs(key[:20], nonce, aad, plain),
		"nonce of 8 bytes": aeadArgs(key, nonce[:8], aad, plain),
		"lengths past the end": func() []byte {
			a := aeadArgs(key, nonce, aad, nil)
			binary.LittleEndian.PutUint32(a[8:], 1<<31)
			return a
		}(),
	} {
		if _, st := seal(in, args); st != abi.StatusBadArgument {
			t.Errorf("seal, %s: %v", name, st)
		}
	}
	if _, st := open(in, aeadArgs(key, nonce, aad, []byte("short"))); st != abi.StatusBadArgument {
		t.Errorf("open of less than a tag: %v", st)
	}
}

// BenchmarkForeignAESGCM is the host's side of sealing one header value.
func BenchmarkForeignAESGCM(b *testing.B) {
	seal := foreignFuncs["wasmgate_aes_gcm_seal"]
	in := &instance{}
	args := aeadArgs(bytes.Repeat([]byte{1}, 32), make([]byte, 12), []byte("x-secret"), []byte("4111-1111-1111-1111"))
	b.ReportAllocs()
	for b.Loop() {
		if _, st := seal(in, args); st != abi.StatusOK {
			b.Fatal(st)
		}
	}
}
