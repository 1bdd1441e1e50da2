package native

import (
	"net/netip"
	"strconv"
	"unsafe"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/proxy/filter"
)

// PeerIdentityHeader carries, to the app behind a sidecar, the SPIFFE ID
// of the peer that the mutual TLS handshake verified. MeshPolicy removes
// any value a client sent and sets its own, so the app may trust it.
const PeerIdentityHeader = "X-Wasmgate-Peer-Identity"

// MeshPolicy is the inbound authorization of a sidecar: it decides each
// request with its service's policy.Guard, taking the peer's identity
// from the TLS handshake only, and answers 403 with a short reason on a
// denial. It is the filter that `native: mesh_policy` places; it keeps
// no state per request and is safe for concurrent use.
type MeshPolicy struct {
	headersOnly
	guard *policy.Guard
	log   *zap.Logger
	// dest names the service in decision records: "service.namespace".
	dest string
}

var _ filter.HeadersOnly = (*MeshPolicy)(nil)

// NewMeshPolicy returns the filter over g. Every denial and every audited
// request is logged on logger (nil: none) with the source identity, the
// destination, the deciding policy and rule, and the request id.
func NewMeshPolicy(g *policy.Guard, logger *zap.Logger) *MeshPolicy {
	if logger == nil {
		logger = zap.NewNop()
	}
	ns, svc := g.Service()
	return &MeshPolicy{guard: g, log: logger, dest: svc + "." + ns}
}

func (m *MeshPolicy) Name() string { return config.NativeMeshPolicy }

// NewStream returns the filter itself: it keeps no state per request.
func (m *MeshPolicy) NewStream(*filter.Exchange) (filter.Stream, error) { return m, nil }

// headerView hands the evaluator the request's headers without copies.
type headerView struct{ h *fasthttp.RequestHeader }

func (v headerView) Get(name string) (string, bool) {
	b := v.h.Peek(name)
	if b == nil {
		return "", false
	}
	return unsafeString(b), true
}

var denyHeaders = [][2]string{{"Content-Type", "text/plain; charset=utf-8"}}

// carrier is where the request authentication looks for a token.
type carrier struct {
	h *fasthttp.RequestHeader
	u *fasthttp.URI
}

func (c carrier) Get(name string) (string, bool) { return headerView{h: c.h}.Get(name) }

func (c carrier) Param(name string) (string, bool) {
	b := c.u.QueryArgs().Peek(name)
	if b == nil {
		return "", false
	}
	return unsafeString(b), true
}

// Cookie reads the Cookie header as it is: fasthttp's parsed cookies
// would have the header written again from them on its way to the app.
func (c carrier) Cookie(name string) (string, bool) {
	return policy.CookieValue(unsafeString(c.h.Peek("Cookie")), name)
}

// unauthenticated answers a request whose token the request
// authentication refused: 401 with the reason, and a challenge as
// Envoy's JWT filter sends.
func (m *MeshPolicy) unauthenticated(x *filter.Exchange, principal string, err error) filter.Status {
	req := &x.Ctx.Request
	m.log.Info("mesh policy: unauthenticated", zap.String("source", principal), zap.Stringer("source_ip", addrStringer{x.Conn.Remote.Addr()}),
		zap.ByteString("host", req.Host()), zap.ByteString("method", req.Header.Method()), zap.ByteString("path", req.RequestURI()),
		zap.String("reason", err.Error()), zap.ByteString("request_id", x.RequestID))
	if x.Decisions != nil {
		x.Decide(&filter.Decision{Source: "mesh", Allowed: false, Destination: m.dest, Reason: "request authentication: " + err.Error()})
	}
	scheme := "http"
	if x.Conn.TLS != nil {
		scheme = "https"
	}
	hdrs := [][2]string{denyHeaders[0], {"WWW-Authenticate", `Bearer realm="` + scheme + "://" + string(req.Host()) + string(req.URI().Path()) + `", error="invalid_token"`}}
	x.SendLocalResponse(fasthttp.StatusUnauthorized, []byte(err.Error()+"\n"), hdrs, "jwt_authn_access_denied")
	return filter.Stop
}

