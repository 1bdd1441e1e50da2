// Package watch is the proxy's side of the control plane: it keeps a
// config.Config in step with etcd and hands each new one to the proxy.
//
// A Watcher lists the configuration keys at one revision, assembles and
// validates a config.Config, calls Apply, and then watches the key range
// from the next revision. A burst of events becomes one Apply. On a
// compacted or lost watch, or when the connection to etcd comes back, it
// lists again. A value that does not decode, or a configuration that does
// not validate, is logged with the reason and skipped: the proxy keeps
// what it runs. The last configuration applied is saved to a cache file,
// which a proxy that starts while etcd is unreachable serves from.
package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

// Options configure a Watcher. Client and Apply are required.
type Options struct {
	// Client reaches etcd. The Watcher does not close it.
	Client *clientv3.Client
	// Prefix is the key prefix; empty means /wasmgate.
	Prefix string
	// Bootstrap gives the proxy-local fields of every configuration:
	// admin, access_log, node and drain_timeout. Its resources are
	// ignored; those come from etcd. Nil means all defaults.
	Bootstrap *config.Config
	// CacheFile, when set, receives the last configuration applied
	// (written atomically), and is loaded when etcd cannot be reached at
	// start. Verified plugin blobs are kept beside it, in CacheFile+".blobs".
	CacheFile string
	// Apply installs a configuration. It is called from one goroutine, one
	// call at a time; cfg is normalized, validated and owned by the callee.
	// An error keeps the previous configuration and is reported.
	Apply func(cfg *config.Config, revision int64) error
	// Logger receives what the watcher does; nil discards it.
	Logger *zap.Logger
	// Debounce is the quiet time that gathers a burst of events into one
	// Apply. Zero means 15ms.
	Debounce time.Duration
	// MaxDelay bounds how long a steady stream of events defers an Apply.
	// Zero means 200ms.
	MaxDelay time.Duration
	// RequestTimeout bounds one list. Zero means 3s.
	RequestTimeout time.Duration
	// SecretKey decrypts the private keys of certificates, which the
	// control plane stores encrypted, and encrypts them again in
	// CacheFile. Nil rejects every certificate with an encrypted key.
	SecretKey *secret.Key
	// Register, when set, registers the proxy under a lease with its node
	// id (Bootstrap.Node.ID, or the host name), this address and version,
	// and reports each revision applied and the last error.
	Register *Registration
}

// Registration says how a proxy presents itself in the registry.
type Registration struct {
	Address string
	Version string
	// TTL of the registration's lease. Zero means 10s.
	TTL time.Duration
	// Traffic, when set, is sampled every 15s and reported with the
	// registration (the fleet heartbeat).
	Traffic func() registry.Traffic
}

// Status is what a Watcher has done so far.
type Status struct {
	// Revision is the etcd revision of the configuration applied; zero
	// before the first.
	Revision int64
	// FromCache is true while the configuration applied came from the
	// cache file, because etcd was not reachable.
	FromCache bool
	// Watching is true while a watch on etcd is established.
	Watching bool
	// LastError is the last rejected configuration or failed Apply, empty
	// once a later configuration applied.
	LastError string
	// Applied is when the configuration was applied.
	Applied time.Time
}

// Ready reports whether a configuration has been applied, from etcd or
// from the cache.
func (s Status) Ready() bool { return s.Revision > 0 }

// Watcher keeps a proxy's configuration in step with etcd. Create it with
// New and start it with Run.
type Watcher struct {
	o     Options
	keys  resource.Keys
	log   *zap.Logger
	proxy *registry.Proxy

	mu     sync.Mutex
	status Status
	// lostAt is when etcd was found unreachable; zero while it is
	// reachable. It makes the loss and the return logged once each.
	lostAt time.Time

	// Owned by Run.
	values    map[resource.Ref]any
	raw       map[resource.Ref][]byte
	endpoints map[string]registry.Endpoint
	rejected  map[string]string // key -> reason its last value was ignored
	rev       int64
	applied   []byte // canonical form of the configuration last applied
}

