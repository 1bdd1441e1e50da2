// Package embedded runs a single-member etcd inside the process, on
// loopback, with its data in one directory.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config says where the embedded etcd keeps its data and listens.
type Config struct {
	// Dir holds the member's data. It is created if missing.
	Dir string
	// ClientAddr is the loopback host:port clients dial. Empty or port 0
	// picks a free port.
	ClientAddr string
	// PeerAddr is the peer host:port. Empty or port 0 picks a free port.
	PeerAddr string
	// Logger receives etcd's own log; nil discards it.
	Logger *zap.Logger
	// NoFsync trades durability for speed; only tests set it.
	NoFsync bool
	// StartTimeout bounds waiting for the member to become ready. Zero means 60s.
	StartTimeout time.Duration
	// AuthTokenTTL is how long an auth token lives once auth is enabled;
	// zero means etcd's default (5 minutes).
	AuthTokenTTL time.Duration
}

// Etcd is a running embedded member.
type Etcd struct {
	e         *embed.Etcd
	endpoints []string
	peer      string
	closeOnce sync.Once
}

// Start starts the member and waits until it serves.
//
// A port picked free (an empty address or port 0) must be known before
// the member starts, so it is found by listening and closing, and another
// process may take it before etcd binds it. Start then picks again, a few
// times, rather than fail.
func Start(c Config) (*Etcd, error) {
	picked := picksPort(c.ClientAddr) || picksPort(c.PeerAddr)
	for attempt := 1; ; attempt++ {
		e, err := start(c)
		if err == nil || !picked || attempt == 5 || !inUse(err) {
			return e, err
		}
	}
}

// picksPort reports whether addr leaves the port to be picked.
func picksPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return addr == "" || err == nil && port == "0"
}

// inUse reports whether err is a listener's "address already in use".
func inUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func start(c Config) (*Etcd, error) {
	if c.Dir == "" {
		return nil, fmt.Errorf("embedded etcd: a data directory is required")
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	clientAddr, err := resolve(c.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client address: %w", err)
	}
	peerAddr, err := resolve(c.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer address: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "wasmgate"
	cfg.Dir = filepath.Join(c.Dir, "member-data")
	cu := url.URL{Scheme: "http", Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.InitialClusterToken = "wasmgate"
	cfg.ClusterState = embed.ClusterStateFlagNew
	// A one-member cluster elects itself; short ticks make start-up quick.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	cfg.MaxTxnOps = 4096
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	cfg.EnableGRPCGateway = false
	cfg.UnsafeNoFsync = c.NoFsync
	if c.AuthTokenTTL > 0 {
		cfg.AuthTokenTTL = uint(max(1, c.AuthTokenTTL/time.Second))
	}
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return quietCore{c}
	})))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd: %w", err)
	}
	timeout := c.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd was not ready after %s", timeout)
	}
	eps := make([]string, 0, len(e.Clients))
	for _, l := range e.Clients {
		eps = append(eps, "http://"+l.Addr().String())
	}
	return &Etcd{e: e, endpoints: eps, peer: peerAddr}, nil
}

// Endpoints are the client URLs of the member.
func (e *Etcd) Endpoints() []string { return e.endpoints }

// PeerAddr is the peer host:port, to start the member again on it.
func (e *Etcd) PeerAddr() string { return e.peer }

// Err reports a fatal error of the running member.
func (e *Etcd) Err() <-chan error { return e.e.Err() }

// Close stops the member. It is safe to call more than once.
func (e *Etcd) Close() { e.closeOnce.Do(e.e.Close) }

// resolve turns an empty address or a port 0 into a free loopback port. A
// peer URL must be known before the member starts (it is part of the member
// identity), so the port is chosen here rather than by the listener.
func resolve(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// quietCore demotes to debug what a single embedded member logs as a
// warning or an error though nothing is wrong: a new member has no storage
// version to detect or update yet, and at shutdown its listeners report
// their own closing.
type quietCore struct{ zapcore.Core }

func (q quietCore) With(fields []zapcore.Field) zapcore.Core { return quietCore{q.Core.With(fields)} }

func (q quietCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if q.Enabled(e.Level) {
		return ce.AddCore(e, q)
	}
	return ce
}

func (q quietCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Level >= zapcore.WarnLevel && harmless(e.Message, fields) {
		if !q.Enabled(zapcore.DebugLevel) {
			return nil
		}
		e.Level = zapcore.DebugLevel
	}
	return q.Core.Write(e, fields)
}

func harmless(msg string, fields []zapcore.Field) bool {
	switch msg {
	case "failed to update storage version", "Failed to detect schema version":
		return true
	case "setting up serving from embedded etcd failed.", "stopping insecure grpc server due to error", "stopped insecure grpc server due to error":
		// At shutdown: each listener and server reports its closing.
		for _, f := range fields {
			if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType &&
				(errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "server closed") || strings.Contains(err.Error(), "Server closed")) {
				return true
			}
		}
	}
	return false
}
