// Package discovery tells each sidecar what it needs and nothing more: the
// healthy endpoints of the services it calls and the mesh policies of its
// own service, updated live.
//
// A Hub runs in the control plane. It follows etcd with one watch over the
// registered endpoints (the registry's keys, /<prefix>/endpoints/<service>/<id>,
// each under its owner's lease, so an endpoint is healthy while its owner
// keeps the lease alive) and one over the two mesh policy kinds, and keeps
// one immutable snapshot per service. A sidecar's Watch holds only the set
// of services it has changed since it last looked; Next hands it the
// current snapshots of those, shared with every other watcher. So the
// hub's memory grows with endpoints, not with watchers times endpoints,
// and etcd sees two watches per hub however many sidecars there are.
//
// On a lost watch or an etcd compaction the hub lists the keys again and
// compares them with what it holds: only services that really changed are
// sent, so a compaction never resends the world.
package discovery

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Endpoints is the snapshot of one service's healthy endpoints. It is
// immutable and shared between watchers: never modify it.
type Endpoints struct {
	Service string
	// Revision is the etcd revision of the service's latest change (0 when
	// nothing was ever registered while the hub watched).
	Revision int64
	// Items are sorted by id.
	Items []registry.Endpoint
	// VIP is the service's virtual address (registry.ServiceVIP), which
	// its name resolves to in the sidecars' DNS; empty when it has none.
	VIP string `json:",omitempty"`
	// Routes are the service routes of the service (at most one; sorted
	// by name), which route its callers' calls between its versions.
	Routes []policy.ServiceRoute `json:",omitempty"`
}

// Policies are the mesh policies that apply to one service: those of its
// namespace (for the whole namespace or for it) and the mesh-wide ones.
// The slices are the watcher's own.
type Policies struct {
	// Revision is the etcd revision of the latest policy change the hub
	// had seen when it made this.
	Revision      int64
	Authorization []policy.AuthorizationPolicy
	Peer          []policy.PeerAuthentication
	Outbound      []policy.OutboundTrafficPolicy
	Wasm          []policy.WasmPlugin
	Entries       []policy.ServiceEntry          `json:",omitempty"`
	RequestAuthn  []policy.RequestAuthentication `json:",omitempty"`
	RateLimits    []policy.RateLimitPolicy       `json:",omitempty"`
}

// Interest is what a sidecar asks for.
type Interest struct {
	// Services are the names of the services it calls, as registered;
	// AnyService among them asks for every service of the mesh, as it
	// comes and goes (the others are then moot).
	Services []string
	// Namespace and Service name the sidecar's own service, whose
	// policies it receives; empty Namespace asks for none.
	Namespace, Service string
}

// AnyService, as a service of an Interest, subscribes to every service:
// for a sidecar whose app may call any service of the mesh by name, as
// Istio's sidecars know every service without a Sidecar resource.
const AnyService = "*"

// Update is what changed for one watcher since its last Next.
type Update struct {
	// Endpoints holds a snapshot for each service of interest that
	// changed (every one of them in a watcher's first update), sorted by
	// service. A service that is gone (no endpoint, no route left) has
	// an empty one.
	Endpoints []*Endpoints
	// Policies is set when the policies of the watcher's service may have
	// changed (and in the first update when Interest.Namespace is set).
	Policies *Policies
	// Watch names the watch, in the first update of a stream: its
	// follower reports with it what became of the updates (Hub.Report).
	Watch string
}

// Report is what a sidecar says became of the updates it was handed: the
// configuration it applied, or why its proxy refused it.
type Report struct {
	// Version names the configuration it built ("mesh-7");
	// PolicyRevision is the revision of the policies it holds.
	Version        string `json:"version"`
	PolicyRevision int64  `json:"policy_revision"`
	// Error is empty when the configuration is live, else why the proxy
	// refused it (the previous one keeps serving).
	Error string `json:"error,omitempty"`
}

