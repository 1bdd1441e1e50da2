// Package store keeps wasmgate's configuration in etcd: one key per
// resource, every change validated as the whole configuration it produces
// and written in one transaction that compares revisions, with a history
// to roll back to, and plugin blobs stored in chunks.
//
// A Store holds no state of its own; any number of them (one per control
// plane process) may share one etcd.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// Store reads and changes the configuration under one prefix. It is safe
// for concurrent use.
type Store struct {
	cli          *clientv3.Client
	keys         resource.Keys
	historyLimit int64
	retries      int
	now          func() time.Time
	secret       *secret.Key
	log          *zap.Logger
}

// MaxResourceBytes bounds one resource as stored (its JSON encoding). A
// change that would write a larger one is refused; a larger value found in
// etcd (written around the control plane) is treated as invalid, as the
// proxies' watchers treat it. The configuration of a large site fits many
// times over; a value beyond it is a mistake or an attack.
const MaxResourceBytes = 1 << 20

// TooLarge is the error for a stored value over MaxResourceBytes.
func TooLarge(n int) error {
	return fmt.Errorf("the value is %d bytes, more than the %d bytes a resource may take", n, MaxResourceBytes)
}

// Option configures a Store.
type Option func(*Store)

// WithHistoryLimit keeps at most n history entries (default 1000). Older
// ones are deleted by the change that pushes them out.
func WithHistoryLimit(n int) Option { return func(s *Store) { s.historyLimit = int64(n) } }

// WithSecretKey encrypts the private keys of certificates with k before
// they are written. Without it a change that leaves any certificate in the
// configuration is refused.
func WithSecretKey(k *secret.Key) Option { return func(s *Store) { s.secret = k } }

// WithLogger receives what the store repairs: a bookkeeping key (the head
// of the history) that was found unreadable and written again. Nil
// discards it.
func WithLogger(l *zap.Logger) Option { return func(s *Store) { s.log = l } }

// New returns a Store over cli under prefix ("" means /wasmgate).
func New(cli *clientv3.Client, prefix string, opts ...Option) *Store {
	s := &Store{cli: cli, keys: resource.NewKeys(prefix), historyLimit: 1000, retries: 32, now: time.Now, log: zap.NewNop()}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	return s
}

// Keys returns the key layout of the store.
func (s *Store) Keys() resource.Keys { return s.keys }

// Client returns the etcd client of the store.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Snapshot is the stored configuration at one etcd revision.
type Snapshot struct {
	// Revision is the etcd revision the snapshot was read at.
	Revision int64
	// ChangeRevision is the revision of the latest change (0: none yet).
	ChangeRevision int64
	// Seq is the number of the latest change in the history.
	Seq int64
	// Resources are the decoded resources; Raw their stored bytes and
	// ModRevisions the revision each was last written at.
	Resources    resource.Set
	Raw          map[resource.Ref][]byte
	ModRevisions map[resource.Ref]int64
	// Invalid are stored values that fail to decode (written around the
	// control plane). They are not in Resources.
	Invalid map[resource.Ref]error

	headMod int64
}

// head is the value of the head key.
type head struct {
	Seq    int64     `json:"seq"`
	Author string    `json:"author,omitempty"`
	Time   time.Time `json:"time"`
}

