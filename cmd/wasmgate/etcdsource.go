package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/watch"
	"github.com/wasmgate/wasmgate/internal/buildinfo"
	"github.com/wasmgate/wasmgate/proxy/telemetry"
)

// client connects to the etcd cluster the flags name.
func (f *etcdFlags) client() (*clientv3.Client, error) {
	tlsCfg, err := f.tls()
	if err != nil {
		return nil, err
	}
	password := f.password
	if password == "" {
		password = os.Getenv("WASMGATE_ETCD_PASSWORD")
	}
	// A connection that dies without closing (a partition, a stopped
	// host) is found dead within 7s; etcd refuses pings more often than
	// every 5s (--grpc-keepalive-min-time). One that closes is seen at
	// once.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            f.endpoints,
		DialTimeout:          3 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  tlsCfg,
		Username:             f.user,
		Password:             password,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return cli, nil
}

// etcdSource is how a proxy follows the control plane.
type etcdSource struct {
	client    *clientv3.Client
	prefix    string
	cacheFile string
	// register is the address the proxy announces in the registry; empty
	// means no registration.
	register string
	// secret decrypts certificates' private keys; nil for none.
	secret *secret.Key
}

// runFromEtcd starts a proxy with no configuration and lets the watcher
// give it one: from etcd, or from the cache file while etcd is unreachable.
// bootstrap holds the proxy-local settings (admin, access log, node).
func runFromEtcd(ctx context.Context, src etcdSource, bootstrap *config.Config, log *zap.Logger, o runOptions) (*runner, *watch.Watcher, error) {
	var r *runner
	var w *watch.Watcher
	var tel *proxyTelemetry
	o.telemetry = &tel
	local := &localTelemetry{t: bootstrap.Telemetry}
	wo := watch.Options{
		Client:    src.client,
		Prefix:    src.prefix,
		Bootstrap: bootstrap,
		CacheFile: src.cacheFile,
		SecretKey: src.secret,
		Logger:    log.Named("watch"),
		Apply: func(cfg *config.Config, rev int64) error {
			start := time.Now()
			// The telemetry section is the proxy's own, from
			// --local-config: the control plane's carries none.
			local.mu.Lock()
			defer local.mu.Unlock()
			cfg.Telemetry = local.t
			change := changeRevision(ctx, src, rev)
			revision := strconv.FormatInt(change, 10)
			if err := r.srv.Apply(ctx, cfg, revision); err != nil {
				tel.event("config_rejected", telemetry.Error, err.Error(), revisionAttr(revision))
				return err
			}
			tel.event("config_applied", telemetry.Info, "configuration applied", revisionAttr(revision))
			log.Info("configuration applied", zap.Int64("revision", change), zap.Int64("etcd_revision", rev), zap.Duration("took", time.Since(start)))
			return nil
		},
	}
	if src.register != "" {
		wo.Register = &watch.Registration{Address: src.register, Version: buildinfo.Version(),
			Traffic: func() registry.Traffic { return tel.traffic() }}
	}
	w, err := watch.New(wo)
	if err != nil {
		return nil, nil, err
	}
	o.blobs = func(sha string) ([]byte, error) {
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return w.Blob(bctx, sha)
	}
	o.checks = append(o.checks, func() (bool, string) {
		st := w.Status()
		switch {
		case !st.Ready():
			return false, "waiting for a configuration from the control plane"
		case st.FromCache:
			return true, "serving the last good configuration from the cache: the control plane is unreachable"
		}
		return true, ""
	})
	r, err = startProxy(ctx, bootstrap, log, o)
	if err != nil {
		return nil, nil, err
	}
	if o.localConfig != "" {
		// Before the first configuration: SIGHUP must not end the
		// process once the proxy serves.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go r.watchLocalConfig(ctx, hup, o.localConfig, local)
	}
	go func() {
		if err := w.Run(ctx); err != nil {
			log.Error("the control plane watcher stopped", zap.Error(err))
		}
	}()
	return r, w, nil
}

// localTelemetry is the telemetry section of --local-config, with which
// every configuration from the control plane is applied.
type localTelemetry struct {
	mu sync.Mutex // held while a configuration is applied with t
	t  *config.Telemetry
}

// watchLocalConfig reads --local-config again at each signal on hup until
// ctx is done.
func (r *runner) watchLocalConfig(ctx context.Context, hup chan os.Signal, file string, local *localTelemetry) {
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reloadLocalConfig(file, local)
		}
	}
}

// reloadLocalConfig puts the telemetry section of file in force: sinks
// whose settings did not change keep their queues. A bad file is logged
// and a config_rejected event, and the running telemetry stays.
func (r *runner) reloadLocalConfig(file string, local *localTelemetry) {
	t, err := loadLocalTelemetry(file)
	if err == nil {
		local.mu.Lock()
		if err = r.tel.pipe.Reconfigure(t); err == nil {
			local.t = t
		}
		local.mu.Unlock()
	}
	if err != nil {
		r.log.Error("--local-config rejected; the running telemetry stays", zap.String("file", file), zap.Error(err))
		r.tel.event("config_rejected", telemetry.Error, err.Error(), telemetry.Attr{Key: "file", Value: file})
		return
	}
	r.log.Info("telemetry reloaded", zap.String("file", file))
	r.tel.event("config_applied", telemetry.Info, "telemetry reloaded", telemetry.Attr{Key: "file", Value: file})
}

// changeRevision is the revision of the latest change at or before etcd
// revision rev: the number the control plane's history, ctl and /config
// show for the configuration read at rev. When etcd cannot tell (it is
// unreachable, or rev was compacted), it is rev.
func changeRevision(ctx context.Context, src etcdSource, rev int64) int64 {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	resp, err := src.client.Get(ctx, resource.NewKeys(src.prefix).Head(), clientv3.WithRev(rev))
	if err != nil || len(resp.Kvs) == 0 {
		return rev
	}
	return resp.Kvs[0].ModRevision
}

// defaultCacheFile is where a proxy keeps its last good configuration.
func defaultCacheFile(dir string) string {
	return filepath.Join(dir, "last-good.json")
}