// ErrUnknownWatch is Report's answer for a watch that is not open, or
// not the reporter's.
var ErrUnknownWatch = errors.New("discovery: no such watch open for this identity")

// Stats counts what a hub did.
type Stats struct {
	// Lists is how many times it read every key (once at start, then once
	// per lost watch or compaction); Events the watch events it applied.
	Lists, Events int64
	// Services and Endpoints are the services it tracks and their
	// endpoints; Watchers the open watches.
	Services, Endpoints, Watchers int
}

// Hub follows etcd and serves watchers. Create it with NewHub and run it
// with Run. It is safe for concurrent use.
type Hub struct {
	cli  *clientv3.Client
	keys resource.Keys
	log  *zap.Logger

	mu       sync.RWMutex
	services map[string]*service
	raw      map[string][]byte                                 // the value of every key the hub follows
	aps      map[string]map[string]*policy.AuthorizationPolicy // namespace -> name -> policy
	pas      map[string]map[string]*policy.PeerAuthentication
	ots      map[string]map[string]*policy.OutboundTrafficPolicy
	wps      map[string]map[string]*policy.WasmPlugin
	ses      map[string]map[string]*policy.ServiceEntry
	ras      map[string]map[string]*policy.RequestAuthentication
	rls      map[string]map[string]*policy.RateLimitPolicy
	routeOf  map[string]string // a service route's name -> the service it routes
	vips     map[string]string // a service -> its virtual address
	polRev   int64
	policyWs map[string]map[*Watch]struct{} // namespace -> watchers of its policies
	anyWs    map[*Watch]struct{}            // watchers of every service (AnyService)
	all      map[*Watch]struct{}            // every open watch
	byID     map[string]*Watch
	watchers int

	ready     chan struct{}
	readyOnce sync.Once
	lists     atomic.Int64
	events    atomic.Int64
}

type service struct {
	eps    map[string]registry.Endpoint
	routes map[string]*policy.ServiceRoute
	snap   *Endpoints
	subs   map[*Watch]struct{}
}

// NewHub returns a hub over the keys under prefix ("" means /wasmgate).
// logger may be nil.
func NewHub(cli *clientv3.Client, prefix string, logger *zap.Logger) *Hub {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Hub{
		cli: cli, keys: resource.NewKeys(prefix), log: logger,
		services: map[string]*service{}, raw: map[string][]byte{},
		aps: map[string]map[string]*policy.AuthorizationPolicy{}, pas: map[string]map[string]*policy.PeerAuthentication{},
		ots:      map[string]map[string]*policy.OutboundTrafficPolicy{},
		wps:      map[string]map[string]*policy.WasmPlugin{},
		ses:      map[string]map[string]*policy.ServiceEntry{},
		ras:      map[string]map[string]*policy.RequestAuthentication{},
		rls:      map[string]map[string]*policy.RateLimitPolicy{},
		routeOf:  map[string]string{},
		vips:     map[string]string{},
		all:      map[*Watch]struct{}{},
		byID:     map[string]*Watch{},
		policyWs: map[string]map[*Watch]struct{}{},
		anyWs:    map[*Watch]struct{}{},
		ready:    make(chan struct{}),
	}
}

// Ready is closed once the hub has read etcd a first time.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	s := Stats{Lists: h.lists.Load(), Events: h.events.Load(), Services: len(h.services), Watchers: h.watchers}
	for _, svc := range h.services {
		s.Endpoints += len(svc.eps)
	}
	return s
}

// Run follows etcd until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := h.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			h.log.Warn("discovery: reading etcd failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		h.readyOnce.Do(func() { close(h.ready) })
		why := h.watch(ctx, rev)
		if ctx.Err() == nil {
			h.log.Info("discovery: watch ended; reading etcd again", zap.String("why", why))
		}
	}
	return nil
}

// policyRange is the key range of every mesh policy kind, which nothing
// else sorts between.
func (h *Hub) policyRange() (begin, end string) {
	var a, b string
	for _, k := range resource.MeshKinds {
		p := h.keys.Kind(k)
		if a == "" || p < a {
			a = p
		}
		if p > b {
			b = p
		}
	}
	return a, strings.TrimSuffix(b, "/") + "0" // '0' follows '/'
}

