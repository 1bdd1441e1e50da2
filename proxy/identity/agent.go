// Package identity is the proxy's side of the mesh identity: an agent
// that makes the proxy's private key (which never leaves the process),
// gets a SPIFFE workload certificate for it from the control plane's CA,
// renews it at half its life, and follows the trust bundle live.
//
// The first certificate is asked for with a join token; every renewal
// authenticates with the current certificate over mTLS. While the control
// plane cannot be reached the agent keeps the certificate it holds and
// retries with backoff; it logs a warning as expiry nears and exports the
// seconds left as a metric. A renewed certificate is used by new
// handshakes only: open connections keep theirs.
//
// The Agent implements tlsconf.Mesh, through which listeners and clusters
// that say `tls: {mesh: true}` present the certificate and verify peers.
package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/proxy/tlsconf"
)

// Defaults of Options.
const (
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultBundleWait = 30 * time.Second
)

// Options configure an Agent. Server and BootstrapRoots are required, and
// JoinToken unless StateDir holds a certificate that has not expired.
type Options struct {
	// Server is the control plane's API, https://host:port.
	Server string
	// BootstrapRoots are PEM roots to trust the control plane with until
	// the first bundle arrives: the control plane's trust-bundle.pem.
	BootstrapRoots []byte
	// JoinToken authenticates the first certificate request.
	JoinToken string
	// Name names the proxy in the CA's status; empty means the host name.
	Name string
	// StateDir, when set, keeps the key, certificate and bundle on disk
	// (key mode 0600), so that a proxy restarted while the control plane
	// is away still serves.
	StateDir string
	// Lifetime asks for certificates shorter-lived than the CA's; zero
	// takes the CA's.
	Lifetime time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts.
	MinBackoff, MaxBackoff time.Duration
	// BundleWait is how long one long poll of the bundle lasts.
	BundleWait time.Duration
	// Registerer receives the agent's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives renewals, failures and expiry warnings.
	Logger *zap.Logger
}

// Agent holds the proxy's workload certificate and trust bundle. Its
// methods are safe for concurrent use.
type Agent struct {
	o      Options
	log    *zap.Logger
	client *api.Client

	svid   atomic.Pointer[svid]
	bundle atomic.Pointer[bundleState]
	boot   *x509.CertPool // trusts the control plane before a bundle

	ready     chan struct{}
	readyOnce sync.Once
	wake      chan struct{} // a new bundle: look at the certificate again

	renewals  *prometheus.CounterVec
	expiryMet prometheus.GaugeFunc
	rotated   atomic.Pointer[func(Rotation)]
}

// Rotation is a renewed workload certificate, in use for new handshakes.
type Rotation struct {
	// ID is the certificate's SPIFFE ID, Serial its serial number in hex.
	ID, Serial string
	NotAfter   time.Time
	// Authority names the CA key that signed it.
	Authority string
}

// OnRotation makes fn learn of every certificate renewed from now on,
// right after it is swapped in (the proxy's certificate_rotated event).
// fn runs on the agent's goroutine and must not block; nil stops the
// calls.
func (a *Agent) OnRotation(fn func(Rotation)) {
	if fn == nil {
		a.rotated.Store(nil)
		return
	}
	a.rotated.Store(&fn)
}

var _ tlsconf.Mesh = (*Agent)(nil)

// svid is one certificate and its key.
type svid struct {
	cert   *tls.Certificate // Leaf set
	id     spiffeid.ID
	signer string // the authority that signed it
	keyPEM []byte
	// renewAt is half the lifetime, with jitter.
	renewAt time.Time
}

type bundleState struct {
	b      ca.Bundle
	bundle *x509bundle.Bundle
	pool   *x509.CertPool
}

