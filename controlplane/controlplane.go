// Package controlplane runs wasmgate's control plane: an etcd (embedded,
// or an existing cluster) and the admin API over it. It keeps no state of
// its own; everything is in etcd, so any number of control planes may
// serve one cluster.
//
// Proxies do not talk to the control plane: they watch etcd directly with
// package controlplane/watch.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/internal/embedded"
	"github.com/wasmgate/wasmgate/controlplane/secret"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

// Defaults of Options.
const (
	DefaultDataDir        = "wasmgate-data"
	DefaultEtcdClientAddr = "127.0.0.1:2379"
	DefaultEtcdPeerAddr   = "127.0.0.1:2380"
	DefaultAPIAddr        = "127.0.0.1:9900"
)

// Options configure a control plane. The zero value starts an embedded
// etcd in ./wasmgate-data on the default loopback ports and the API on
// 127.0.0.1:9900 with a generated admin token.
type Options struct {
	// DataDir holds the embedded etcd's data and a generated token. Empty
	// means DefaultDataDir.
	DataDir string
	// EtcdClientAddr and EtcdPeerAddr are the embedded etcd's loopback
	// addresses; empty means the defaults, a port 0 a free port.
	EtcdClientAddr string
	EtcdPeerAddr   string

	// EtcdEndpoints, when set, use an existing etcd cluster instead of an
	// embedded one, with EtcdTLS and EtcdUsername/EtcdPassword if set.
	EtcdEndpoints []string
	EtcdTLS       *tls.Config
	EtcdUsername  string
	EtcdPassword  string

	// Prefix is the key prefix; empty means /wasmgate.
	Prefix string

	// APIAddr is the admin API's host:port; empty means DefaultAPIAddr,
	// "off" no API (Start then only provides etcd).
	APIAddr string
	// APITLS, when set, serves the API over TLS.
	APITLS *tls.Config
	// Tokens are the API's bearer tokens. With none, an admin token is
	// generated and written to DataDir/admin.token (mode 0600).
	Tokens []api.Token
	// HistoryLimit is how many changes the history keeps; zero means 1000.
	HistoryLimit int
	// SecretKey encrypts the private keys of certificates before they are
	// stored. Nil refuses every change that leaves a certificate stored.
	SecretKey *secret.Key

	// Mesh turns the certificate authority on: proxies get workload
	// certificates from it, and the API is served over TLS with a
	// certificate it issues (unless APITLS is set). It needs SecretKey,
	// which keeps the CA's key sealed in etcd.
	Mesh bool
	// TrustDomain is the mesh's SPIFFE trust domain; empty means
	// ca.DefaultTrustDomain.
	TrustDomain string
	// CAAuthority is an operator's root or intermediate to sign with,
	// used when the CA is first created; nil makes a root.
	CAAuthority *ca.Authority
	// CertificateLifetime is the lifetime of workload certificates; zero
	// means ca.DefaultLifetime, and it may not be below ca.MinLifetime
	// unless AllowShortLifetimes is set (for tests).
	CertificateLifetime time.Duration
	AllowShortLifetimes bool
	// APIHosts are the names and addresses the API's certificate is for,
	// beside the API address's host, localhost and 127.0.0.1.
	APIHosts []string

	// Logger receives the control plane's log; nil discards it. The
	// embedded etcd logs at warning level and above through it.
	Logger *zap.Logger
}

// Server is a running control plane.
type Server struct {
	// Client reaches the control plane's etcd. It is closed by Close.
	Client *clientv3.Client
	// Store is the configuration store over Client.
	Store *store.Store
	// CA is the mesh's certificate authority, or nil when Options.Mesh
	// is off.
	CA *ca.CA
	// Hub sends each sidecar the endpoints of the services it calls and
	// its own policies; the API serves it at api.DiscoveryPath. Nil when
	// the API is off.
	Hub *discovery.Hub

	opts      Options
	etcd      *embedded.Etcd
	endpoints []string
	http      *http.Server
	listener  net.Listener
	apiTLS    bool
	cancel    context.CancelFunc
	hubStop   context.CancelFunc
	hubDone   chan struct{}
	endLong   context.CancelFunc
	token     string
	errc      chan error
	closeOnce sync.Once
}