// list reads every followed key at one revision and applies what differs
// from the hub's state.
func (h *Hub) list(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 30*time.Second)
	defer cancel()
	begin, end := h.policyRange()
	resp, err := h.cli.Txn(ctx).Then(
		clientv3.OpGet(h.keys.EndpointsPrefix(), clientv3.WithPrefix()),
		clientv3.OpGet(begin, clientv3.WithRange(end)),
		clientv3.OpGet(h.keys.ServiceVIPsPrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return 0, err
	}
	h.lists.Add(1)
	rev := resp.Header.Revision
	seen := make(map[string]bool, len(h.raw))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			key := string(kv.Key)
			seen[key] = true
			h.put(key, kv.Value, kv.ModRevision)
		}
	}
	for key := range h.raw {
		if !seen[key] {
			h.remove(key, rev)
		}
	}
	return rev, nil
}

// watch applies events from rev+1 until the watch ends, and says why.
func (h *Hub) watch(ctx context.Context, rev int64) string {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	begin, end := h.policyRange()
	chans := []clientv3.WatchChan{
		h.cli.Watch(wctx, h.keys.EndpointsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)),
		h.cli.Watch(wctx, begin, clientv3.WithRange(end), clientv3.WithRev(rev+1)),
		h.cli.Watch(wctx, h.keys.ServiceVIPsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)),
	}
	for {
		var (
			resp clientv3.WatchResponse
			ok   bool
		)
		select {
		case <-ctx.Done():
			return "stopping"
		case resp, ok = <-chans[0]:
		case resp, ok = <-chans[1]:
		case resp, ok = <-chans[2]:
		}
		switch {
		case !ok:
			return "the watch channel closed"
		case resp.CompactRevision != 0:
			return fmt.Sprintf("etcd compacted past revision %d", resp.CompactRevision)
		case resp.Err() != nil:
			return resp.Err().Error()
		}
		if len(resp.Events) == 0 {
			continue
		}
		h.mu.Lock()
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				h.remove(key, ev.Kv.ModRevision)
			} else {
				h.put(key, ev.Kv.Value, ev.Kv.ModRevision)
			}
		}
		h.mu.Unlock()
		h.events.Add(int64(len(resp.Events)))
	}
}

// put applies one key's new value. h.mu is held.
func (h *Hub) put(key string, value []byte, rev int64) {
	if old, ok := h.raw[key]; ok && bytes.Equal(old, value) {
		// A registration renewed with the same value (the registry
		// rewrites it to refresh its lease): nothing to tell anyone.
		return
	}
	if _, _, ok := h.keys.ParseEndpoint(key); ok {
		ep, err := registry.DecodeEndpoint(h.keys, key, value)
		if err != nil {
			h.log.Error("discovery: ignoring an invalid endpoint", zap.String("key", key), zap.Error(err))
			return
		}
		h.raw[key] = value
		svc := h.service(ep.Cluster)
		svc.eps[ep.ID] = ep
		h.publish(ep.Cluster, svc, rev)
		return
	}
	if name, ok := strings.CutPrefix(key, h.keys.ServiceVIPsPrefix()); ok {
		h.raw[key] = value
		h.vips[name] = string(value)
		// A service's first registration writes its address just before
		// its endpoint, which carries it to the watchers: an update of
		// the address alone is for a service already registered.
		if svc := h.services[name]; svc != nil && len(svc.eps) > 0 {
			h.publish(name, svc, rev)
		}
		return
	}
	ref, ok := h.keys.ParseResource(key)
	if !ok {
		return
	}
	v, err := resource.Decode(ref, value)
	if err != nil {
		h.log.Error("discovery: ignoring an invalid policy", zap.String("key", key), zap.Error(err))
		return
	}
	resource.Normalize(v)
	h.raw[key] = value
	if r, ok := v.(*policy.ServiceRoute); ok {
		// A route travels with its service's endpoints, to the
		// service's callers.
		h.dropRoute(ref.Name, rev)
		svc := h.service(r.Target())
		svc.routes[r.Name] = r
		h.routeOf[r.Name] = r.Target()
		h.publish(r.Target(), svc, rev)
		return
	}
	old := h.removePolicy(ref)
	switch p := v.(type) {
	case *policy.AuthorizationPolicy:
		keep(h.aps, p)
	case *policy.PeerAuthentication:
		keep(h.pas, p)
	case *policy.OutboundTrafficPolicy:
		keep(h.ots, p)
	case *policy.WasmPlugin:
		keep(h.wps, p)
	case *policy.ServiceEntry:
		keep(h.ses, p)
	case *policy.RequestAuthentication:
		keep(h.ras, p)
	case *policy.RateLimitPolicy:
		keep(h.rls, p)
	default:
		return
	}
	h.policyChanged(rev, scopeOf(old), scopeOf(v))
}