// New checks the options and returns a Watcher.
func New(o Options) (*Watcher, error) {
	if o.Client == nil {
		return nil, errors.New("watch: Options.Client is required")
	}
	if o.Apply == nil {
		return nil, errors.New("watch: Options.Apply is required")
	}
	if o.Debounce == 0 {
		o.Debounce = 15 * time.Millisecond
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 200 * time.Millisecond
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 3 * time.Second
	}
	boot := &config.Config{}
	if o.Bootstrap != nil {
		boot.Admin, boot.AccessLog, boot.DrainTimeout, boot.Node = o.Bootstrap.Admin, o.Bootstrap.AccessLog, o.Bootstrap.DrainTimeout, o.Bootstrap.Node
		boot.ShutdownDelay = o.Bootstrap.ShutdownDelay
	}
	boot.Normalize()
	o.Bootstrap = boot
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	w := &Watcher{o: o, keys: resource.NewKeys(o.Prefix), log: o.Logger}
	if o.Register != nil {
		id := o.Bootstrap.Node.ID
		if id == "" {
			id, _ = os.Hostname()
		}
		w.proxy = registry.NewProxy(o.Client, o.Prefix, registry.ProxyInfo{NodeID: id, Address: o.Register.Address, Version: o.Register.Version}, o.Register.TTL, o.Logger)
		if o.Register.Traffic != nil {
			w.proxy.SetTrafficSource(o.Register.Traffic, 15*time.Second)
		}
	}
	return w, nil
}

// Run is New followed by Watcher.Run.
func Run(ctx context.Context, o Options) error {
	w, err := New(o)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// Status returns what the watcher has done so far. It is safe to call
// from any goroutine, for example from a /ready handler.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Run keeps the configuration in step until ctx ends, and returns nil
// then. It survives etcd restarts and lost watches.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if w.proxy != nil {
		wg.Add(1)
		go func() { defer wg.Done(); w.proxy.Run(ctx) }()
	}
	reconnected := make(chan struct{}, 1)
	wg.Add(1)
	go func() { defer wg.Done(); w.watchConnection(ctx, reconnected) }()

	backoff := 100 * time.Millisecond
	triedCache := false
	for ctx.Err() == nil {
		rev, err := w.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.lost("listing the configuration failed", err)
			if !triedCache {
				triedCache = true
				w.loadCache()
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		triedCache = true
		w.back()
		w.rebuild(rev)
		// A reconnect seen before this list is covered by it.
		select {
		case <-reconnected:
		default:
		}
		reason := w.watch(ctx, rev, reconnected)
		if ctx.Err() == nil {
			w.log.Info("listing the configuration again", zap.String("reason", reason), zap.Int64("revision", w.rev))
		}
	}
	return nil
}

// watchConnection signals reconnected each time the client's connection
// becomes ready again after it was lost, and reports the loss at once: a
// watch on a lost connection says nothing until it is back.
func (w *Watcher) watchConnection(ctx context.Context, reconnected chan<- struct{}) {
	conn := w.o.Client.ActiveConnection()
	if conn == nil {
		return
	}
	state := conn.GetState()
	lost := false
	for conn.WaitForStateChange(ctx, state) {
		was := state
		state = conn.GetState()
		switch state {
		case connectivity.TransientFailure, connectivity.Idle, connectivity.Connecting:
			if was == connectivity.Ready {
				w.lost("the connection to etcd was lost", nil)
			}
			lost = true
		case connectivity.Ready:
			if lost {
				lost = false
				select {
				case reconnected <- struct{}{}:
				default:
				}
			}
		}
	}
}