// Snapshot reads every resource at one revision. A head that does not
// decode is repaired from the history first (see repairHead).
func (s *Store) Snapshot(ctx context.Context) (*Snapshot, error) {
	for range 3 {
		snap, badHead, err := s.snapshot(ctx)
		if err != nil || badHead == nil {
			return snap, err
		}
		if err := s.repairHead(ctx, badHead); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("reading %s: it was unreadable and repairing it raced with other writers three times", s.keys.Head())
}

// unreadableHead is a head key that does not decode.
type unreadableHead struct {
	modRevision int64
	err         error
}

// snapshot reads every resource at one revision, or says the head is
// unreadable.
func (s *Store) snapshot(ctx context.Context) (*Snapshot, *unreadableHead, error) {
	ops := []clientv3.Op{clientv3.OpGet(s.keys.Head())}
	for _, k := range resource.Kinds {
		ops = append(ops, clientv3.OpGet(s.keys.Kind(k), clientv3.WithPrefix()))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("reading configuration: %w", err)
	}
	snap := &Snapshot{
		Revision:     resp.Header.Revision,
		Resources:    resource.Set{},
		Raw:          map[resource.Ref][]byte{},
		ModRevisions: map[resource.Ref]int64{},
		Invalid:      map[resource.Ref]error{},
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		var h head
		err := json.Unmarshal(kvs[0].Value, &h)
		if err == nil && h.Seq < 0 {
			err = fmt.Errorf("negative seq %d", h.Seq)
		}
		if err != nil {
			return nil, &unreadableHead{modRevision: kvs[0].ModRevision, err: err}, nil
		}
		snap.Seq = h.Seq
		snap.headMod = kvs[0].ModRevision
		snap.ChangeRevision = kvs[0].ModRevision
	}
	for _, r := range resp.Responses[1:] {
		for _, kv := range r.GetResponseRange().Kvs {
			ref, ok := s.keys.ParseResource(string(kv.Key))
			if !ok {
				continue
			}
			snap.Raw[ref] = kv.Value
			snap.ModRevisions[ref] = kv.ModRevision
			if len(kv.Value) > MaxResourceBytes {
				snap.Invalid[ref] = TooLarge(len(kv.Value))
				continue
			}
			v, err := resource.Decode(ref, kv.Value)
			if err != nil {
				snap.Invalid[ref] = err
				continue
			}
			snap.Resources[ref] = v
		}
	}
	return snap, nil, nil
}

// repairHead writes the head again from the history: its seq is the
// highest change number among the history's keys, which a damaged value
// cannot hide. It writes only if the head is still the unreadable value
// (another control plane may have repaired or moved it), and logs what it
// did.
func (s *Store) repairHead(ctx context.Context, bad *unreadableHead) error {
	resp, err := s.cli.Get(ctx, s.keys.HistoryPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("reading history to repair %s: %w", s.keys.Head(), err)
	}
	var seq int64
	for _, kv := range resp.Kvs {
		n, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), s.keys.HistoryPrefix()), 10, 64)
		if err == nil && n > seq {
			seq = n
		}
	}
	hb, _ := json.Marshal(head{Seq: seq, Author: "repair", Time: s.now().UTC()})
	tr, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.keys.Head()), "=", bad.modRevision)).
		Then(clientv3.OpPut(s.keys.Head(), string(hb))).Commit()
	if err != nil {
		return fmt.Errorf("repairing %s: %w", s.keys.Head(), err)
	}
	if tr.Succeeded {
		s.log.Warn("repaired an unreadable bookkeeping key from the history",
			zap.String("key", s.keys.Head()), zap.String("was", bad.err.Error()), zap.Int64("seq", seq), zap.Int64("revision", tr.Header.Revision))
	}
	return nil
}

// Config assembles the snapshot's resources into a configuration, as
// stored (not normalized).
func (snap *Snapshot) Config() (*config.Config, error) {
	return resource.Assemble(nil, snap.Resources)
}

// Get returns one resource, its stored bytes and its mod revision.
func (s *Store) Get(ctx context.Context, ref resource.Ref) (any, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.Resource(ref))
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", ref, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, &NotFoundError{What: ref.String()}
	}
	if n := len(resp.Kvs[0].Value); n > MaxResourceBytes {
		return nil, resp.Kvs[0].ModRevision, TooLarge(n)
	}
	v, err := resource.Decode(ref, resp.Kvs[0].Value)
	if err != nil {
		return nil, resp.Kvs[0].ModRevision, err
	}
	return v, resp.Kvs[0].ModRevision, nil
}

// Change is one set of puts and deletes, applied whole or not at all.
type Change struct {
	// Put creates or replaces resources; each value is a pointer to a
	// config struct.
	Put resource.Set
	// Delete removes resources.
	Delete []resource.Ref
	// Prune removes every resource not in Put.
	Prune bool
	// MissingOK makes a Delete of a resource that does not exist a no-op
	// instead of ErrNotFound.
	MissingOK bool
	// ExpectedRevision, when not zero, is the revision the writer read:
	// if a resource the change touches was written or deleted after it,
	// the change fails with a ConflictError.
	ExpectedRevision int64
	// IfMatch holds, per resource, the mod revision the writer read
	// (0: the writer expects it not to exist).
	IfMatch map[resource.Ref]int64
	// DryRun validates without writing.
	DryRun bool

	// Author, Action and Message are recorded in the history.
	Author  string
	Action  string
	Message string

	rollbackTo int64
}