// scoped is a mesh policy: it applies to a namespace, or to one service
// of it.
type scoped interface {
	Scope() (namespace, service, name string)
}

// keep adds p to a map of policies by namespace and name.
func keep[P any, PP interface {
	*P
	scoped
}](byNS map[string]map[string]*P, p PP) {
	ns, _, name := p.Scope()
	if byNS[ns] == nil {
		byNS[ns] = map[string]*P{}
	}
	byNS[ns][name] = (*P)(p)
}

// collect appends to out the policies of byNS in namespace ns that apply
// to the service svc, sorted by name.
func collect[P any, PP interface {
	*P
	scoped
}](byNS map[string]map[string]*P, ns, svc string, out []P) []P {
	for _, p := range byNS[ns] {
		if _, s, _ := PP(p).Scope(); s == "" || s == svc {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b P) int {
		_, _, x := PP(&a).Scope()
		_, _, y := PP(&b).Scope()
		return strings.Compare(x, y)
	})
	return out
}

// remove applies the deletion of one key. h.mu is held.
func (h *Hub) remove(key string, rev int64) {
	if _, ok := h.raw[key]; !ok {
		return
	}
	delete(h.raw, key)
	if name, ok := strings.CutPrefix(key, h.keys.ServiceVIPsPrefix()); ok {
		delete(h.vips, name)
		if svc := h.services[name]; svc != nil {
			h.publish(name, svc, rev)
		}
		return
	}
	if name, id, ok := h.keys.ParseEndpoint(key); ok {
		if svc := h.services[name]; svc != nil {
			delete(svc.eps, id)
			h.publish(name, svc, rev)
		}
		return
	}
	if ref, ok := h.keys.ParseResource(key); ok {
		if ref.Kind == resource.ServiceRoutes {
			h.dropRoute(ref.Name, rev)
			return
		}
		if old := h.removePolicy(ref); old != nil {
			h.policyChanged(rev, scopeOf(old))
		}
	}
}

// dropRoute forgets the service route name and tells its service's
// callers. h.mu is held.
func (h *Hub) dropRoute(name string, rev int64) {
	target, ok := h.routeOf[name]
	if !ok {
		return
	}
	delete(h.routeOf, name)
	if svc := h.services[target]; svc != nil {
		delete(svc.routes, name)
		h.publish(target, svc, rev)
	}
}

type scope struct{ namespace, service string }

func scopeOf(v any) *scope {
	if p, ok := v.(scoped); ok {
		ns, svc, _ := p.Scope()
		return &scope{ns, svc}
	}
	return nil
}

// removePolicy forgets a policy and returns it (nil if unknown).
func (h *Hub) removePolicy(ref resource.Ref) any {
	var p any
	switch ref.Kind {
	case resource.AuthorizationPolicies:
		p = forget(h.aps, ref.Name)
	case resource.PeerAuthentications:
		p = forget(h.pas, ref.Name)
	case resource.OutboundTrafficPolicies:
		p = forget(h.ots, ref.Name)
	case resource.WasmPlugins:
		p = forget(h.wps, ref.Name)
	case resource.ServiceEntries:
		p = forget(h.ses, ref.Name)
	case resource.RequestAuthentications:
		p = forget(h.ras, ref.Name)
	case resource.RateLimitPolicies:
		p = forget(h.rls, ref.Name)
	}
	return p
}

