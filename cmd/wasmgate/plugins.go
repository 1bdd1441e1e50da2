package main

import (
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm"
)

// attachWasm gives srv a Wasm host whose plugins call clusters of the live
// snapshot and export their metrics with the proxy's. blobs fetches modules
// named only by sha256; it may be nil. The returned function closes it.
func attachWasm(srv *proxy.Server, log *zap.Logger, cacheDir string, node *config.Node, blobs func(string) ([]byte, error)) (func(), error) {
	if cacheDir != "" {
		// A read-only file system (a hardened container) costs a compile
		// at every start, not the start itself.
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			log.Warn("the Wasm compilation cache directory is not usable; compiled code is kept in memory only",
				zap.String("dir", cacheDir), zap.Error(err))
			cacheDir = ""
		}
	}
	m, err := wasm.NewManager(wasm.Options{
		CacheDir:   cacheDir,
		Logger:     log.Named("wasm"),
		Registerer: srv.Metrics().Registry,
		Upstreams:  srv,
		Node:       nodeOf(node),
		Blobs:      blobs,
	})
	if err != nil {
		return nil, err
	}
	srv.SetPlugins(wasm.Plugins(m))
	return func() { _ = m.Close() }, nil
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