// Op is what a change does to one resource.
type Op struct {
	Resource string          `json:"resource"`
	Action   string          `json:"action"` // create, update or delete
	Before   json.RawMessage `json:"before,omitempty"`
	After    json.RawMessage `json:"after,omitempty"`

	ref resource.Ref
}

// Result is what a change did.
type Result struct {
	// Revision is the etcd revision of the change; for a dry run or a
	// change that changed nothing, the revision of the latest change, the
	// configuration it was checked against.
	Revision int64 `json:"revision"`
	// Seq is the change's number in the history (0 when nothing was written).
	Seq    int64 `json:"seq,omitempty"`
	Ops    []Op  `json:"ops"`
	DryRun bool  `json:"dry_run,omitempty"`
	// Config is the resulting configuration, normalized.
	Config *config.Config `json:"-"`
}

// Apply validates the configuration that the change would produce and
// writes it in one transaction. It returns a *ConflictError when the
// writer's preconditions no longer hold, a *ReferencedError when the change
// removes a resource that another still names, a *ValidationError when the
// result is invalid, and ErrNotFound when it deletes a resource that does
// not exist. A transaction that loses a race with another change is
// retried from a fresh read; the writer's own preconditions decide whether
// that is a conflict.
func (s *Store) Apply(ctx context.Context, ch Change) (*Result, error) {
	backoff := 20 * time.Millisecond
	for range s.retries {
		res, done, err := s.attempt(ctx, ch)
		if done {
			return res, err
		}
		if err != nil {
			// etcd is briefly unavailable. Trying again is safe: a change
			// that did commit is seen by the next read and becomes a no-op.
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 500*time.Millisecond)
		}
	}
	return nil, fmt.Errorf("writing change: gave up after %d attempts lost to concurrent changes", s.retries)
}

// attempt makes one try at a change. done is false when the try lost a
// race with another change, or etcd was briefly unavailable (err set).
func (s *Store) attempt(ctx context.Context, ch Change) (res *Result, done bool, err error) {
	snap, err := s.Snapshot(ctx)
	if err != nil {
		return nil, !Transient(err), err
	}
	res, txn, err := s.plan(ctx, snap, ch)
	if err != nil {
		return nil, !Transient(err), err
	}
	if txn == nil {
		return res, true, nil
	}
	resp, err := txn.Commit()
	if err != nil {
		err = fmt.Errorf("writing change: %w", err)
		return nil, !Transient(err), err
	}
	if !resp.Succeeded {
		return nil, false, nil
	}
	res.Revision = resp.Header.Revision
	return res, true, nil
}

