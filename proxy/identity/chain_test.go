package identity_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmgate/wasmgate/internal/testaddr"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/proxy"
	"github.com/wasmgate/wasmgate/proxy/identity"
)

const adminSecret = "chain-test-admin-secret-0123456789"

// meshCP is a control plane with the mesh on, restartable on the same
// addresses and data.
type meshCP struct {
	t    testing.TB
	opts controlplane.Options
	srv  *controlplane.Server
}

func startMeshCP(t testing.TB, life time.Duration) *meshCP {
	t.Helper()
	key, err := secret.ParseKey(secret.NewKeyText())
	if err != nil {
		t.Fatal(err)
	}
	cp := &meshCP{t: t, opts: controlplane.Options{
		DataDir: t.TempDir(), EtcdClientAddr: testaddr.Free(t), EtcdPeerAddr: testaddr.Free(t), APIAddr: testaddr.Free(t),
		Tokens: []api.Token{{Name: "admin", Role: api.RoleAdmin, Secret: adminSecret}}, SecretKey: key,
		Mesh: true, CertificateLifetime: life, AllowShortLifetimes: true,
	}}
	cp.start()
	t.Cleanup(func() { cp.stop() })
	return cp
}

func (cp *meshCP) start() {
	cp.t.Helper()
	srv, err := controlplane.Start(context.Background(), cp.opts)
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.srv = srv
}

func (cp *meshCP) stop() {
	if cp.srv != nil {
		cp.srv.Close()
		cp.srv = nil
	}
}

