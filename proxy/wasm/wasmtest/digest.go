package wasmtest

import (
	"crypto/sha256"
	"encoding/hex"
)

func digest(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}
