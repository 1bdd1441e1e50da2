package main

import (
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/metrics"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// newWasmHost returns the Wasm host of a proxy: its plugins export their
// metrics with the proxy's, and call the clusters of the live snapshot
// once the proxy has applied a configuration. blobs fetches modules named
// only by sha256; it may be nil.
func newWasmHost(met *metrics.Metrics, log *zap.Logger, cacheDir string, node *config.Node, blobs func(string) ([]byte, error)) (*wasm.Host, error) {
	if cacheDir != "" {
		// A read-only file system (a hardened container) costs a compile
		// at every start, not the start itself.
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			log.Warn("the Wasm compilation cache directory is not usable; compiled code is kept in memory only",
				zap.String("dir", cacheDir), zap.Error(err))
			cacheDir = ""
		}
	}
	// The proxy hands the host its upstreams for proxy_http_call.
	return wasm.NewHost(wasm.Options{
		CacheDir:   cacheDir,
		Logger:     log.Named("wasm"),
		Registerer: met.Registry,
		Node:       nodeOf(node),
		Blobs:      blobs,
	})
}

// defaultCacheDir is where compiled Wasm code is kept across restarts.
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "wasmgate", "wasm")
	}
	return filepath.Join(os.TempDir(), "wasmgate-wasm-cache")
}

func nodeOf(n *config.Node) *filter.Node {
	return &filter.Node{ID: n.ID, Metadata: n.Metadata}
}
