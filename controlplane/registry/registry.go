// Package registry tracks the live parts of a fleet in etcd, each under a
// lease so that it disappears when its owner stops renewing it: proxies
// (which configuration revision each one runs) and service endpoints
// (which fill clusters with discovery: registry).
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// ProxyInfo is what a proxy reports about itself.
type ProxyInfo struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address,omitempty"`
	Version string `json:"version,omitempty"`
	// Revision is the etcd revision of the configuration it runs.
	Revision int64 `json:"revision"`
	// FromCache says it serves a configuration loaded from its local cache
	// because etcd was unreachable when it started.
	FromCache bool `json:"from_cache,omitempty"`
	// LastError is the last configuration it rejected or failed to apply,
	// empty once a later one applied.
	LastError string    `json:"last_error,omitempty"`
	Started   time.Time `json:"started"`
	Updated   time.Time `json:"updated"`
	// Traffic is the proxy's last minute, when it reports one.
	Traffic *Traffic `json:"traffic,omitempty"`
}

// Traffic is a proxy's last minute of requests and telemetry: three
// numbers, so that a heartbeat stays small.
type Traffic struct {
	// RequestRate is requests per second over the last minute.
	RequestRate float64 `json:"request_rate"`
	// Ratio5xx is the share of those requests answered 5xx, 0 to 1.
	Ratio5xx float64 `json:"ratio_5xx"`
	// TelemetryDropped is the telemetry records dropped since the proxy
	// started.
	TelemetryDropped uint64 `json:"telemetry_dropped"`
}

// rounded is t as reported: the rate to 0.1/s and the ratio to 0.1%, so
// that noise does not rewrite the registration.
func (t Traffic) rounded() Traffic {
	t.RequestRate = math.Round(t.RequestRate*10) / 10
	t.Ratio5xx = math.Round(t.Ratio5xx*1000) / 1000
	return t
}

// Proxy keeps one proxy's registration alive. Create it with NewProxy, run
// it with Run, and report progress with Update.
type Proxy struct {
	cli    *clientv3.Client
	key    string
	ttl    int64
	logger *zap.Logger

	mu           sync.Mutex
	info         ProxyInfo
	changed      chan struct{}
	traffic      func() Traffic
	trafficEvery time.Duration
}

// SetTrafficSource makes Run sample src every period (at least 5s) and
// update the registration when the rounded figures change. It must be
// called before Run.
func (p *Proxy) SetTrafficSource(src func() Traffic, every time.Duration) {
	p.traffic, p.trafficEvery = src, max(every, 5*time.Second)
}