// plan checks a change against a snapshot and returns the transaction
// that writes it (nil for a dry run or a change that changes nothing).
func (s *Store) plan(ctx context.Context, snap *Snapshot, ch Change) (*Result, clientv3.Txn, error) {
	next := resource.Set{}
	for r, v := range snap.Resources {
		next[r] = v
	}
	removed := map[resource.Ref]bool{}
	for _, r := range ch.Delete {
		_, ok := snap.Raw[r]
		if !ok && !ch.MissingOK {
			return nil, nil, &NotFoundError{What: r.String()}
		}
		if ok {
			delete(next, r)
			removed[r] = true
		}
	}
	if ch.Prune {
		for r := range snap.Raw {
			if _, keep := ch.Put[r]; !keep {
				delete(next, r)
				removed[r] = true
			}
		}
	}
	var ops []Op
	for _, r := range ch.Put.Refs() {
		v := ch.Put[r]
		if n := resource.NameOf(v); n != r.Name {
			return nil, nil, &ValidationError{Errors: []FieldError{{Resource: r.String(), Path: "name", Message: fmt.Sprintf("%q does not match the resource's name %q", n, r.Name)}}}
		}
		old, exists := snap.Raw[r]
		var b []byte
		var err error
		if c, ok := v.(*config.Certificate); ok {
			v, b, err = s.sealCertificate(r, c, old)
		} else {
			// Stored with its defaults filled in, so that a resource
			// written with them and one written without are the same
			// resource: applying either over the other changes nothing.
			resource.Normalize(v)
			b, err = resource.Encode(v)
		}
		if err != nil {
			return nil, nil, err
		}
		if len(b) > MaxResourceBytes {
			return nil, nil, &ValidationError{Errors: []FieldError{{Resource: r.String(),
				Message: fmt.Sprintf("is %d bytes once encoded, more than the %d bytes a resource may take: split it", len(b), MaxResourceBytes)}}}
		}
		next[r] = v
		delete(removed, r)
		switch {
		case !exists:
			ops = append(ops, Op{Resource: r.String(), Action: "create", After: b, ref: r})
		case !bytes.Equal(old, b):
			ops = append(ops, Op{Resource: r.String(), Action: "update", Before: jsonOrNil(old), After: b, ref: r})
		}
	}
	dels := make([]resource.Ref, 0, len(removed))
	for r := range removed {
		dels = append(dels, r)
	}
	resource.SortRefs(dels)
	for _, r := range dels {
		ops = append(ops, Op{Resource: r.String(), Action: "delete", Before: jsonOrNil(snap.Raw[r]), ref: r})
	}

	if err := s.checkPreconditions(ctx, snap, ch, ops); err != nil {
		return nil, nil, err
	}

	// A value that does not decode must be replaced or deleted before
	// anything else can be validated.
	var bad []FieldError
	for r, err := range snap.Invalid {
		if _, replaced := ch.Put[r]; replaced || removed[r] {
			continue
		}
		bad = append(bad, FieldError{Resource: r.String(), Message: "the stored value is invalid (replace or delete it): " + err.Error()})
	}
	if len(bad) > 0 {
		slices.SortFunc(bad, func(a, b FieldError) int { return cmpString(a.Resource, b.Resource) })
		return nil, nil, &ValidationError{Errors: bad}
	}

	if err := checkReferences(next, removed); err != nil {
		return nil, nil, err
	}
	if bad := resource.Check(next); len(bad) > 0 {
		return nil, nil, meshErrors(next, bad)
	}
	if err := s.openCertificates(next, ch.Put); err != nil {
		return nil, nil, err
	}
	cfg, err := resource.Assemble(nil, next)
	if err != nil {
		return nil, nil, fmt.Errorf("assembling configuration: %w", err)
	}
	order := map[resource.Kind][]string{}
	for _, r := range next.Refs() {
		order[r.Kind] = append(order[r.Kind], r.Name)
	}
	cfg.Normalize()
	// A control plane of a mesh may hold policies and nothing for proxies
	// yet: sidecars build their own configuration. So may one whose last
	// policy goes, when it held nothing for proxies before either.
	meshOnly := len(cfg.Listeners)+len(cfg.VirtualHosts)+len(cfg.Clusters)+len(cfg.Plugins)+len(cfg.Certificates) == 0 &&
		(meshResources(order) > 0 || !holdsProxyConfig(snap.Resources))
	if err := cfg.Validate(); err != nil && !meshOnly {
		return nil, nil, fieldErrors(err, order)
	}
	blobs, err := s.checkBlobs(ctx, blobRefs(cfg, next))
	if err != nil {
		return nil, nil, err
	}

	res := &Result{Revision: snap.Revision, Ops: ops, DryRun: ch.DryRun, Config: cfg}
	if ch.DryRun || len(ops) == 0 {
		// Checked against the configuration of the latest change: the
		// revision its history, its resources and the proxies show.
		res.Revision = snap.ChangeRevision
		return res, nil, nil
	}

	seq := snap.Seq + 1
	res.Seq = seq
	now := s.now().UTC()
	entry := Entry{Seq: seq, Author: ch.Author, Time: now, Action: ch.Action, Message: ch.Message, RollbackTo: ch.rollbackTo, Ops: ops}
	eb, err := json.Marshal(entry)
	if err != nil {
		return nil, nil, err
	}
	hb, _ := json.Marshal(head{Seq: seq, Author: ch.Author, Time: now})

	var cmps []clientv3.Cmp
	if snap.headMod == 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.Head()), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.keys.Head()), "=", snap.headMod))
	}
	for _, k := range resource.Kinds {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.keys.Kind(k)), "<", snap.Revision+1).WithPrefix())
	}
	for _, sha := range blobs {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.keys.BlobMeta(sha)), ">", 0))
	}
	var then []clientv3.Op
	for _, op := range ops {
		if op.Action == "delete" {
			then = append(then, clientv3.OpDelete(s.keys.Resource(op.ref)))
		} else {
			then = append(then, clientv3.OpPut(s.keys.Resource(op.ref), string(op.After)))
		}
	}
	then = append(then,
		clientv3.OpPut(s.keys.Head(), string(hb)),
		clientv3.OpPut(s.keys.History(seq), string(eb)))
	if s.historyLimit > 0 && seq > s.historyLimit {
		then = append(then, clientv3.OpDelete(s.keys.HistoryPrefix(), clientv3.WithRange(s.keys.History(seq-s.historyLimit+1))))
	}
	return res, s.cli.Txn(ctx).If(cmps...).Then(then...), nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func jsonOrNil(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// checkPreconditions compares the writer's view with the snapshot.
// With ExpectedRevision, only the resources the change actually modifies
// (ops) are checked: writing a value equal to the current one overwrites
// nothing.
func (s *Store) checkPreconditions(ctx context.Context, snap *Snapshot, ch Change, ops []Op) error {
	var conflicts []Conflict
	refs := make([]resource.Ref, 0, len(ch.IfMatch))
	for r := range ch.IfMatch {
		refs = append(refs, r)
	}
	resource.SortRefs(refs)
	for _, r := range refs {
		want, cur := ch.IfMatch[r], snap.ModRevisions[r]
		if want == cur {
			continue
		}
		reason := fmt.Sprintf("expected revision %d, but it is at revision %d", want, cur)
		switch {
		case want == 0:
			reason = fmt.Sprintf("expected it not to exist, but it was created at revision %d", cur)
		case cur == 0:
			reason = fmt.Sprintf("expected revision %d, but it has been deleted", want)
		}
		conflicts = append(conflicts, Conflict{Resource: r.String(), Expected: want, Current: cur, Reason: reason})
	}
	if rev := ch.ExpectedRevision; rev > 0 {
		touched := map[resource.Ref]bool{}
		for _, op := range ops {
			touched[op.ref] = true
		}
		// Deletions leave no key behind: the history tells them.
		deletedAt := map[resource.Ref]int64{}
		if rev < snap.Revision {
			entries, err := s.historySince(ctx, rev)
			if err != nil {
				return err
			}
			for _, e := range entries {
				for _, op := range e.Ops {
					if op.Action == "delete" {
						if r, err := resource.ParseRef(op.Resource); err == nil {
							deletedAt[r] = max(deletedAt[r], e.Revision)
						}
					}
				}
			}
		}
		list := make([]resource.Ref, 0, len(touched))
		for r := range touched {
			list = append(list, r)
		}
		resource.SortRefs(list)
		for _, r := range list {
			if _, dup := ch.IfMatch[r]; dup {
				continue
			}
			if cur := snap.ModRevisions[r]; cur > rev {
				conflicts = append(conflicts, Conflict{Resource: r.String(), Expected: rev, Current: cur,
					Reason: fmt.Sprintf("changed at revision %d, after revision %d", cur, rev)})
			} else if d := deletedAt[r]; d > rev && cur == 0 {
				conflicts = append(conflicts, Conflict{Resource: r.String(), Expected: rev,
					Reason: fmt.Sprintf("deleted at revision %d, after revision %d", d, rev)})
			}
		}
	}
	if len(conflicts) > 0 {
		return &ConflictError{Conflicts: conflicts}
	}
	return nil
}

// checkReferences refuses to remove a resource that a remaining one names.
func checkReferences(next resource.Set, removed map[resource.Ref]bool) error {
	if len(removed) == 0 {
		return nil
	}
	refs := resource.References(next)
	var out []Referenced
	list := make([]resource.Ref, 0, len(removed))
	for r := range removed {
		list = append(list, r)
	}
	resource.SortRefs(list)
	for _, r := range list {
		by := refs[r]
		if len(by) == 0 {
			continue
		}
		rr := Referenced{Resource: r.String()}
		for _, b := range by {
			rr.By = append(rr.By, b.String())
		}
		out = append(out, rr)
	}
	if len(out) > 0 {
		return &ReferencedError{Refs: out}
	}
	return nil
}

// meshResources counts the resources of the mesh kinds in order.
func meshResources(order map[resource.Kind][]string) int {
	n := 0
	for _, k := range resource.MeshKinds {
		n += len(order[k])
	}
	return n
}

// holdsProxyConfig tells whether set has a resource of a kind proxies
// follow.
func holdsProxyConfig(set resource.Set) bool {
	for r := range set {
		if !slices.Contains(resource.MeshKinds, r.Kind) {
			return true
		}
	}
	return false
}

// blobRef is a resource that names a blob.
type blobRef struct{ resource, sha256 string }

// blobRefs lists the blobs the plugins of cfg and the Wasm plugins of
// set name.
func blobRefs(cfg *config.Config, set resource.Set) []blobRef {
	var out []blobRef
	for _, p := range cfg.Plugins {
		if p.SHA256 != "" && p.File == "" {
			out = append(out, blobRef{"plugins/" + p.Name, p.SHA256})
		}
	}
	for _, r := range set.Refs() {
		if p, ok := set[r].(*policy.WasmPlugin); ok && p.SHA256 != "" {
			out = append(out, blobRef{r.String(), p.SHA256})
		}
	}
	return out
}

// checkBlobs reports the resources that name a blob the store does not
// hold and returns the digests of those it does.
func (s *Store) checkBlobs(ctx context.Context, refs []blobRef) ([]string, error) {
	var shas []string
	var ops []clientv3.Op
	for _, b := range refs {
		if slices.Contains(shas, b.sha256) {
			continue
		}
		shas = append(shas, b.sha256)
		ops = append(ops, clientv3.OpGet(s.keys.BlobMeta(b.sha256), clientv3.WithCountOnly()))
	}
	if len(ops) == 0 {
		return nil, nil
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("reading blobs: %w", err)
	}
	have := map[string]bool{}
	for i, r := range resp.Responses {
		have[shas[i]] = r.GetResponseRange().Count > 0
	}
	var missing []FieldError
	for _, b := range refs {
		if !have[b.sha256] {
			missing = append(missing, FieldError{Resource: b.resource, Path: "sha256",
				Message: fmt.Sprintf("no blob %s is stored; push the module first (wasmgate ctl plugin push FILE)", b.sha256)})
		}
	}
	if len(missing) > 0 {
		return nil, &ValidationError{Errors: missing}
	}
	return shas, nil
}

// sealCertificate returns the value a certificate is validated as (its key
// in clear) and the bytes stored for it (its key sealed). A key_pem that is
// already sealed (a rollback writes back a stored value) is opened first;
// one that reads secret.Redacted keeps the stored key. When the clear value
// equals the stored one, the stored bytes are kept, so that applying the
// same certificate again changes nothing.
func (s *Store) sealCertificate(r resource.Ref, c *config.Certificate, old []byte) (*config.Certificate, []byte, error) {
	if s.secret == nil {
		return nil, nil, noSecretKey(r)
	}
	plain := *c
	var stored *config.Certificate
	if old != nil {
		if v, err := resource.Decode(r, old); err == nil {
			if oc, err := secret.OpenCertificate(s.secret, *v.(*config.Certificate)); err == nil {
				stored = &oc
			}
		}
	}
	if plain.KeyPEM == secret.Redacted {
		if stored == nil {
			return nil, nil, &ValidationError{Errors: []FieldError{{Resource: r.String(), Path: "key_pem", Message: "is redacted and no stored key can take its place; give the PEM private key"}}}
		}
		plain.KeyPEM = stored.KeyPEM
	}
	plain, err := secret.OpenCertificate(s.secret, plain)
	if err != nil {
		return nil, nil, &ValidationError{Errors: []FieldError{{Resource: r.String(), Path: "key_pem", Message: err.Error()}}}
	}
	if stored != nil && *stored == plain {
		return &plain, old, nil
	}
	sealed := plain
	sealed.KeyPEM = s.secret.Seal(plain.KeyPEM)
	b, err := resource.Encode(&sealed)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding %s: %w", r, err)
	}
	return &plain, b, nil
}

// openCertificates replaces, in next, every stored certificate the change
// does not put with a copy whose key is in clear, for validation.
func (s *Store) openCertificates(next, put resource.Set) error {
	var bad []FieldError
	for r, v := range next {
		c, ok := v.(*config.Certificate)
		if !ok {
			continue
		}
		if s.secret == nil {
			return noSecretKey(r)
		}
		if _, ok := put[r]; ok {
			continue
		}
		plain, err := secret.OpenCertificate(s.secret, *c)
		if err != nil {
			bad = append(bad, FieldError{Resource: r.String(), Path: "key_pem", Message: err.Error()})
			continue
		}
		next[r] = &plain
	}
	if len(bad) > 0 {
		slices.SortFunc(bad, func(a, b FieldError) int { return cmpString(a.Resource, b.Resource) })
		return &ValidationError{Errors: bad}
	}
	return nil
}

func noSecretKey(r resource.Ref) error {
	return &ValidationError{Errors: []FieldError{{Resource: r.String(), Path: "key_pem",
		Message: "the control plane has no secret key to encrypt private keys with; start it with --secret-key-file to store certificates"}}}
}
