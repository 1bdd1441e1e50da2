package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// ChunkSize is the size of every chunk of a blob but the last, well below
// etcd's default request limit of 1.5 MiB.
const ChunkSize = 512 << 10

// MaxBlobSize bounds one blob.
const MaxBlobSize = 256 << 20

// BlobMeta describes a stored blob. It is written after every chunk, so
// its presence means the blob is whole.
type BlobMeta struct {
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Chunks    int       `json:"chunks"`
	ChunkSize int       `json:"chunk_size"`
	Created   time.Time `json:"created"`
}

// PutBlob stores data under its sha256 and returns its meta. Storing a
// blob that is already stored changes nothing.
func (s *Store) PutBlob(ctx context.Context, data []byte) (BlobMeta, error) {
	if len(data) == 0 {
		return BlobMeta{}, fmt.Errorf("the blob is empty")
	}
	if len(data) > MaxBlobSize {
		return BlobMeta{}, fmt.Errorf("the blob is %d bytes, more than the limit of %d", len(data), MaxBlobSize)
	}
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	if m, err := s.BlobMeta(ctx, sha); err == nil {
		return m, nil
	}
	meta := BlobMeta{SHA256: sha, Size: int64(len(data)), ChunkSize: ChunkSize, Created: s.now().UTC()}
	for i := 0; i*ChunkSize < len(data); i++ {
		chunk := data[i*ChunkSize : min((i+1)*ChunkSize, len(data))]
		if _, err := s.cli.Put(ctx, s.keys.BlobChunk(sha, i), string(chunk)); err != nil {
			return BlobMeta{}, fmt.Errorf("storing blob %s chunk %d: %w", sha, i, err)
		}
		meta.Chunks++
	}
	mb, _ := json.Marshal(meta)
	if _, err := s.cli.Put(ctx, s.keys.BlobMeta(sha), string(mb)); err != nil {
		return BlobMeta{}, fmt.Errorf("storing blob %s: %w", sha, err)
	}
	return meta, nil
}

// BlobMeta returns the meta of a stored blob, or ErrNotFound.
func (s *Store) BlobMeta(ctx context.Context, sha string) (BlobMeta, error) {
	return readMeta(ctx, s.cli, s.keys, sha)
}

// Blobs lists the stored blobs.
func (s *Store) Blobs(ctx context.Context) ([]BlobMeta, error) {
	// Only meta keys are small; list keys first, then read the metas.
	resp, err := s.cli.Get(ctx, s.keys.BlobsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing blobs: %w", err)
	}
	var out []BlobMeta
	for _, kv := range resp.Kvs {
		if !bytes.HasSuffix(kv.Key, []byte("/meta")) {
			continue
		}
		r, err := s.cli.Get(ctx, string(kv.Key))
		if err != nil {
			return nil, fmt.Errorf("listing blobs: %w", err)
		}
		if len(r.Kvs) == 1 {
			var m BlobMeta
			if json.Unmarshal(r.Kvs[0].Value, &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// Blob returns a stored blob, verified against its sha256.
func (s *Store) Blob(ctx context.Context, sha string) ([]byte, error) {
	return ReadBlob(ctx, s.cli, s.keys, sha)
}

func readMeta(ctx context.Context, kv clientv3.KV, keys resource.Keys, sha string) (BlobMeta, error) {
	resp, err := kv.Get(ctx, keys.BlobMeta(sha))
	if err != nil {
		return BlobMeta{}, fmt.Errorf("reading blob %s: %w", sha, err)
	}
	if len(resp.Kvs) == 0 {
		return BlobMeta{}, &NotFoundError{What: "blob " + sha}
	}
	var m BlobMeta
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return BlobMeta{}, fmt.Errorf("blob %s: invalid meta: %w", sha, err)
	}
	return m, nil
}

// ReadBlob fetches a blob chunk by chunk from kv and verifies its size and
// sha256. Proxies use it to load plugin modules.
func ReadBlob(ctx context.Context, kv clientv3.KV, keys resource.Keys, sha string) ([]byte, error) {
	if !validSHA(sha) {
		return nil, fmt.Errorf("%q is not a sha256 (64 lowercase hex digits)", sha)
	}
	m, err := readMeta(ctx, kv, keys, sha)
	if err != nil {
		return nil, err
	}
	if m.Size < 0 || m.Size > MaxBlobSize || m.Chunks < 0 || m.Chunks > MaxBlobSize/1024 {
		return nil, fmt.Errorf("blob %s: implausible meta (size %d, %d chunks)", sha, m.Size, m.Chunks)
	}
	buf := make([]byte, 0, m.Size)
	for i := range m.Chunks {
		resp, err := kv.Get(ctx, keys.BlobChunk(sha, i))
		if err != nil {
			return nil, fmt.Errorf("reading blob %s chunk %d: %w", sha, i, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("blob %s: chunk %d is missing", sha, i)
		}
		if int64(len(buf)+len(resp.Kvs[0].Value)) > m.Size {
			return nil, fmt.Errorf("blob %s: chunks exceed the recorded size %d", sha, m.Size)
		}
		buf = append(buf, resp.Kvs[0].Value...)
	}
	if int64(len(buf)) != m.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, expected %d", sha, len(buf), m.Size)
	}
	sum := sha256.Sum256(buf)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return nil, fmt.Errorf("blob %s: content has sha256 %s", sha, got)
	}
	return buf, nil
}

func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