// OnRequestHeaders decides the request. The peer identity header a client
// may have sent is removed first, whatever the decision.
func (m *MeshPolicy) OnRequestHeaders(x *filter.Exchange, _ bool) filter.Status {
	req := &x.Ctx.Request
	req.Header.Del(PeerIdentityHeader)
	principal := ""
	if t := x.Conn.TLS; t != nil && t.PeerVerified && len(t.PeerURISANs) > 0 {
		principal = t.PeerURISANs[0]
	}
	var authn *policy.Authenticated
	if a := m.guard.Authenticator(); a != nil {
		// Headers claims are copied to are the verified token's only.
		for _, h := range a.OutputHeaders() {
			req.Header.Del(h)
		}
		var err error
		switch authn, err = a.Authenticate(carrier{&req.Header, req.URI()}); {
		case err == policy.ErrNoToken:
		case err != nil:
			return m.unauthenticated(x, principal, err)
		}
	}
	r := policy.Request{
		Principal: principal,
		SourceIP:  x.Conn.Remote.Addr().Unmap(),
		Host:      unsafeString(req.Host()),
		Method:    unsafeString(req.Header.Method()),
		Path:      unsafeString(req.RequestURI()),
		Port:      int(x.Conn.Local.Port()),
		Headers:   headerView{&req.Header},
	}
	requestPrincipal := ""
	if authn != nil {
		r.Auth, requestPrincipal = &authn.Auth, authn.Auth.Principal
	}
	d := m.guard.Decide(&r)
	m.record(x, &d)
	if !d.Allowed {
		m.log.Info("mesh policy: deny", zap.String("source", principal), zap.String("request_principal", requestPrincipal), zap.Stringer("source_ip", addrStringer{x.Conn.Remote.Addr()}),
			zap.String("host", r.Host), zap.String("method", r.Method), zap.String("path", r.Path),
			zap.String("policy", d.Policy), zap.Int("rule", d.Rule), zap.String("reason", d.Reason.String()), zap.ByteString("request_id", x.RequestID))
		x.SendLocalResponse(fasthttp.StatusForbidden, []byte("RBAC: access denied: "+d.Reason.String()+"\n"), denyHeaders, "mesh_policy_denied")
		return filter.Stop
	}
	if rd, name := m.guard.AllowRate(principal); !rd.Allowed {
		// Refusals come in floods: the decision record and the access
		// record (429, flag RL) tell of each, the log only at debug.
		m.log.Debug("mesh policy: rate limited", zap.String("source", principal), zap.String("policy", name), zap.ByteString("request_id", x.RequestID))
		if x.Decisions != nil {
			x.Decide(&filter.Decision{Source: "mesh", Allowed: false, Policy: name, Destination: m.dest, Reason: "rate limited"})
		}
		refuse(x, rd)
		return filter.Stop
	}
	if d.AuditPolicy != "" {
		m.log.Info("mesh policy: audit", zap.String("source", principal), zap.String("request_principal", requestPrincipal), zap.String("host", r.Host), zap.String("method", r.Method),
			zap.String("path", r.Path), zap.String("policy", d.AuditPolicy), zap.Int("rule", d.AuditRule), zap.ByteString("request_id", x.RequestID))
	}
	if principal != "" {
		req.Header.Set(PeerIdentityHeader, principal)
	}
	if authn != nil {
		if authn.Header != "" {
			req.Header.Del(authn.Header)
		}
		for _, h := range authn.Claims {
			req.Header.Set(h[0], h[1])
		}
	}
	return filter.Continue
}

// record makes the decision a decision record (when the proxy records
// them): the deciding policy and rule, and the audit rule when one matched.
func (m *MeshPolicy) record(x *filter.Exchange, d *policy.Decision) {
	if x.Decisions == nil {
		return
	}
	rec := filter.Decision{Source: "mesh", Allowed: d.Allowed, Policy: d.Policy, Destination: m.dest, Reason: d.Reason.String()}
	if d.Rule >= 0 && d.Policy != "" {
		rec.Rule = strconv.Itoa(d.Rule)
	}
	x.Decide(&rec)
	if d.AuditPolicy != "" {
		rec.Policy, rec.Rule, rec.Reason = d.AuditPolicy, "", "audit"
		if d.AuditRule >= 0 {
			rec.Rule = strconv.Itoa(d.AuditRule)
		}
		x.Decide(&rec)
	}
}

type addrStringer struct{ a netip.Addr }

func (s addrStringer) String() string { return s.a.String() }

// unsafeString views b as a string for the length of one callback; the
// evaluator and the logger keep nothing of it.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