// lost records that etcd cannot be reached, and says so once: at the
// first sign, and not again until it is back.
func (w *Watcher) lost(reason string, err error) {
	w.mu.Lock()
	first := w.lostAt.IsZero()
	if first {
		w.lostAt = time.Now()
	}
	rev, fromCache := w.status.Revision, w.status.FromCache
	w.mu.Unlock()
	if !first {
		if ce := w.log.Check(zap.DebugLevel, "etcd is still unreachable"); ce != nil {
			ce.Write(zap.String("reason", reason), zap.Error(err))
		}
		return
	}
	serving := "no configuration yet"
	switch {
	case rev > 0 && fromCache:
		serving = "the cached configuration"
	case rev > 0:
		serving = "the configuration it has"
	}
	w.log.Warn("etcd is unreachable; the proxy keeps serving "+serving+" and retries until etcd is back",
		zap.String("reason", reason), zap.Error(err), zap.Int64("revision", rev))
}

// back records that etcd answered again, and says so once.
func (w *Watcher) back() {
	w.mu.Lock()
	since := w.lostAt
	w.lostAt = time.Time{}
	w.mu.Unlock()
	if !since.IsZero() {
		w.log.Info("etcd is reachable again", zap.Duration("after", time.Since(since).Round(time.Millisecond)))
	}
}

// list reads every configuration key at one revision and replaces the
// watcher's state with it.
func (w *Watcher) list(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), w.o.RequestTimeout)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpGet(w.keys.EndpointsPrefix(), clientv3.WithPrefix())}
	for _, k := range resource.Kinds {
		ops = append(ops, clientv3.OpGet(w.keys.Kind(k), clientv3.WithPrefix()))
	}
	resp, err := w.o.Client.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	w.values = map[resource.Ref]any{}
	w.raw = map[resource.Ref][]byte{}
	w.endpoints = map[string]registry.Endpoint{}
	w.rejected = map[string]string{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			w.put(string(kv.Key), kv.Value)
		}
	}
	w.rev = resp.Header.Revision
	return w.rev, nil
}

// put records one key's new value; a value that does not decode, or is
// larger than a resource may be (store.MaxResourceBytes), is logged and
// skipped, keeping the key's previous value.
func (w *Watcher) put(key string, value []byte) bool {
	if len(value) > store.MaxResourceBytes {
		if _, ok := w.keys.ParseResource(key); ok {
			w.reject(key, store.TooLarge(len(value)))
		} else if _, _, ok := w.keys.ParseEndpoint(key); ok {
			w.reject(key, store.TooLarge(len(value)))
		}
		return false
	}
	if ref, ok := w.keys.ParseResource(key); ok {
		v, err := resource.Decode(ref, value)
		if err == nil {
			if c, ok := v.(*config.Certificate); ok {
				var plain config.Certificate
				plain, err = secret.OpenCertificate(w.o.SecretKey, *c)
				v = &plain
			}
		}
		if err != nil {
			w.reject(key, err)
			return false
		}
		// Normalized once, here, before anything shares it: the
		// configurations assembled from it share its slices.
		resource.Normalize(v)
		delete(w.rejected, key)
		w.values[ref], w.raw[ref] = v, value
		return true
	}
	if _, _, ok := w.keys.ParseEndpoint(key); ok {
		ep, err := registry.DecodeEndpoint(w.keys, key, value)
		if err != nil {
			w.reject(key, err)
			return false
		}
		delete(w.rejected, key)
		w.endpoints[key] = ep
		return true
	}
	return false
}

func (w *Watcher) reject(key string, err error) {
	w.rejected[key] = err.Error()
	w.log.Error("ignoring an invalid value in etcd; keeping the previous one", zap.String("key", key), zap.Error(err))
}

func (w *Watcher) remove(key string) bool {
	delete(w.rejected, key)
	if ref, ok := w.keys.ParseResource(key); ok {
		delete(w.values, ref)
		delete(w.raw, ref)
		return true
	}
	if _, ok := w.endpoints[key]; ok {
		delete(w.endpoints, key)
		return true
	}
	return false
}