// New checks o and returns an agent that has no certificate yet; Run
// gets one.
func New(o Options) (*Agent, error) {
	u, err := url.Parse(o.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("identity: server %q: the control plane must be reached over https", o.Server)
	}
	if o.Name == "" {
		o.Name, _ = os.Hostname()
	}
	if err := ca.CheckProxyName(o.Name); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.BundleWait <= 0 {
		o.BundleWait = DefaultBundleWait
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	a := &Agent{o: o, log: o.Logger, ready: make(chan struct{}), wake: make(chan struct{}, 1)}
	if len(o.BootstrapRoots) > 0 {
		a.boot = x509.NewCertPool()
		if !a.boot.AppendCertsFromPEM(o.BootstrapRoots) {
			return nil, errors.New("identity: the bootstrap roots hold no PEM certificate")
		}
	}
	if o.StateDir != "" {
		if err := a.loadState(); err != nil {
			a.log.Warn("the stored certificate is not used", zap.String("dir", o.StateDir), zap.Error(err))
		}
	}
	if a.boot == nil && a.bundle.Load() == nil {
		return nil, errors.New("identity: bootstrap roots are required to trust the control plane (its trust-bundle.pem)")
	}
	if o.JoinToken == "" && a.svid.Load() == nil {
		return nil, errors.New("identity: a join token is required for the first certificate (wasmgate ctl token create)")
	}
	host := u.Hostname()
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The control plane's certificate is checked against the current
		// bundle, which changes, in VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return a.verifyControlPlane(cs, host) },
	}
	a.client = &api.Client{Server: o.Server, HTTP: &http.Client{Transport: &certTransport{a: a, tls: tc}}}
	a.renewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmgate_identity_renewals_total",
		Help: "Certificate requests to the control plane's CA, by result."}, []string{"result"})
	a.expiryMet = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wasmgate_identity_certificate_expiry_seconds",
		Help: "Seconds until the proxy's workload certificate expires; 0 without one."}, func() float64 {
		if s := a.svid.Load(); s != nil {
			return max(0, time.Until(s.cert.Leaf.NotAfter).Seconds())
		}
		return 0
	})
	if o.Registerer != nil {
		if err := a.Register(o.Registerer); err != nil {
			return nil, err
		}
	}
	if a.svid.Load() != nil {
		a.markReady()
	}
	return a, nil
}

// Register adds the agent's metrics to reg: the seconds until the
// certificate expires and the renewals by result.
func (a *Agent) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{a.renewals, a.expiryMet} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("identity: metrics: %w", err)
		}
	}
	return nil
}

// Ready is closed once the agent holds a certificate.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

func (a *Agent) markReady() { a.readyOnce.Do(func() { close(a.ready) }) }

// Certificate returns the current certificate for a handshake.
func (a *Agent) Certificate() (*tls.Certificate, error) {
	s := a.svid.Load()
	if s == nil {
		return nil, errors.New("identity: no workload certificate yet")
	}
	return s.cert, nil
}

// TrustBundle returns the roots peers must chain to, or nil before the
// first certificate.
func (a *Agent) TrustBundle() *x509bundle.Bundle {
	if b := a.bundle.Load(); b != nil {
		return b.bundle
	}
	return nil
}

// ID is the proxy's SPIFFE ID, zero before the first certificate.
func (a *Agent) ID() spiffeid.ID {
	if s := a.svid.Load(); s != nil {
		return s.id
	}
	return spiffeid.ID{}
}

// Serial returns the current certificate's serial number in hex.
func (a *Agent) Serial() string {
	if s := a.svid.Load(); s != nil {
		return s.cert.Leaf.SerialNumber.Text(16)
	}
	return ""
}

// BundleRevision is the revision of the bundle held.
func (a *Agent) BundleRevision() int64 {
	if b := a.bundle.Load(); b != nil {
		return b.b.Revision
	}
	return 0
}

// verifyControlPlane checks the control plane's certificate against the
// bundle (or the bootstrap roots before one) and the host name.
func (a *Agent) verifyControlPlane(cs tls.ConnectionState, host string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the control plane sent no certificate")
	}
	roots := a.boot
	if b := a.bundle.Load(); b != nil {
		roots = b.pool
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: host, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// Run gets a certificate (when the agent holds none), then renews it and
// follows the bundle until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	if a.svid.Load() == nil {
		bo := a.backoff()
		for a.svid.Load() == nil {
			if err := a.renew(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				var ae *api.Error
				if errors.As(err, &ae) && ae.Status == http.StatusForbidden {
					a.log.Error("the join token was refused; ask for a new one (wasmgate ctl token create)", zap.Error(err))
				} else {
					a.log.Warn("cannot get a workload certificate yet; retrying", zap.Error(err))
				}
				if !bo.wait(ctx) {
					return
				}
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.followBundle(ctx) }()
	a.keepRenewed(ctx)
	wg.Wait()
}

// Start runs the agent in the background and returns once it holds a
// certificate, or with ctx's error.
func (a *Agent) Start(ctx context.Context, runCtx context.Context) error {
	go a.Run(runCtx)
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("identity: no workload certificate: %w", ctx.Err())
	}
}

