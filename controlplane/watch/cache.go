package watch

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
)

// cacheFile is the cache's format: the resources of the configuration
// last applied and its revision. The proxy-local fields are not kept; the
// bootstrap gives them when the cache is loaded.
type cacheFile struct {
	Revision int64          `json:"revision"`
	Saved    time.Time      `json:"saved"`
	Config   *config.Config `json:"config"`
}

// writeCache saves cfg with the private keys of its certificates
// encrypted with key; without a key it saves no certificates (and the
// cached configuration then fails to validate if a listener names one).
func writeCache(path string, cfg *config.Config, rev int64, key *secret.Key) error {
	c := *cfg
	c.Admin, c.AccessLog, c.Node, c.DrainTimeout, c.ShutdownDelay = config.Admin{}, config.AccessLog{}, config.Node{}, 0, 0
	c.Certificates = nil
	if key != nil {
		for _, cert := range cfg.Certificates {
			cert.KeyPEM = key.Seal(cert.KeyPEM)
			c.Certificates = append(c.Certificates, cert)
		}
	}
	b, err := json.Marshal(cacheFile{Revision: rev, Saved: time.Now().UTC(), Config: &c})
	if err != nil {
		return err
	}
	return writeAtomic(path, b)
}

func readCache(path string, bootstrap *config.Config, key *secret.Key) (*config.Config, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	var c cacheFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, 0, fmt.Errorf("decoding %s: %w", path, err)
	}
	if c.Config == nil || c.Revision <= 0 {
		return nil, 0, fmt.Errorf("%s holds no configuration", path)
	}
	for i, cert := range c.Config.Certificates {
		if c.Config.Certificates[i], err = secret.OpenCertificate(key, cert); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	cfg, err := resource.Assemble(bootstrap, resource.Split(c.Config))
	if err != nil {
		return nil, 0, err
	}
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		return nil, 0, fmt.Errorf("the cached configuration is invalid: %w", err)
	}
	return cfg, c.Revision, nil
}

// writeAtomic replaces path with data: a reader sees the old file or the
// new one, never a part.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func blobPath(cacheFile, sha string) string { return filepath.Join(cacheFile+".blobs", sha+".wasm") }

func readBlobCache(cacheFile, sha string) ([]byte, error) {
	b, err := os.ReadFile(blobPath(cacheFile, sha))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("cached blob %s does not match its digest", sha)
	}
	return b, nil
}

func writeBlobCache(cacheFile, sha string, b []byte) error {
	return writeAtomic(blobPath(cacheFile, sha), b)
}