// watch follows the key range from rev+1 until the watch must be
// re-established, and says why.
func (w *Watcher) watch(ctx context.Context, rev int64, reconnected <-chan struct{}) string {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	begin, end := w.keys.ConfigRange()
	wch := w.o.Client.Watch(wctx, begin, clientv3.WithRange(end), clientv3.WithRev(rev+1))
	w.setWatching(true)
	defer w.setWatching(false)

	var (
		timer      = time.NewTimer(time.Hour)
		dirty      bool
		firstDirty time.Time
	)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return "stopping"
		case <-reconnected:
			return "the connection to etcd was re-established"
		case resp, ok := <-wch:
			if !ok {
				return "the watch channel closed"
			}
			if err := resp.Err(); err != nil {
				if dirty {
					w.rebuild(w.rev)
				}
				return "watch ended: " + err.Error()
			}
			if resp.Canceled {
				return "the watch was canceled"
			}
			changed := false
			for _, ev := range resp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					changed = w.put(string(ev.Kv.Key), ev.Kv.Value) || changed
				case clientv3.EventTypeDelete:
					changed = w.remove(string(ev.Kv.Key)) || changed
				}
			}
			if resp.Header.Revision > w.rev {
				w.rev = resp.Header.Revision
			}
			if len(resp.Events) == 0 {
				continue
			}
			if !changed && !dirty {
				// Only the head or the history moved, or a value was
				// rejected: report the revision, keep the configuration.
				w.rebuild(w.rev)
				continue
			}
			now := time.Now()
			if !dirty {
				dirty, firstDirty = true, now
			}
			wait := min(w.o.Debounce, w.o.MaxDelay-now.Sub(firstDirty))
			timer.Reset(max(wait, 0))
		case <-timer.C:
			dirty = false
			w.rebuild(w.rev)
		}
	}
}

func (w *Watcher) setWatching(on bool) {
	w.mu.Lock()
	w.status.Watching = on
	w.mu.Unlock()
}

// rebuild assembles, validates and applies the current state.
func (w *Watcher) rebuild(rev int64) {
	set := resource.Set{}
	for r, v := range w.values {
		set[r] = v
	}
	// Assembled without a copy: values are normalized when decoded and
	// never changed, so an unchanged virtual host reaches the proxy with
	// the routes it compiled before, and it reuses them without comparing.
	cfg := resource.AssembleShared(w.o.Bootstrap, set)
	w.fillEndpoints(cfg)
	if err := cfg.Validate(); err != nil {
		w.log.Error("rejecting the configuration in etcd; keeping the one applied",
			zap.Int64("revision", rev), zap.String("reason", err.Error()))
		w.fail(fmt.Errorf("configuration at revision %d is invalid: %s", rev, strings.ReplaceAll(err.Error(), "\n", "; ")), rev)
		return
	}
	canonical, err := resource.Encode(cfg)
	if err != nil {
		w.fail(err, rev)
		return
	}
	if w.applied != nil && string(canonical) == string(w.applied) {
		w.succeed(rev, false, nil, false)
		return
	}
	if err := w.o.Apply(cfg, rev); err != nil {
		w.log.Error("the proxy did not apply the configuration; keeping the one applied", zap.Int64("revision", rev), zap.Error(err))
		w.fail(fmt.Errorf("applying revision %d: %w", rev, err), rev)
		return
	}
	w.applied = canonical
	w.log.Info("configuration applied", zap.Int64("revision", rev))
	w.succeed(rev, false, nil, true)
	if w.o.CacheFile != "" {
		if err := writeCache(w.o.CacheFile, cfg, rev, w.o.SecretKey); err != nil {
			w.log.Warn("cannot save the configuration cache", zap.String("file", w.o.CacheFile), zap.Error(err))
		}
	}
}

