package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// DiscoveryPath is where ServeDiscovery mounts the discovery stream.
const DiscoveryPath = "/v1/discovery"

// ServeDiscovery mounts d at GET /v1/discovery. A caller authenticates
// with a bearer token of the read role, and may then watch anything, or,
// when c is not nil, with its mesh certificate over mutual TLS: a sidecar
// so authenticated may ask only for the policies of its own identity (the
// namespace of its SPIFFE ID, and its service account as the service).
// With c, sidecars also register their own endpoints with their
// certificates (handleEndpoint). Call it before the handler serves.
func (h *Handler) ServeDiscovery(d *discovery.Handler, c *ca.CA) {
	inner := *d
	inner.Authorize = func(r *http.Request, in discovery.Interest) error {
		ns, sa, ok := certIdentity(r)
		if !ok {
			return nil // a bearer token of the read role
		}
		if in.Namespace != "" && (in.Namespace != ns || in.Service != sa) {
			return fmt.Errorf("the certificate is of %s/%s; a sidecar may watch only its own policies (namespace=%s&self=%s)", ns, sa, ns, sa)
		}
		return nil
	}
	inner.Identify = func(r *http.Request) string {
		ns, sa, ok := certIdentity(r)
		if !ok || c == nil {
			return ""
		}
		id, err := c.ID(ns, sa)
		if err != nil {
			return ""
		}
		return id.String()
	}
	h.workloads = c
	h.handle("GET "+MeshStatusPath, RoleRead, func(w http.ResponseWriter, r *http.Request, _ Token) error {
		rev, watches := d.Hub.Status()
		st := MeshStatus{PolicyRevision: rev, Sidecars: watches, Synced: true}
		for _, ws := range watches {
			st.Synced = st.Synced && ws.Synced
		}
		write(w, r, http.StatusOK, st)
		return nil
	})
	serve := func(w http.ResponseWriter, r *http.Request) {
		if h.presentsWorkloadCert(r) {
			ns, sa, ok := h.workload(w, r)
			if !ok {
				return
			}
			inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), certIdentityKey{}, [2]string{ns, sa})))
			return
		}
		tok, ok := authenticate(h.tokens, r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasmgate"`)
			h.writeError(w, r, http.StatusUnauthorized, ErrorBody{Code: "unauthorized",
				Message: "a valid bearer token or a mesh client certificate is required"})
			return
		}
		if tok.Role < RoleRead {
			h.writeError(w, r, http.StatusForbidden, ErrorBody{Code: "forbidden",
				Message: fmt.Sprintf("token %q has the %s role; this request needs %s", tok.Name, tok.Role, RoleRead)})
			return
		}
		inner.ServeHTTP(w, r)
	}
	// GET watches; POST reports what became of a watch's updates.
	h.mux.HandleFunc("GET "+DiscoveryPath, serve)
	h.mux.HandleFunc("POST "+DiscoveryPath, serve)
}

// presentsWorkloadCert reports whether r authenticates with a mesh client
// certificate rather than a bearer token.
func (h *Handler) presentsWorkloadCert(r *http.Request) bool {
	return r.Header.Get("Authorization") == "" && h.workloads != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0
}

// workload verifies r's mesh client certificate and returns the namespace
// and service account of its SPIFFE ID; it answers the error itself when
// it returns false.
func (h *Handler) workload(w http.ResponseWriter, r *http.Request) (namespace, serviceAccount string, ok bool) {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	id, err := h.workloads.VerifyPeer(ctx, r.TLS.PeerCertificates)
	cancel()
	if err != nil {
		h.writeError(w, r, http.StatusUnauthorized, ErrorBody{Code: "unauthorized", Message: "the client certificate: " + err.Error()})
		return "", "", false
	}
	_, ns, sa, ok := policy.ParseSPIFFE(id.String())
	if !ok {
		h.writeError(w, r, http.StatusForbidden, ErrorBody{Code: "forbidden", Message: fmt.Sprintf("%s is not a workload identity", id)})
		return "", "", false
	}
	return ns, sa, true
}

// handleEndpoint serves the registration of an endpoint: with a bearer
// token of the register role, of any endpoint; with a mesh client
// certificate, of the caller's own only. A workload of service account SA
// in namespace NS registers as the service SA.NS (the mesh names a
// service by its identity), under ids that begin "SA:", from which its
// callers derive the identity to expect. So a sidecar needs no
// credentials of etcd, and cannot put itself in another service's place.
func (h *Handler) handleEndpoint(pattern string, fn handlerFunc) {
	h.handleTokenOrWorkload(pattern, RoleRegister, fn, func(r *http.Request, ns, sa string) error {
		if cluster, id := r.PathValue("cluster"), r.PathValue("id"); cluster != sa+"."+ns || !strings.HasPrefix(id, sa+":") {
			return fmt.Errorf("the certificate is of %s/%s: it registers only endpoints of the service %s.%s, with ids %s:ADDRESS, not %s/%s",
				ns, sa, sa, ns, sa, cluster, id)
		}
		return nil
	})
}

// handleTokenOrWorkload serves pattern to a caller with a bearer token of
// role, or with a mesh client certificate whose namespace ns and service
// account sa allowed admits (a non-nil error is the 403's message); fn
// runs with a token of role named by the certificate's SPIFFE ID.
func (h *Handler) handleTokenOrWorkload(pattern string, role Role, fn handlerFunc, allowed func(r *http.Request, ns, sa string) error) {
	byToken := h.withToken(role, fn)
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if !h.presentsWorkloadCert(r) {
			byToken(w, r)
			return
		}
		ns, sa, ok := h.workload(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		r = r.WithContext(ctx)
		if err := allowed(r, ns, sa); err != nil {
			var he *Error
			if errors.As(err, &he) {
				h.fail(w, r, err)
				return
			}
			h.writeError(w, r, http.StatusForbidden, ErrorBody{Code: "forbidden", Message: err.Error()})
			return
		}
		tok := Token{Name: policy.SPIFFEID(h.workloads.TrustDomain().Name(), ns, sa), Role: role}
		if err := fn(w, r, tok); err != nil {
			h.fail(w, r, err)
		}
	})
}

type certIdentityKey struct{}

func certIdentity(r *http.Request) (namespace, serviceAccount string, ok bool) {
	v, ok := r.Context().Value(certIdentityKey{}).([2]string)
	return v[0], v[1], ok
}

// handleBlob serves a module: with a bearer token of the read role, any;
// with a mesh client certificate, one that a Wasm plugin which runs in the
// caller's sidecar names (one of its service, of its namespace, or of the
// whole mesh), so that a sidecar fetches the modules of its filters and
// nothing else.
func (h *Handler) handleBlob(pattern string, fn handlerFunc) {
	h.handleTokenOrWorkload(pattern, RoleRead, fn, func(r *http.Request, ns, sa string) error {
		snap, err := h.st.Snapshot(r.Context())
		if err != nil {
			return &Error{http.StatusServiceUnavailable, ErrorBody{Code: "unavailable", Message: err.Error()}}
		}
		sha := r.PathValue("sha256")
		for ref, v := range snap.Resources {
			if p, ok := v.(*policy.WasmPlugin); ok && ref.Kind == resource.WasmPlugins && p.SHA256 == sha &&
				(p.Namespace == policy.RootNamespace || p.Namespace == ns && (p.Service == "" || p.Service == sa)) {
				return nil
			}
		}
		return fmt.Errorf("the certificate is of %s/%s: it reads only the modules of the Wasm plugins that run in its sidecar (of service %s, of namespace %s, or of the mesh)", ns, sa, sa, ns)
	})
}
