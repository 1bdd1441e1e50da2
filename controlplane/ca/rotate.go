package ca

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Status is where the CA stands: its authorities, the rotation's phase,
// and the certificate each proxy holds.
type Status struct {
	TrustDomain    string          `json:"trust_domain"`
	Phase          string          `json:"phase"`
	Signer         string          `json:"signer"`
	BundleRevision int64           `json:"bundle_revision"`
	Lifetime       string          `json:"certificate_lifetime"`
	Authorities    []AuthorityInfo `json:"authorities"`
	Proxies        []ProxyRecord   `json:"proxies"`
	// Pending names the proxies the next rotation step waits for.
	Pending []string `json:"pending,omitempty"`
	// Next says what `wasmgate ctl ca rotate` does next.
	Next string `json:"next"`
}

// AuthorityInfo describes one trusted authority; it never holds a key.
type AuthorityInfo struct {
	ID        string    `json:"id"`
	Subject   string    `json:"subject"`
	Root      string    `json:"root_subject"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Signing   bool      `json:"signing"`
	Provided  bool      `json:"operator_provided,omitempty"`
	AddedAt   time.Time `json:"added_at"`
}

// Status reports the CA. Records of proxies whose certificate expired
// more than an hour ago are deleted on the way.
func (c *CA) Status(ctx context.Context) (Status, error) {
	ls, err := c.load(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{TrustDomain: ls.st.TrustDomain, Phase: ls.st.Phase, Signer: ls.st.Signer, BundleRevision: ls.rev, Lifetime: c.life.String()}
	for _, a := range ls.st.Authorities {
		ai := AuthorityInfo{ID: a.ID, Signing: a.ID == ls.st.Signer, Provided: a.Provided, AddedAt: a.AddedAt}
		if cert, err := parseCert(a.CertPEM); err == nil {
			ai.Subject, ai.NotBefore, ai.NotAfter = cert.Subject.String(), cert.NotBefore, cert.NotAfter
		}
		if root, err := parseCert(a.RootPEM); err == nil {
			ai.Root = root.Subject.String()
		}
		st.Authorities = append(st.Authorities, ai)
	}
	st.Proxies, err = c.proxies(ctx)
	if err != nil {
		return Status{}, err
	}
	st.Pending = pending(ls, st.Proxies)
	switch ls.st.Phase {
	case PhaseAdded:
		st.Next = "activate the new root: it signs from then on and every proxy renews its certificate"
	case PhaseActivated:
		st.Next = "remove the old root from the trust bundle"
	default:
		st.Next = "add a new root to the trust bundle beside the current one"
	}
	return st, nil
}

// proxies lists the live records, deleting the long-expired ones.
func (c *CA) proxies(ctx context.Context) ([]ProxyRecord, error) {
	resp, err := c.cli.Get(ctx, c.keys.proxies(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing proxy certificates: %w", err)
	}
	now := time.Now()
	out := make([]ProxyRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r ProxyRecord
		if json.Unmarshal(kv.Value, &r) != nil {
			continue
		}
		if now.After(r.NotAfter.Add(recordGrace)) {
			c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
				Then(clientv3.OpDelete(string(kv.Key))).Commit()
			continue
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b ProxyRecord) int { return strings.Compare(a.Proxy, b.Proxy) })
	return out, nil
}

// pending returns the proxies with an unexpired certificate that the
// next step waits for: in PhaseAdded those that have not fetched the
// bundle with the new root, in PhaseActivated those whose certificate the
// new root has not signed.
func pending(ls *loadedState, recs []ProxyRecord) []string {
	var out []string
	now := time.Now()
	for _, r := range recs {
		if now.After(r.NotAfter) {
			continue
		}
		switch ls.st.Phase {
		case PhaseAdded:
			if r.BundleRevision < ls.rev {
				out = append(out, r.Proxy)
			}
		case PhaseActivated:
			if r.Authority != ls.st.Signer {
				out = append(out, r.Proxy)
			}
		}
	}
	return out
}

// PendingError is a rotation step refused because proxies have not caught
// up; Proxies names them.
type PendingError struct {
	Phase   string
	Proxies []string
}

func (e *PendingError) Error() string {
	what := "fetched the trust bundle with the new root"
	if e.Phase == PhaseActivated {
		what = "renewed their certificate from the new root"
	}
	return fmt.Sprintf("%d proxies have not yet %s: %s (wait, or force the step)", len(e.Proxies), what, strings.Join(e.Proxies, ", "))
}

// Rotate moves the root rotation one step on:
//
//	stable    -> added:     a new root joins the bundle; the old one signs.
//	added     -> activated: the new root signs; proxies renew from it.
//	activated -> stable:    the old root leaves the bundle.
//
// A step waits for every proxy to have caught up with the one before,
// unless force is set. next, when not nil, is an operator's authority to
// rotate to instead of a new root the CA makes.
func (c *CA) Rotate(ctx context.Context, force bool, next *Authority) (Status, error) {
	ls, err := c.load(ctx)
	if err != nil {
		return Status{}, err
	}
	st := ls.st
	st.Authorities = slices.Clone(st.Authorities)
	switch st.Phase {
	case PhaseStable, "":
		a, err := c.newAuthority(next)
		if err != nil {
			return Status{}, err
		}
		for _, old := range st.Authorities {
			if old.ID == a.ID {
				return Status{}, fmt.Errorf("authority %s is already in the trust bundle", a.ID)
			}
		}
		st.Authorities = append(st.Authorities, a)
		st.Phase = PhaseAdded
	case PhaseAdded:
		if next != nil {
			return Status{}, fmt.Errorf("a rotation is under way (phase %s); finish it before rotating to another authority", st.Phase)
		}
		if err := c.caughtUp(ctx, ls, force); err != nil {
			return Status{}, err
		}
		st.Signer = st.Authorities[len(st.Authorities)-1].ID
		st.Phase = PhaseActivated
	case PhaseActivated:
		if next != nil {
			return Status{}, fmt.Errorf("a rotation is under way (phase %s); finish it before rotating to another authority", st.Phase)
		}
		if err := c.caughtUp(ctx, ls, force); err != nil {
			return Status{}, err
		}
		st.Authorities = slices.DeleteFunc(st.Authorities, func(a authority) bool { return a.ID != st.Signer })
		st.Phase = PhaseStable
	default:
		return Status{}, fmt.Errorf("the stored CA is in unknown phase %q", st.Phase)
	}
	b, _ := json.Marshal(st)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(c.keys.state()), "=", ls.rev)).
		Then(clientv3.OpPut(c.keys.state(), string(b))).Commit()
	if err != nil {
		return Status{}, fmt.Errorf("storing the CA: %w", err)
	}
	if !resp.Succeeded {
		return Status{}, fmt.Errorf("the CA changed while rotating (another rotation?); nothing was changed, look at the status and retry")
	}
	c.logger.Info("root rotation step", zap.String("phase", st.Phase), zap.String("signer", st.Signer), zap.Bool("forced", force))
	return c.Status(ctx)
}

func (c *CA) caughtUp(ctx context.Context, ls *loadedState, force bool) error {
	if force {
		return nil
	}
	recs, err := c.proxies(ctx)
	if err != nil {
		return err
	}
	if p := pending(ls, recs); len(p) > 0 {
		return &PendingError{Phase: ls.st.Phase, Proxies: p}
	}
	return nil
}