// fillEndpoints gives each cluster with registry discovery its registered
// endpoints, sorted by id, one per address.
func (w *Watcher) fillEndpoints(cfg *config.Config) {
	byCluster := map[string][]registry.Endpoint{}
	for _, ep := range w.endpoints {
		byCluster[ep.Cluster] = append(byCluster[ep.Cluster], ep)
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		if c.Discovery != config.DiscoveryRegistry {
			continue
		}
		eps := byCluster[c.Name]
		slices.SortFunc(eps, func(a, b registry.Endpoint) int { return strings.Compare(a.ID, b.ID) })
		seen := map[string]bool{}
		c.Endpoints = []config.Endpoint{}
		for _, ep := range eps {
			if seen[ep.Address] {
				continue
			}
			seen[ep.Address] = true
			weight := ep.Weight
			if weight == 0 {
				weight = 1
			}
			c.Endpoints = append(c.Endpoints, config.Endpoint{Address: ep.Address, Weight: weight})
		}
	}
}

func (w *Watcher) fail(err error, rev int64) {
	w.mu.Lock()
	w.status.LastError = err.Error()
	applied, fromCache := w.status.Revision, w.status.FromCache
	w.mu.Unlock()
	if w.proxy != nil {
		w.proxy.Update(applied, fromCache, err)
	}
}

// succeed records that the configuration at rev is the one running.
func (w *Watcher) succeed(rev int64, fromCache bool, err error, applied bool) {
	lastErr := err
	if lastErr == nil && len(w.rejected) > 0 {
		keys := make([]string, 0, len(w.rejected))
		for k := range w.rejected {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ": " + w.rejected[k]
		}
		lastErr = fmt.Errorf("ignored invalid values: %s", strings.Join(parts, "; "))
	}
	w.mu.Lock()
	w.status.Revision = rev
	w.status.FromCache = fromCache
	w.status.LastError = ""
	if lastErr != nil {
		w.status.LastError = lastErr.Error()
	}
	if applied {
		w.status.Applied = time.Now()
	}
	w.mu.Unlock()
	if w.proxy != nil {
		w.proxy.Update(rev, fromCache, lastErr)
	}
}

// loadCache applies the cached configuration, if there is one and nothing
// has been applied yet.
func (w *Watcher) loadCache() {
	if w.o.CacheFile == "" || w.Status().Ready() {
		return
	}
	cfg, rev, err := readCache(w.o.CacheFile, w.o.Bootstrap, w.o.SecretKey)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.log.Error("cannot use the configuration cache", zap.String("file", w.o.CacheFile), zap.Error(err))
		}
		return
	}
	if err := w.o.Apply(cfg, rev); err != nil {
		w.log.Error("the proxy did not apply the cached configuration", zap.Int64("revision", rev), zap.Error(err))
		w.fail(fmt.Errorf("applying the cached revision %d: %w", rev, err), rev)
		return
	}
	w.applied, _ = resource.Encode(cfg)
	w.log.Warn("etcd is unreachable; serving the cached configuration", zap.String("file", w.o.CacheFile), zap.Int64("revision", rev))
	w.succeed(rev, true, nil, true)
}

// Blob returns a plugin module by its sha256: from the blob cache beside
// CacheFile when it holds it, else from etcd (then cached). The bytes are
// verified against the digest either way.
func (w *Watcher) Blob(ctx context.Context, sha256 string) ([]byte, error) {
	if len(sha256) != 64 || strings.Trim(sha256, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%q is not a sha256 (64 lowercase hex digits)", sha256)
	}
	if w.o.CacheFile != "" {
		if b, err := readBlobCache(w.o.CacheFile, sha256); err == nil {
			return b, nil
		}
	}
	b, err := store.ReadBlob(ctx, w.o.Client, w.keys, sha256)
	if err != nil {
		return nil, err
	}
	if w.o.CacheFile != "" {
		if err := writeBlobCache(w.o.CacheFile, sha256, b); err != nil {
			w.log.Warn("cannot cache a blob", zap.String("sha256", sha256), zap.Error(err))
		}
	}
	return b, nil
}
