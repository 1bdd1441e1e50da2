package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// DiscoveryPath is where ServeDiscovery mounts the discovery stream.
const DiscoveryPath = "/v1/discovery"

// ServeDiscovery mounts d at GET /v1/discovery. A caller authenticates
// with a bearer token of the read role, and may then watch anything, or,
// when c is not nil, with its mesh certificate over mutual TLS: a sidecar
// so authenticated may ask only for the policies of its own identity (the
// namespace of its SPIFFE ID, and its service account as the service).
// Call it before the handler serves.
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
	h.mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" && c != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
			id, err := c.VerifyPeer(ctx, r.TLS.PeerCertificates)
			cancel()
			if err != nil {
				h.writeError(w, r, http.StatusUnauthorized, ErrorBody{Code: "unauthorized", Message: "the client certificate: " + err.Error()})
				return
			}
			_, ns, sa, ok := policy.ParseSPIFFE(id.String())
			if !ok {
				h.writeError(w, r, http.StatusForbidden, ErrorBody{Code: "forbidden", Message: fmt.Sprintf("%s is not a workload identity", id)})
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
	})
}

type certIdentityKey struct{}

func certIdentity(r *http.Request) (namespace, serviceAccount string, ok bool) {
	v, ok := r.Context().Value(certIdentityKey{}).([2]string)
	return v[0], v[1], ok
}