// forget removes the policy name from a map of policies by namespace and
// returns it, or nil.
func forget[P any](byNS map[string]map[string]*P, name string) any {
	for ns, m := range byNS {
		if p, ok := m[name]; ok {
			delete(m, name)
			if len(m) == 0 {
				delete(byNS, ns)
			}
			return p
		}
	}
	return nil
}

// policyChanged tells the watchers of the scopes that their policies may
// have changed. h.mu is held.
func (h *Hub) policyChanged(rev int64, scopes ...*scope) {
	h.polRev = max(h.polRev, rev)
	for _, s := range scopes {
		if s == nil {
			continue
		}
		if s.namespace == policy.RootNamespace {
			for _, ws := range h.policyWs {
				for w := range ws {
					w.markPolicies()
				}
			}
			continue
		}
		for w := range h.policyWs[s.namespace] {
			if s.service == "" || s.service == w.interest.Service {
				w.markPolicies()
			}
		}
	}
}

// unused reports whether nothing of the service is left to keep: no
// endpoint, no route, no watcher.
func (svc *service) unused() bool { return len(svc.eps)+len(svc.routes)+len(svc.subs) == 0 }

func (h *Hub) service(name string) *service {
	svc := h.services[name]
	if svc == nil {
		svc = &service{eps: map[string]registry.Endpoint{}, routes: map[string]*policy.ServiceRoute{}, subs: map[*Watch]struct{}{},
			snap: &Endpoints{Service: name, VIP: h.vips[name]}}
		h.services[name] = svc
	}
	return svc
}