// Start starts etcd (unless Options.EtcdEndpoints names one) and the API,
// and returns once both serve. ctx bounds the start only.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.APIAddr == "" {
		o.APIAddr = DefaultAPIAddr
	}
	s := &Server{opts: o, errc: make(chan error, 2)}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	if len(o.EtcdEndpoints) == 0 {
		if o.EtcdClientAddr == "" {
			o.EtcdClientAddr = DefaultEtcdClientAddr
		}
		if o.EtcdPeerAddr == "" {
			o.EtcdPeerAddr = DefaultEtcdPeerAddr
		}
		e, err := embedded.Start(embedded.Config{
			Dir: filepath.Join(o.DataDir, "etcd"), ClientAddr: o.EtcdClientAddr, PeerAddr: o.EtcdPeerAddr,
			Logger: o.Logger.Named("etcd").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		})
		if err != nil {
			return nil, err
		}
		s.etcd = e
		s.endpoints = e.Endpoints()
		go func() {
			if err, ok := <-e.Err(); ok && err != nil {
				s.errc <- fmt.Errorf("embedded etcd: %w", err)
			}
		}()
		o.Logger.Info("embedded etcd started", zap.Strings("endpoints", s.endpoints), zap.String("data_dir", o.DataDir))
	} else {
		s.endpoints = o.EtcdEndpoints
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints: s.endpoints, DialTimeout: 5 * time.Second, TLS: o.EtcdTLS,
		Username: o.EtcdUsername, Password: o.EtcdPassword, Logger: o.Logger.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
		Context: context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v: %w", s.endpoints, err)
	}
	s.Client = cli
	// Fail now, not at the first request, when etcd is unreachable.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cli.Get(sctx, "health", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, fmt.Errorf("reaching etcd %v: %w", s.endpoints, err)
	}
	sopts := []store.Option{store.WithLogger(o.Logger.Named("store"))}
	if o.HistoryLimit > 0 {
		sopts = append(sopts, store.WithHistoryLimit(o.HistoryLimit))
	}
	if o.SecretKey != nil {
		sopts = append(sopts, store.WithSecretKey(o.SecretKey))
	}
	s.Store = store.New(cli, o.Prefix, sopts...)
	if o.Mesh {
		if err := s.startCA(ctx); err != nil {
			return nil, err
		}
	}

	if o.APIAddr != "off" {
		tokens := o.Tokens
		if len(tokens) == 0 {
			tok, path, created, err := generateToken(o.DataDir)
			if err != nil {
				return nil, err
			}
			s.token = tok
			tokens = []api.Token{{Name: "admin", Role: api.RoleAdmin, Secret: tok}}
			if created {
				o.Logger.Warn("no API token configured; generated an admin token", zap.String("file", path))
			} else {
				o.Logger.Info("no API token configured; using the admin token generated earlier", zap.String("file", path))
			}
		}
		l, err := net.Listen("tcp", o.APIAddr)
		if err != nil {
			return nil, fmt.Errorf("admin API: %w", err)
		}
		switch {
		case o.APITLS != nil:
			conf := o.APITLS
			if s.CA != nil && conf.ClientAuth == tls.NoClientCert {
				// Renewals authenticate with the proxy's certificate.
				conf = conf.Clone()
				conf.ClientAuth = tls.RequestClientCert
			}
			l = tls.NewListener(l, conf)
			s.apiTLS = true
		case s.CA != nil:
			l = tls.NewListener(l, s.meshAPITLS(l.Addr()))
			s.apiTLS = true
		}
		s.listener = l
		h := api.NewHandler(s.Store, tokens, o.Logger.Named("api"))
		if s.CA != nil {
			h.ServeIdentity(s.CA)
		}
		s.Hub = discovery.NewHub(cli, o.Prefix, o.Logger.Named("discovery"))
		hctx, hstop := context.WithCancel(context.Background())
		s.hubStop, s.hubDone = hstop, make(chan struct{})
		go func() {
			defer close(s.hubDone)
			if err := s.Hub.Run(hctx); err != nil && hctx.Err() == nil {
				s.errc <- fmt.Errorf("discovery hub: %w", err)
			}
		}()
		h.ServeDiscovery(&discovery.Handler{Hub: s.Hub}, s.CA)
		// Long requests (discovery streams, bundle polls) end with Close.
		base, endLong := context.WithCancel(context.Background())
		s.endLong = endLong
		s.http = &http.Server{
			BaseContext:       func(net.Listener) context.Context { return base },
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			// Agents keep their connections alive between requests and
			// close them after 30 s idle; a client that does not is
			// closed after this.
			IdleTimeout: 2 * time.Minute,
			ErrorLog:    zap.NewStdLog(o.Logger.Named("api")),
		}
		go func() {
			if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.errc <- fmt.Errorf("admin API: %w", err)
			}
		}()
		o.Logger.Info("admin API serving", zap.String("url", s.APIURL()), zap.String("prefix", s.Store.Keys().Prefix()))
	}
	ok = true
	return s, nil
}

// generateToken reuses or creates DataDir/admin.token, and reports
// whether it created it.
func generateToken(dir string) (tok, path string, created bool, err error) {
	path = filepath.Join(dir, "admin.token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), path, false, nil
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", false, err
	}
	tok = hex.EncodeToString(raw[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, err
	}
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", "", false, fmt.Errorf("writing the generated token: %w", err)
	}
	return tok, path, true, nil
}

// EtcdEndpoints are the client URLs of the control plane's etcd, for
// proxies to watch.
func (s *Server) EtcdEndpoints() []string { return s.endpoints }

// APIURL is the admin API's base URL, or "" when it is off.
func (s *Server) APIURL() string {
	if s.listener == nil {
		return ""
	}
	scheme := "http"
	if s.apiTLS {
		scheme = "https"
	}
	return scheme + "://" + s.listener.Addr().String()
}

// GeneratedToken is the admin token generated because none was
// configured, or "".
func (s *Server) GeneratedToken() string { return s.token }

// Err reports a fatal error of the embedded etcd or the API server.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops the API, closes the client and stops the embedded etcd.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		if s.hubStop != nil {
			s.hubStop()
		}
		if s.endLong != nil {
			s.endLong()
		}
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.http.Shutdown(ctx)
			cancel()
		}
		if s.hubDone != nil {
			<-s.hubDone
		}
		if s.Client != nil {
			s.Client.Close()
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
	})
	return nil
}