// keepRenewed renews at half-life, or early when another authority signs,
// and retries with backoff while the control plane is away.
func (a *Agent) keepRenewed(ctx context.Context) {
	bo := a.backoff()
	for {
		s := a.svid.Load()
		at := s.renewAt
		if b := a.bundle.Load(); b != nil && b.b.Signer != "" && b.b.Signer != s.signer {
			// Rotation: renew soon, spread over a second so that a fleet
			// does not ask at once.
			at = time.Now().Add(time.Duration(mrand.Int64N(int64(time.Second))))
		}
		t := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		if err := a.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			left := time.Until(s.cert.Leaf.NotAfter)
			life := s.cert.Leaf.NotAfter.Sub(s.cert.Leaf.NotBefore)
			if left <= 0 {
				a.log.Error("the workload certificate has expired and the control plane refuses to renew it with an expired one; give the proxy a new join token", zap.Error(err))
			} else if left < life/4 {
				a.log.Warn("the workload certificate expires soon and cannot be renewed", zap.Duration("expires_in", left), zap.Error(err))
			} else {
				a.log.Info("certificate renewal failed; keeping the current one and retrying", zap.Duration("expires_in", left), zap.Error(err))
			}
			if !bo.waitOrWake(ctx, a.wake) {
				return
			}
			// Ask again right away on the next round.
			a.svid.Store(&svid{cert: s.cert, id: s.id, signer: s.signer, keyPEM: s.keyPEM, renewAt: time.Now()})
			continue
		}
		bo.reset()
	}
}

// renew makes a key and asks for a certificate: with the join token the
// first time, with the current certificate after.
func (a *Agent) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.CertificateRequest{}
	cur := a.svid.Load()
	if cur != nil {
		tmpl.URIs = []*url.URL{cur.id.URL()}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return err
	}
	req := api.SignRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), Proxy: a.o.Name}
	req.Lifetime = config.Duration(a.o.Lifetime)
	if cur == nil {
		req.JoinToken = a.o.JoinToken
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	iss, err := a.client.Sign(rctx, req)
	cancel()
	if err != nil {
		a.renewals.WithLabelValues("error").Inc()
		return err
	}
	next, err := a.accept(iss, key)
	if err != nil {
		a.renewals.WithLabelValues("error").Inc()
		return err
	}
	a.renewals.WithLabelValues("ok").Inc()
	serial := next.cert.Leaf.SerialNumber.Text(16)
	a.log.Info("workload certificate issued", zap.String("spiffe_id", next.id.String()), zap.String("serial", serial),
		zap.Time("not_after", next.cert.Leaf.NotAfter), zap.String("authority", next.signer))
	if fn := a.rotated.Load(); fn != nil && cur != nil {
		(*fn)(Rotation{ID: next.id.String(), Serial: serial, NotAfter: next.cert.Leaf.NotAfter, Authority: next.signer})
	}
	a.markReady()
	return nil
}

// accept checks an issued certificate against its bundle and makes it
// the current one.
func (a *Agent) accept(iss *ca.Issued, key crypto.Signer) (*svid, error) {
	bs, err := parseBundle(iss.Bundle)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	s, err := newSVID([]byte(iss.CertPEM), keyPEM, bs, iss.Bundle.Signer)
	if err != nil {
		return nil, fmt.Errorf("the issued certificate: %w", err)
	}
	if cur := a.bundle.Load(); cur == nil || bs.b.Revision >= cur.b.Revision {
		a.bundle.Store(bs)
	}
	a.svid.Store(s)
	a.saveState(s, a.bundle.Load())
	return s, nil
}