// SetTraffic records the proxy's last minute. It never blocks.
func (p *Proxy) SetTraffic(t Traffic) {
	t = t.rounded()
	p.mu.Lock()
	same := p.info.Traffic != nil && *p.info.Traffic == t
	if !same {
		p.info.Traffic = &t
	}
	p.mu.Unlock()
	if same {
		return
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// NewProxy returns a registration of info.NodeID under prefix with a lease
// of ttl (at least 2s; zero means 10s). logger may be nil.
func NewProxy(cli *clientv3.Client, prefix string, info ProxyInfo, ttl time.Duration, logger *zap.Logger) *Proxy {
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if info.Started.IsZero() {
		info.Started = time.Now().UTC()
	}
	return &Proxy{
		cli: cli, key: resource.NewKeys(prefix).Proxy(info.NodeID), ttl: max(2, int64(ttl/time.Second)),
		logger: logger, info: info, changed: make(chan struct{}, 1),
	}
}

// Update records the revision the proxy now runs, whether it came from
// the cache, and the last error (nil clears it). It never blocks.
func (p *Proxy) Update(revision int64, fromCache bool, lastErr error) {
	p.mu.Lock()
	p.info.Revision = revision
	p.info.FromCache = fromCache
	p.info.LastError = ""
	if lastErr != nil {
		p.info.LastError = lastErr.Error()
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// SetError records an error without changing the revision.
func (p *Proxy) SetError(err error) {
	p.mu.Lock()
	rev, fc := p.info.Revision, p.info.FromCache
	p.mu.Unlock()
	p.Update(rev, fc, err)
}

func (p *Proxy) value() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.info.Updated = time.Now().UTC()
	b, _ := json.Marshal(p.info)
	return string(b)
}

// Run keeps the registration alive until ctx ends, registering again
// whenever the lease is lost, and then revokes it. A lost registration is
// logged once, and once more when it is back; a proxy that cannot
// register at all says so once, and once more when it can. The attempts
// in between are logged at debug level.
func (p *Proxy) Run(ctx context.Context) error {
	if p.traffic != nil {
		go func() {
			t := time.NewTicker(p.trafficEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					p.SetTraffic(p.traffic())
				}
			}
		}()
	}
	backoff := 100 * time.Millisecond
	var lostAt time.Time // when a registration was lost, until it is back
	ever := false        // whether the proxy has registered
	failing := false     // whether it said it cannot register
	registered := func() {
		backoff = 100 * time.Millisecond
		ever = true
		switch {
		case !lostAt.IsZero():
			p.logger.Info("proxy registered again", zap.String("key", p.key), zap.Duration("after", time.Since(lostAt).Round(time.Millisecond)))
			lostAt = time.Time{}
		case failing:
			p.logger.Info("proxy registered", zap.String("key", p.key))
			failing = false
		default:
			p.logger.Debug("proxy registered", zap.String("key", p.key))
		}
	}
	for ctx.Err() == nil {
		err := p.session(ctx, registered)
		if ctx.Err() != nil {
			break
		}
		switch {
		case ever && lostAt.IsZero():
			lostAt = time.Now()
			p.logger.Warn("proxy registration lost; registering again until etcd answers", zap.String("key", p.key), zap.Error(err))
		case !ever && !failing:
			failing = true
			p.logger.Warn("cannot register the proxy; retrying until it can", zap.String("key", p.key), zap.Error(err))
		case ever:
			if ce := p.logger.Check(zap.DebugLevel, "registering the proxy failed"); ce != nil {
				ce.Write(zap.String("key", p.key), zap.Error(err), zap.Duration("retry_in", backoff))
			}
		default:
			if ce := p.logger.Check(zap.DebugLevel, "cannot register the proxy"); ce != nil {
				ce.Write(zap.String("key", p.key), zap.Error(err), zap.Duration("retry_in", backoff))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// session registers under a new lease and keeps it alive, calling
// registered once the registration is written. It returns when the lease
// is lost or ctx ends.
func (p *Proxy) session(ctx context.Context, registered func()) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lease, err := p.cli.Grant(gctx, p.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("granting lease: %w", err)
	}
	granted := time.Now()
	defer func() {
		if ctx.Err() == nil {
			// Lost, not stopped: the lease is gone or goes with its TTL,
			// and a revoke would only hold up Run's word of the loss
			// while etcd does not answer.
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		p.cli.Revoke(rctx, lease.ID)
		cancel()
	}()
	// A write that outlasts the lease is moot: the lease is gone by then,
	// and Run must hear of it without waiting on the write.
	putTimeout := min(5*time.Second, time.Duration(p.ttl)*time.Second)
	put := func() error {
		pctx, cancel := context.WithTimeout(ctx, putTimeout)
		defer cancel()
		_, err := p.cli.Put(pctx, p.key, p.value(), clientv3.WithLease(lease.ID))
		return err
	}
	if err := put(); err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	registered()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	lost, err := KeepLease(kctx, p.cli, lease.ID, lease.TTL, granted)
	if err != nil {
		return err
	}
	for {
		// The lease's end first: a change waiting to be written (a write
		// that failed is tried again) must not hold up word of it.
		select {
		case err := <-lost:
			return err
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			return err
		case <-p.changed:
			if err := put(); err != nil {
				// Quiet: when etcd is away the lease fails too, and Run
				// says so once.
				if ce := p.logger.Check(zap.DebugLevel, "updating the proxy registration failed"); ce != nil {
					ce.Write(zap.String("key", p.key), zap.Error(err))
				}
				// Try again on the next change or keep-alive, unless the
				// lease ends first.
				select {
				case p.changed <- struct{}{}:
				default:
				}
				select {
				case <-ctx.Done():
				case err := <-lost:
					return err
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// Proxies lists the registered proxies, sorted by node id.
func Proxies(ctx context.Context, kv clientv3.KV, prefix string) ([]ProxyInfo, error) {
	keys := resource.NewKeys(prefix)
	resp, err := kv.Get(ctx, keys.ProxiesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing proxies: %w", err)
	}
	out := make([]ProxyInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var p ProxyInfo
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			p = ProxyInfo{NodeID: strings.TrimPrefix(string(kv.Key), keys.ProxiesPrefix()), LastError: "invalid registration: " + err.Error()}
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b ProxyInfo) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out, nil
}

// Endpoint is one registered upstream of a cluster.
type Endpoint struct {
	Cluster string `json:"cluster"`
	ID      string `json:"id"`
	Address string `json:"address"`
	// Weight is 1 to 10000; zero means 1.
	Weight int `json:"weight,omitempty"`
	// Version labels the endpoint's release ("v2"), as Istio's version
	// label: a mesh's service routes split a service's calls between
	// versions. Empty means none.
	Version string `json:"version,omitempty"`
	// Protocol is "tcp" for an endpoint that serves opaque TCP (a
	// sidecar's app of protocol tcp), so that a caller that follows every
	// service knows to relay its connections rather than route requests;
	// empty for HTTP, HTTP/2 and gRPC.
	Protocol string `json:"protocol,omitempty"`
	// Lease is the etcd lease the registration lives under and TTL its
	// remaining time to live in seconds (filled when listed).
	Lease int64 `json:"lease,omitempty"`
	TTL   int64 `json:"ttl,omitempty"`
}

// endpointValue is the stored value of an endpoint.
type endpointValue struct {
	Address  string `json:"address"`
	Weight   int    `json:"weight,omitempty"`
	Version  string `json:"version,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// ProtocolTCP is the Protocol of an endpoint that serves opaque TCP.
const ProtocolTCP = "tcp"

// EncodeEndpoint is the stored value of ep (its key holds the cluster and
// the id).
func EncodeEndpoint(ep Endpoint) []byte {
	b, _ := json.Marshal(endpointValue{Address: ep.Address, Weight: ep.Weight, Version: ep.Version, Protocol: ep.Protocol})
	return b
}

var idPattern = func(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// Check validates an endpoint's fields.
func (e *Endpoint) Check() error {
	var problems []string
	if !idPattern(e.Cluster) || strings.Contains(e.Cluster, ":") {
		problems = append(problems, fmt.Sprintf("cluster: %q is not a valid cluster name", e.Cluster))
	}
	if e.ID == "" {
		e.ID = e.Address
	}
	if !idPattern(e.ID) {
		problems = append(problems, fmt.Sprintf("id: %q is not a valid id (letters, digits, '-', '_', '.', ':'; at most 128)", e.ID))
	}
	if err := CheckAddress(e.Address); err != nil {
		problems = append(problems, "address: "+err.Error())
	}
	if e.Weight < 0 || e.Weight > 10000 {
		problems = append(problems, fmt.Sprintf("weight: must be between 1 and 10000, not %d", e.Weight))
	}
	if e.Version != "" && !config.IsVersion(e.Version) {
		problems = append(problems, fmt.Sprintf("version: %q is not a version (lowercase letters, digits, '-' and '.'; at most 63)", e.Version))
	}
	if e.Protocol != "" && e.Protocol != ProtocolTCP {
		problems = append(problems, fmt.Sprintf("protocol: %q is not %q (nor empty, for HTTP)", e.Protocol, ProtocolTCP))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// CheckAddress reports whether addr is a host:port an endpoint may have.
func CheckAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%q has an invalid port", addr)
	}
	if host == "" || strings.ContainsAny(host, " /\\") {
		return fmt.Errorf("%q has an invalid host", addr)
	}
	return nil
}

// RegisterEndpoint writes an endpoint under a lease of ttl. Registering an
// endpoint that is already registered under a live lease renews that lease
// instead of granting another, so a service calls it again every ttl/3 to
// stay registered. It returns the lease. The first registration of a
// service gives it a virtual address (ServiceVIP); one that cannot be
// allocated leaves the service without, and registers all the same.
func RegisterEndpoint(ctx context.Context, cli *clientv3.Client, prefix string, ep Endpoint, ttl time.Duration) (clientv3.LeaseID, error) {
	if err := ep.Check(); err != nil {
		return 0, err
	}
	if ttl < 2*time.Second {
		ttl = 2 * time.Second
	}
	keys := resource.NewKeys(prefix)
	key := keys.Endpoint(ep.Cluster, ep.ID)
	val := EncodeEndpoint(ep)
	both, err := cli.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(keys.ServiceVIP(ep.Cluster), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return 0, fmt.Errorf("registering endpoint: %w", err)
	}
	if both.Responses[1].GetResponseRange().Count == 0 {
		_, _ = ServiceVIP(ctx, cli, prefix, ep.Cluster)
	}
	resp := both.Responses[0].GetResponseRange()
	var lease clientv3.LeaseID
	if len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
		lease = clientv3.LeaseID(resp.Kvs[0].Lease)
		ttlResp, err := cli.TimeToLive(ctx, lease)
		if err != nil || ttlResp.TTL <= 0 || ttlResp.GrantedTTL != int64(ttl/time.Second) {
			lease = 0
		} else if _, err := cli.KeepAliveOnce(ctx, lease); err != nil {
			lease = 0
		}
	}
	if lease == 0 {
		g, err := cli.Grant(ctx, int64(ttl/time.Second))
		if err != nil {
			return 0, fmt.Errorf("registering endpoint: %w", err)
		}
		lease = g.ID
	}
	if _, err := cli.Put(ctx, key, string(val), clientv3.WithLease(lease)); err != nil {
		return 0, fmt.Errorf("registering endpoint: %w", err)
	}
	return lease, nil
}

// DeregisterEndpoint removes an endpoint and revokes its lease.
func DeregisterEndpoint(ctx context.Context, cli *clientv3.Client, prefix, cluster, id string) (bool, error) {
	key := resource.NewKeys(prefix).Endpoint(cluster, id)
	resp, err := cli.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return false, fmt.Errorf("deregistering endpoint: %w", err)
	}
	if len(resp.PrevKvs) == 0 {
		return false, nil
	}
	if l := resp.PrevKvs[0].Lease; l != 0 {
		cli.Revoke(ctx, clientv3.LeaseID(l))
	}
	return true, nil
}

// DecodeEndpoint decodes a stored endpoint.
func DecodeEndpoint(keys resource.Keys, key string, value []byte) (Endpoint, error) {
	cluster, id, ok := keys.ParseEndpoint(key)
	if !ok {
		return Endpoint{}, fmt.Errorf("%s is not an endpoint key", key)
	}
	var v endpointValue
	dec := json.NewDecoder(strings.NewReader(string(value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %s/%s: %w", cluster, id, err)
	}
	ep := Endpoint{Cluster: cluster, ID: id, Address: v.Address, Weight: v.Weight, Version: v.Version, Protocol: v.Protocol}
	if err := ep.Check(); err != nil {
		return Endpoint{}, fmt.Errorf("endpoint %s/%s: %w", cluster, id, err)
	}
	return ep, nil
}

// Endpoints lists the registered endpoints of one cluster ("" for all),
// sorted by cluster then id. Invalid values are skipped.
func Endpoints(ctx context.Context, cli *clientv3.Client, prefix, cluster string) ([]Endpoint, error) {
	keys := resource.NewKeys(prefix)
	p := keys.EndpointsPrefix()
	if cluster != "" {
		p = keys.ClusterEndpoints(cluster)
	}
	resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing endpoints: %w", err)
	}
	out := make([]Endpoint, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ep, err := DecodeEndpoint(keys, string(kv.Key), kv.Value)
		if err != nil {
			continue
		}
		ep.Lease = kv.Lease
		if kv.Lease != 0 {
			if t, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
				ep.TTL = t.TTL
			}
		}
		out = append(out, ep)
	}
	return out, nil
}
