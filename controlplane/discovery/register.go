package discovery

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// Registration keeps one sidecar's inbound endpoint in the registry for as
// long as it runs: under a lease it keeps alive, registered again when the
// lease is lost (etcd away longer than the lease), and removed at once when
// it stops, so that callers stop sending before the sidecar drains.
type Registration struct {
	cli    *clientv3.Client
	prefix string
	key    string
	val    string
	ttl    int64
	log    *zap.Logger

	registered chan struct{} // closed, once, at the first registration
	once       sync.Once
}

// NewRegistration returns the registration of ep (ep.Cluster is the
// service's name) under prefix with a lease of ttl (at least 2 s; zero
// means 10 s). logger may be nil.
func NewRegistration(cli *clientv3.Client, prefix string, ep registry.Endpoint, ttl time.Duration, logger *zap.Logger) (*Registration, error) {
	if err := ep.Check(); err != nil {
		return nil, fmt.Errorf("registering %s: %w", ep.Cluster, err)
	}
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Registration{
		cli: cli, prefix: prefix, key: resource.NewKeys(prefix).Endpoint(ep.Cluster, ep.ID), val: string(registry.EncodeEndpoint(ep)),
		ttl: max(2, int64(ttl/time.Second)), log: logger, registered: make(chan struct{}),
	}, nil
}

// Registered is closed once the endpoint was first written.
func (r *Registration) Registered() <-chan struct{} { return r.registered }

// Run keeps the endpoint registered until ctx ends, then removes it and
// revokes its lease.
func (r *Registration) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.session(ctx)
		if ctx.Err() != nil {
			break
		}
		r.log.Warn("endpoint registration lost; registering again", zap.String("key", r.key), zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (r *Registration) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lease, err := r.cli.Grant(gctx, r.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("granting lease: %w", err)
	}
	granted := time.Now()
	// The service's virtual address, the first time (RegisterEndpoint's
	// rule): without one it registers all the same.
	if cluster, _, ok := resource.NewKeys(r.prefix).ParseEndpoint(r.key); ok {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := registry.ServiceVIP(vctx, r.cli, r.prefix, cluster); err != nil {
			r.log.Warn("the service has no virtual address", zap.String("service", cluster), zap.Error(err))
		}
		cancel()
	}
	defer func() {
		// Deregister on the way out: delete first, so that callers stop at
		// once, then revoke.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ctx.Err() != nil {
			r.cli.Txn(dctx).If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", lease.ID)).Then(clientv3.OpDelete(r.key)).Commit()
		}
		r.cli.Revoke(dctx, lease.ID)
	}()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = r.cli.Put(pctx, r.key, r.val, clientv3.WithLease(lease.ID))
	cancel()
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	r.once.Do(func() { close(r.registered) })
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	lost, err := registry.KeepLease(kctx, r.cli, lease.ID, lease.TTL, granted)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	}
}

// ServiceName turns the host a caller addressed (a Host header or
// :authority, with or without a port) into the registry name of a mesh
// service, "SERVICE.NAMESPACE": "orders" (in the caller's namespace),
// "orders.shop", "orders.shop.svc" and "orders.shop.svc.<cluster domain>"
// all name orders in shop. ok is false for an address literal or an empty
// host. A name with more labels that is not of the .svc form is returned
// as written (lower case): the caller looks it up, and a name the
// registry does not know is a destination outside the mesh.
func ServiceName(host, callerNamespace string) (name string, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || net.ParseIP(strings.Trim(host, "[]")) != nil {
		return "", false
	}
	labels := strings.Split(host, ".")
	switch {
	case len(labels) == 1:
		if callerNamespace == "" {
			return "", false
		}
		return host + "." + callerNamespace, true
	case len(labels) >= 3 && labels[2] == "svc":
		return labels[0] + "." + labels[1], true
	}
	return host, true
}