func newSVID(certPEM, keyPEM []byte, bs *bundleState, signer string) (*svid, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	chain := make([]*x509.Certificate, len(pair.Certificate))
	for i, der := range pair.Certificate {
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	pair.Leaf = chain[0]
	id, _, err := x509svid.Verify(chain, bs.bundle)
	if err != nil {
		return nil, err
	}
	life := pair.Leaf.NotAfter.Sub(pair.Leaf.NotBefore)
	// Half-life, give or take a twentieth of the life, so that proxies
	// started together do not renew together.
	jitter := time.Duration(mrand.Int64N(int64(life/10)+1)) - life/20
	return &svid{cert: &pair, id: id, signer: signer, keyPEM: keyPEM, renewAt: pair.Leaf.NotBefore.Add(life/2 + jitter)}, nil
}

func parseBundle(b ca.Bundle) (*bundleState, error) {
	bb, err := ca.ParseBundle(b)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range bb.X509Authorities() {
		pool.AddCert(r)
	}
	return &bundleState{b: b, bundle: bb, pool: pool}, nil
}

// followBundle long-polls the bundle and swaps it in when it changes.
func (a *Agent) followBundle(ctx context.Context) {
	bo := a.backoff()
	for ctx.Err() == nil {
		cur := a.bundle.Load()
		rctx, cancel := context.WithTimeout(ctx, a.o.BundleWait+10*time.Second)
		b, err := a.client.Bundle(rctx, cur.b.Revision, a.o.BundleWait, a.o.Name)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Debug("fetching the trust bundle", zap.Error(err))
			if !bo.wait(ctx) {
				return
			}
			continue
		}
		bo.reset()
		if b.Revision <= cur.b.Revision {
			continue
		}
		bs, err := parseBundle(b)
		if err != nil {
			a.log.Warn("the control plane sent a bundle that does not parse", zap.Error(err))
			if !bo.wait(ctx) {
				return
			}
			continue
		}
		a.bundle.Store(bs)
		a.log.Info("trust bundle updated", zap.Int64("revision", b.Revision), zap.Int("roots", len(bs.bundle.X509Authorities())),
			zap.String("signer", b.Signer), zap.String("phase", b.Phase))
		if s := a.svid.Load(); s != nil {
			a.saveState(s, bs)
		}
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// backoff doubles from MinBackoff to MaxBackoff, with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func (a *Agent) backoff() *backoff { return &backoff{min: a.o.MinBackoff, max: a.o.MaxBackoff} }

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + time.Duration(mrand.Int64N(int64(b.cur/2)+1))
}

func (b *backoff) wait(ctx context.Context) bool { return b.waitOrWake(ctx, nil) }

func (b *backoff) waitOrWake(ctx context.Context, wake <-chan struct{}) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// stored is the state kept in StateDir beside the PEM files.
type stored struct {
	Signer string    `json:"signer"`
	Bundle ca.Bundle `json:"bundle"`
}

func (a *Agent) saveState(s *svid, bs *bundleState) {
	if a.o.StateDir == "" || bs == nil {
		return
	}
	err := func() error {
		if err := os.MkdirAll(a.o.StateDir, 0o700); err != nil {
			return err
		}
		var certPEM []byte
		for _, der := range s.cert.Certificate {
			certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		meta, _ := json.Marshal(stored{Signer: s.signer, Bundle: bs.b})
		for _, f := range []struct {
			name string
			data []byte
			mode os.FileMode
		}{{"svid.key", s.keyPEM, 0o600}, {"svid.pem", certPEM, 0o644}, {"bundle.json", meta, 0o644}} {
			p := filepath.Join(a.o.StateDir, f.name)
			if err := os.WriteFile(p+".tmp", f.data, f.mode); err != nil {
				return err
			}
			if err := os.Rename(p+".tmp", p); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		a.log.Warn("keeping the certificate on disk", zap.String("dir", a.o.StateDir), zap.Error(err))
	}
}

// loadState takes a stored certificate that has not expired.
func (a *Agent) loadState() error {
	keyPEM, err := os.ReadFile(filepath.Join(a.o.StateDir, "svid.key"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	certPEM, err := os.ReadFile(filepath.Join(a.o.StateDir, "svid.pem"))
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(a.o.StateDir, "bundle.json"))
	if err != nil {
		return err
	}
	var st stored
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("bundle.json: %w", err)
	}
	bs, err := parseBundle(st.Bundle)
	if err != nil {
		return err
	}
	s, err := newSVID(certPEM, keyPEM, bs, st.Signer)
	if err != nil {
		return fmt.Errorf("svid.pem: %w", err)
	}
	a.bundle.Store(bs)
	a.svid.Store(s)
	a.log.Info("serving the stored workload certificate", zap.String("spiffe_id", s.id.String()), zap.Time("not_after", s.cert.Leaf.NotAfter))
	return nil
}

// HTTPClient reaches the control plane as the agent does: trusting the
// current bundle and presenting the current certificate (certTransport).
// Sidecars watch discovery and keep their registration with it.
func (a *Agent) HTTPClient() *http.Client { return a.client.HTTP }