// publish makes a new snapshot of a service and tells its watchers. h.mu
// is held.
func (h *Hub) publish(name string, svc *service, rev int64) {
	items := make([]registry.Endpoint, 0, len(svc.eps))
	for _, ep := range svc.eps {
		items = append(items, ep)
	}
	slices.SortFunc(items, func(a, b registry.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	svc.snap = &Endpoints{Service: name, Revision: rev, Items: items, VIP: h.vips[name]}
	for _, r := range svc.routes {
		svc.snap.Routes = append(svc.snap.Routes, *r)
	}
	slices.SortFunc(svc.snap.Routes, func(a, b policy.ServiceRoute) int { return strings.Compare(a.Name, b.Name) })
	for w := range svc.subs {
		w.markService(name)
	}
	for w := range h.anyWs {
		w.markService(name)
	}
	if svc.unused() {
		delete(h.services, name)
	}
}

// policiesFor collects the policies that apply to one service. h.mu is
// held for reading.
func (h *Hub) policiesFor(namespace, svc string) *Policies {
	p := &Policies{Revision: h.polRev}
	for _, ns := range []string{policy.RootNamespace, namespace} {
		p.Authorization = collect(h.aps, ns, svc, p.Authorization)
		p.Peer = collect(h.pas, ns, svc, p.Peer)
		p.Outbound = collect(h.ots, ns, svc, p.Outbound)
		p.Wasm = collect(h.wps, ns, svc, p.Wasm)
		p.Entries = collect(h.ses, ns, svc, p.Entries)
		p.RequestAuthn = collect(h.ras, ns, svc, p.RequestAuthn)
		p.RateLimits = collect(h.rls, ns, svc, p.RateLimits)
		if namespace == policy.RootNamespace {
			break
		}
	}
	return p
}

// Watch is one sidecar's subscription. Its memory is the set of services
// it asked for and those changed since its last Next.
type Watch struct {
	hub      *Hub
	interest Interest
	since    time.Time
	id       string

	mu       sync.Mutex
	dirty    map[string]struct{}
	policies bool
	closed   bool
	signal   chan struct{}
	// What the watch's owner says of it (SetPeer), and what it was last
	// handed (Next): when, and the policies' revision.
	peer, remote string
	lastUpdate   time.Time
	policyRev    int64
	// report is the follower's last Report, and when it came.
	report   *Report
	reported time.Time
}

// Watch subscribes to an interest. The first Next returns the current
// snapshot of every service of interest (and the policies). Close it when
// done.
func (h *Hub) Watch(in Interest) *Watch {
	in.Services = slices.Clone(in.Services)
	slices.Sort(in.Services)
	in.Services = slices.Compact(in.Services)
	anyService := slices.Contains(in.Services, AnyService)
	if anyService {
		in.Services = []string{AnyService}
	}
	w := &Watch{hub: h, interest: in, since: time.Now(), id: newWatchID(), dirty: make(map[string]struct{}, len(in.Services)), signal: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers++
	h.all[w] = struct{}{}
	h.byID[w.id] = w
	if anyService {
		// Every service there is now; publish marks the others as they
		// come.
		h.anyWs[w] = struct{}{}
		for name := range h.services {
			w.dirty[name] = struct{}{}
		}
	} else {
		for _, name := range in.Services {
			h.service(name).subs[w] = struct{}{}
			w.dirty[name] = struct{}{}
		}
	}
	if in.Namespace != "" {
		if h.policyWs[in.Namespace] == nil {
			h.policyWs[in.Namespace] = map[*Watch]struct{}{}
		}
		h.policyWs[in.Namespace][w] = struct{}{}
		w.policies = true
	}
	w.signal <- struct{}{}
	return w
}

func (w *Watch) markService(name string) {
	w.mu.Lock()
	w.dirty[name] = struct{}{}
	w.mu.Unlock()
	w.wake()
}

func (w *Watch) markPolicies() {
	w.mu.Lock()
	w.policies = true
	w.mu.Unlock()
	w.wake()
}

func (w *Watch) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// ErrClosed is returned by Next after Close.
var ErrClosed = fmt.Errorf("discovery: watch closed")

// Next waits until something of interest changed, or ctx ends, and
// returns what changed. Changes that happen between two calls are merged:
// a slow watcher gets the latest state, never a backlog.
func (w *Watch) Next(ctx context.Context) (Update, error) {
	for {
		select {
		case <-ctx.Done():
			return Update{}, ctx.Err()
		case <-w.signal:
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return Update{}, ErrClosed
		}
		names := make([]string, 0, len(w.dirty))
		for name := range w.dirty {
			names = append(names, name)
		}
		clear(w.dirty)
		pol := w.policies
		w.policies = false
		w.mu.Unlock()
		if len(names) == 0 && !pol {
			continue
		}
		slices.Sort(names)
		var u Update
		w.hub.mu.RLock()
		for _, name := range names {
			if svc := w.hub.services[name]; svc != nil {
				u.Endpoints = append(u.Endpoints, svc.snap)
			} else {
				// Gone since it was marked: only a watcher of every
				// service holds no service alive.
				u.Endpoints = append(u.Endpoints, &Endpoints{Service: name})
			}
		}
		if pol {
			u.Policies = w.hub.policiesFor(w.interest.Namespace, w.interest.Service)
		}
		w.hub.mu.RUnlock()
		w.handed(&u)
		return u, nil
	}
}

// handed records what Next handed the watch's owner.
func (w *Watch) handed(u *Update) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastUpdate = time.Now()
	if u.Policies != nil {
		w.policyRev = u.Policies.Revision
	}
}

// ID names the watch, for its follower's reports.
func (w *Watch) ID() string { return w.id }

func newWatchID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Report records what the follower of the watch id, whose identity is
// identity (a SPIFFE ID; "" for a token), says became of its updates.
func (h *Hub) Report(id, identity string, r Report) error {
	h.mu.RLock()
	w := h.byID[id]
	h.mu.RUnlock()
	if w == nil {
		return ErrUnknownWatch
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.peer != identity {
		return ErrUnknownWatch
	}
	w.report, w.reported = &r, time.Now()
	return nil
}

// SetPeer says who follows the watch: the workload's SPIFFE ID ("" for a
// bearer token) and its address.
func (w *Watch) SetPeer(identity, remote string) {
	w.mu.Lock()
	w.peer, w.remote = identity, remote
	w.mu.Unlock()
}

// WatchStatus is one open watch as Status reports it.
type WatchStatus struct {
	// Identity is the sidecar's SPIFFE ID ("" when it authenticated with
	// a token), Remote its address.
	Identity string `json:"identity,omitempty" yaml:"identity,omitempty"`
	Remote   string `json:"remote,omitempty" yaml:"remote,omitempty"`
	// Namespace and Service are those whose policies it follows;
	// Services those it calls.
	Namespace string    `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Service   string    `json:"service,omitempty" yaml:"service,omitempty"`
	Services  []string  `json:"services,omitempty" yaml:"services,omitempty"`
	Since     time.Time `json:"since" yaml:"since"`
	// LastUpdate is when it was last handed an update (zero: never);
	// PolicyRevision the policies' revision it holds.
	LastUpdate     time.Time `json:"last_update,omitempty" yaml:"last_update,omitempty"`
	PolicyRevision int64     `json:"policy_revision,omitempty" yaml:"policy_revision,omitempty"`
	// Synced is true when it has been handed the latest of everything it
	// follows (no change of its policies or of the endpoints or routes of
	// a service it calls waits for it: Stale names what waits) and its
	// last report, if any, says its proxy took it.
	Synced bool     `json:"synced" yaml:"synced"`
	Stale  []string `json:"stale,omitempty" yaml:"stale,omitempty"`
	// Report is what the sidecar last said of its configuration, and
	// Reported when.
	Report   *Report   `json:"report,omitempty" yaml:"report,omitempty"`
	Reported time.Time `json:"reported,omitempty" yaml:"reported,omitempty"`
}

// Status lists the open watches, by identity then address, and the
// policies' latest revision.
func (h *Hub) Status() (policyRevision int64, watches []WatchStatus) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.all {
		w.mu.Lock()
		st := WatchStatus{Identity: w.peer, Remote: w.remote, Namespace: w.interest.Namespace, Service: w.interest.Service,
			Services: w.interest.Services, Since: w.since, LastUpdate: w.lastUpdate, PolicyRevision: w.policyRev,
			Report: w.report, Reported: w.reported}
		if w.policies {
			st.Stale = append(st.Stale, "policies")
		}
		for name := range w.dirty {
			st.Stale = append(st.Stale, name)
		}
		slices.Sort(st.Stale)
		w.mu.Unlock()
		st.Synced = len(st.Stale) == 0 && (st.Report == nil || st.Report.Error == "")
		watches = append(watches, st)
	}
	slices.SortFunc(watches, func(a, b WatchStatus) int {
		if c := strings.Compare(a.Identity, b.Identity); c != 0 {
			return c
		}
		return strings.Compare(a.Remote, b.Remote)
	})
	return h.polRev, watches
}

// Interest returns what the watch asked for.
func (w *Watch) Interest() Interest { return w.interest }

// Close ends the subscription; a Next in progress returns ErrClosed.
func (w *Watch) Close() {
	h := w.hub
	h.mu.Lock()
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		h.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	h.watchers--
	delete(h.all, w)
	delete(h.byID, w.id)
	delete(h.anyWs, w)
	for _, name := range w.interest.Services {
		if svc := h.services[name]; svc != nil {
			delete(svc.subs, w)
			if svc.unused() {
				delete(h.services, name)
			}
		}
	}
	if ws := h.policyWs[w.interest.Namespace]; ws != nil {
		delete(ws, w)
		if len(ws) == 0 {
			delete(h.policyWs, w.interest.Namespace)
		}
	}
	h.mu.Unlock()
	w.wake()
}