func (cp *meshCP) client(t testing.TB) *api.Client {
	roots, err := os.ReadFile(cp.srv.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	return &api.Client{Server: cp.srv.APIURL(), Token: adminSecret, HTTP: &http.Client{Transport: tr}}
}

func (cp *meshCP) bundle(t testing.TB) []byte {
	b, err := os.ReadFile(cp.srv.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startAgent joins the mesh as namespace shop, service account sa.
func startAgent(t testing.TB, ctx context.Context, cp *meshCP, sa string, log *zap.Logger) *identity.Agent {
	t.Helper()
	tok, err := cp.client(t).CreateToken(context.Background(), api.TokenRequest{Namespace: "shop", ServiceAccount: sa})
	if err != nil {
		t.Fatal(err)
	}
	a, err := identity.New(identity.Options{Server: cp.srv.APIURL(), BootstrapRoots: cp.bundle(t), JoinToken: tok.Token, Name: sa,
		StateDir: filepath.Join(t.TempDir(), sa), MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		BundleWait: 5 * time.Second, Logger: log.Named(sa)})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := a.Start(sctx, ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func startProxy(t testing.TB, a *identity.Agent, yaml string) *proxy.Server {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "chain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := proxy.NewServer(proxy.Options{Mesh: a})
	if err := s.Apply(context.Background(), cfg, "1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

// hopConfig is a proxy whose listener (mesh or not) sends everything to
// one cluster (mesh or not). maxAge, when set, closes the listener's
// connections after a response once they are that old, so that
// upstream pools handshake again.
func hopConfig(listenerMesh bool, upstream string, clusterMesh bool, expect string, maxAge time.Duration) string {
	ltls, ctls := "", ""
	if listenerMesh {
		ltls = "\n    tls: {mesh: true}"
	}
	if maxAge > 0 {
		ltls += "\n    max_connection_age: " + maxAge.String()
	}
	if clusterMesh {
		ctls = fmt.Sprintf("\n    tls: {mesh: true, expected_identities: [%q]}", expect)
	}
	return `
admin: {address: "off"}
listeners:
  - name: in
    address: 127.0.0.1:0` + ltls + `
clusters:
  - name: next
    endpoints: [{address: "` + upstream + `"}]` + ctls + `
virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - name: all
        match: {prefix: /}
        cluster: next
`
}

func startApp(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// load sends requests through the chain until stopped, counting failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(url string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || string(body) != "ok") {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish() { close(l.stop); l.wg.Wait() }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestChainRenewRotateRestart runs edge -> A -> B, mTLS with workload
// certificates on both hops, under continuous load, while every proxy
// renews three times (twice at half-life, once more when the new root is
// activated), the root rotates, and the control plane is away for longer
// than a renewal period. No request may fail, and every proxy ends on a
// certificate of the new root.
//
// The outage starts right after the rotation, whose activation renewed
// every certificate, so that each has more life left than the outage
// plus the control plane's restart lasts, on a loaded machine too.
func TestChainRenewRotateRestart(t *testing.T) {
	const life = 14 * time.Second
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := startMeshCP(t, life)

	agents := map[string]*identity.Agent{}
	for _, sa := range []string{"edge", "a", "b"} {
		agents[sa] = startAgent(t, ctx, cp, sa, log)
	}
	app := startApp(t)
	const age = 300 * time.Millisecond
	b := startProxy(t, agents["b"], hopConfig(true, app, false, "", age))
	a := startProxy(t, agents["a"], hopConfig(true, b.Addr("in").String(), true, "spiffe://wasmgate.local/ns/shop/sa/b", age))
	edge := startProxy(t, agents["edge"], hopConfig(false, a.Addr("in").String(), true, "spiffe://wasmgate.local/ns/shop/sa/a", 0))

	ld := startLoad("http://"+edge.Addr("in").String()+"/", 4)
	defer func() {
		select {
		case <-ld.stop:
		default:
			ld.finish()
		}
	}()
	waitFor(t, "the first requests", 10*time.Second, func() bool { return ld.ok.Load() > 10 })

	// Two renewals of every proxy at half-life.
	seen := map[string]map[string]bool{}
	for sa, ag := range agents {
		seen[sa] = map[string]bool{ag.Serial(): true}
	}
	renewals := func(n int) func() bool {
		return func() bool {
			done := true
			for sa, ag := range agents {
				seen[sa][ag.Serial()] = true
				if len(seen[sa]) < n+1 {
					done = false
				}
			}
			return done
		}
	}
	waitFor(t, "two renewals of every proxy", 3*life, renewals(2))
	t.Logf("two renewals each: %d requests, %d failed", ld.ok.Load(), ld.failed.Load())

	// Root rotation, step by step, each step once every proxy caught up.
	cli := cp.client(t)
	st, err := cli.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	added := st.BundleRevision
	newRoot := st.Authorities[len(st.Authorities)-1].ID
	waitFor(t, "every proxy to hold the bundle with the new root", 10*time.Second, func() bool {
		for _, ag := range agents {
			if ag.BundleRevision() < added {
				return false
			}
		}
		return true
	})
	// The proxies' records reach the CA with their next long poll.
	waitFor(t, "the CA to see every proxy on the new bundle", 10*time.Second, func() bool {
		st, err := cli.CAStatus(ctx)
		return err == nil && len(st.Pending) == 0
	})
	if st, err = cli.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if st.Signer != newRoot {
		t.Fatalf("signer %s after activation, want %s", st.Signer, newRoot)
	}
	waitFor(t, "every proxy to renew from the new root", 10*time.Second, func() bool {
		for _, ag := range agents {
			if !signedBy(ag, newRoot) {
				return false
			}
		}
		return true
	})
	if st, err = cli.Rotate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if st.Phase != ca.PhaseStable || len(st.Authorities) != 1 {
		t.Fatalf("after the rotation: %+v", st)
	}
	waitFor(t, "every proxy to drop the old root", 10*time.Second, func() bool {
		for _, ag := range agents {
			if len(ag.TrustBundle().X509Authorities()) != 1 {
				return false
			}
		}
		return true
	})
	t.Logf("rotated: %d requests, %d failed", ld.ok.Load(), ld.failed.Load())
	if !renewals(3)() {
		t.Fatalf("serials seen: %v, want at least four per proxy", seen)
	}

	// The control plane goes away for longer than a renewal period.
	before := map[string]string{}
	for sa, ag := range agents {
		before[sa] = ag.Serial()
	}
	cp.stop()
	down := life/2 + life/20 + 500*time.Millisecond // past the latest half-life renewal
	okBefore := ld.ok.Load()
	time.Sleep(down) // the outage itself, not an assertion
	if ld.ok.Load() == okBefore {
		t.Fatal("no request was served while the control plane was away")
	}
	cp.start()
	waitFor(t, "every proxy to renew after the control plane's return", life, func() bool {
		for sa, ag := range agents {
			if ag.Serial() == before[sa] {
				return false
			}
		}
		return true
	})
	// Traffic over fresh handshakes with the renewed certificates.
	okAfter := ld.ok.Load()
	waitFor(t, "requests after the restart", 10*time.Second, func() bool { return ld.ok.Load() > okAfter+50 })
	ld.finish()

	t.Logf("%d requests, %d failed", ld.ok.Load(), ld.failed.Load())
	if n := ld.failed.Load(); n > 0 {
		t.Fatalf("%d requests failed:\n%s", n, strings.Join(ld.errs, "\n"))
	}
	final, err := cp.client(t).CAStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for sa, ag := range agents {
		c, err := ag.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		chain := []*x509.Certificate{c.Leaf}
		for _, der := range c.Certificate[1:] {
			ic, _ := x509.ParseCertificate(der)
			chain = append(chain, ic)
		}
		id, _, err := x509svid.Verify(chain, ag.TrustBundle())
		if err != nil || id.String() != "spiffe://wasmgate.local/ns/shop/sa/"+sa {
			t.Fatalf("%s: %v, %v", sa, id, err)
		}
		if !signedBy(ag, newRoot) {
			t.Fatalf("%s ends on a certificate of another root", sa)
		}
		var rec *ca.ProxyRecord
		for i := range final.Proxies {
			if final.Proxies[i].Proxy == sa {
				rec = &final.Proxies[i]
			}
		}
		if rec == nil || rec.Serial != ag.Serial() || rec.Authority != newRoot {
			t.Fatalf("status of %s = %+v, want serial %s from %s", sa, rec, ag.Serial(), newRoot)
		}
	}
}

// signedBy reports whether the agent's certificate chains to the root
// with the given authority ID in its current bundle.
func signedBy(ag *identity.Agent, rootID string) bool {
	c, err := ag.Certificate()
	if err != nil {
		return false
	}
	for _, r := range ag.TrustBundle().X509Authorities() {
		if ca.AuthorityID(r) == rootID && c.Leaf.CheckSignatureFrom(r) == nil {
			return true
		}
	}
	return false
}
