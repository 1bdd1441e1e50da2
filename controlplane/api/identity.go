package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/ca"
)

// The mesh identity endpoints. Signing authenticates with a join token or
// with the proxy's current certificate over mTLS, not with a bearer
// token; the trust bundle is public; the rest takes bearer tokens like
// every other endpoint.
//
//	POST   /v1/identity/sign          CSR in, certificate and bundle out
//	GET    /v1/identity/bundle        ?after=REV&wait=30s long-polls a newer bundle
//	GET    /v1/identity/status        the CA, the rotation and every proxy's certificate (read)
//	POST   /v1/identity/rotate        one step of a root rotation (admin)
//	GET    /v1/identity/tokens        join tokens, without their secrets (read)
//	POST   /v1/identity/tokens        a new join token (admin)
//	DELETE /v1/identity/tokens/{id}   revoke a join token (admin)

// SignRequest is the body of POST /v1/identity/sign.
type SignRequest struct {
	// CSR is the PEM certificate signing request.
	CSR string `json:"csr" yaml:"csr"`
	// JoinToken authenticates a proxy's first request; a renewal sends
	// its current certificate over mTLS instead.
	JoinToken string `json:"join_token,omitempty" yaml:"join_token,omitempty"`
	// Proxy names the proxy in the CA's status.
	Proxy string `json:"proxy,omitempty" yaml:"proxy,omitempty"`
	// Lifetime asks for a lifetime shorter than the CA's.
	Lifetime config.Duration `json:"lifetime,omitempty" yaml:"lifetime,omitempty"`
}

// TokenRequest is the body of POST /v1/identity/tokens.
type TokenRequest struct {
	Namespace      string          `json:"namespace" yaml:"namespace"`
	ServiceAccount string          `json:"service_account" yaml:"service_account"`
	TTL            config.Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
	Uses           int             `json:"uses,omitempty" yaml:"uses,omitempty"`
}

// TokenCreated is the answer to POST /v1/identity/tokens. Token is shown
// this once; the control plane keeps only its hash.
type TokenCreated struct {
	Token string       `json:"token" yaml:"token"`
	Info  ca.TokenInfo `json:"info" yaml:"info"`
}

// TokenList is the answer to GET /v1/identity/tokens.
type TokenList struct {
	Items []ca.TokenInfo `json:"items" yaml:"items"`
}

// RotateRequest is the body of POST /v1/identity/rotate.
type RotateRequest struct {
	// Force takes the step even though proxies have not caught up.
	Force bool `json:"force,omitempty" yaml:"force,omitempty"`
}

// MaxBundleWait bounds the long poll of GET /v1/identity/bundle.
const MaxBundleWait = 60 * time.Second

// ServeIdentity adds the mesh identity endpoints over c. Call it before
// the handler serves.
func (h *Handler) ServeIdentity(c *ca.CA) {
	h.mux.HandleFunc("POST /v1/identity/sign", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		if err := h.sign(c, w, r.WithContext(ctx)); err != nil {
			h.identityFail(w, r, err)
		}
	})
	h.mux.HandleFunc("GET /v1/identity/bundle", func(w http.ResponseWriter, r *http.Request) {
		if err := h.bundle(c, w, r); err != nil {
			h.identityFail(w, r, err)
		}
	})
	h.handle("GET /v1/identity/status", RoleRead, func(w http.ResponseWriter, r *http.Request, _ Token) error {
		st, err := c.Status(r.Context())
		if err != nil {
			return err
		}
		write(w, r, http.StatusOK, st)
		return nil
	})
	h.handle("POST /v1/identity/rotate", RoleAdmin, func(w http.ResponseWriter, r *http.Request, tok Token) error {
		var req RotateRequest
		if body, _ := readBody(r, MaxDocumentBytes); body != nil {
			if err := Decode(body, &req); err != nil {
				return err
			}
		}
		st, err := c.Rotate(r.Context(), req.Force, nil)
		if err != nil {
			return identityError(err)
		}
		h.logger.Info("root rotation step", zap.String("phase", st.Phase), zap.String("by", tok.Name), zap.Bool("force", req.Force))
		write(w, r, http.StatusOK, st)
		return nil
	})
	h.handle("GET /v1/identity/tokens", RoleRead, func(w http.ResponseWriter, r *http.Request, _ Token) error {
		list, err := c.Tokens(r.Context())
		if err != nil {
			return err
		}
		write(w, r, http.StatusOK, TokenList{Items: list})
		return nil
	})
	h.handle("POST /v1/identity/tokens", RoleAdmin, func(w http.ResponseWriter, r *http.Request, tok Token) error {
		body, err := readBody(r, MaxDocumentBytes)
		if err != nil {
			return err
		}
		var req TokenRequest
		if err := Decode(body, &req); err != nil {
			return err
		}
		text, info, err := c.CreateToken(r.Context(), req.Namespace, req.ServiceAccount, req.TTL.D(), req.Uses, tok.Name)
		if err != nil {
			return identityError(err)
		}
		write(w, r, http.StatusCreated, TokenCreated{Token: text, Info: info})
		return nil
	})
	h.handle("DELETE /v1/identity/tokens/{id}", RoleAdmin, func(w http.ResponseWriter, r *http.Request, _ Token) error {
		if err := c.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
			if errors.Is(err, ca.ErrNoToken) {
				return &Error{http.StatusNotFound, ErrorBody{Code: "not_found", Message: "no join token " + r.PathValue("id")}}
			}
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (h *Handler) sign(c *ca.CA, w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, 64<<10)
	if err != nil {
		return err
	}
	var req SignRequest
	if err := Decode(body, &req); err != nil {
		return err
	}
	sr := ca.SignRequest{CSR: []byte(req.CSR), JoinToken: req.JoinToken, Proxy: req.Proxy, Lifetime: req.Lifetime.D()}
	if req.JoinToken == "" && r.TLS != nil {
		sr.Peer = r.TLS.PeerCertificates
	}
	iss, err := c.Sign(r.Context(), sr)
	if err != nil {
		return identityError(err)
	}
	write(w, r, http.StatusOK, iss)
	return nil
}

// bundle answers the trust bundle, waiting up to ?wait= for one newer
// than ?after=. A proxy that asks with its certificate and ?proxy= is
// recorded as holding the bundle it asked after.
func (h *Handler) bundle(c *ca.CA, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var after int64
	if s := q.Get("after"); s != "" {
		var err error
		if after, err = strconv.ParseInt(s, 10, 64); err != nil {
			return badRequest("after: %q is not a revision", s)
		}
	}
	wait := time.Duration(0)
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return badRequest("wait: %q is not a duration", s)
		}
		wait = min(d, MaxBundleWait)
	}
	if name := q.Get("proxy"); name != "" && after > 0 && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		if id, err := c.VerifyPeer(ctx, r.TLS.PeerCertificates); err == nil {
			if err := c.Acknowledge(ctx, name, id, after); err != nil {
				h.logger.Debug("recording a proxy's bundle", zap.String("proxy", name), zap.Error(err))
			}
		}
		cancel()
	}
	var b ca.Bundle
	var err error
	if wait == 0 {
		b, err = c.Bundle(r.Context())
	} else {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		b, err = c.WaitBundle(ctx, after)
		cancel()
	}
	if err != nil {
		return err
	}
	write(w, r, http.StatusOK, b)
	return nil
}

// identityError turns the CA's refusals into API errors.
func identityError(err error) error {
	var re *ca.RefusedError
	var pe *ca.PendingError
	switch {
	case errors.As(err, &re):
		return &Error{http.StatusForbidden, ErrorBody{Code: "refused", Message: "nothing was issued: " + re.Error(),
			Errors: []FieldError{{Path: re.Field, Message: re.Reason}}}}
	case errors.As(err, &pe):
		return &Error{http.StatusConflict, ErrorBody{Code: "pending", Message: "nothing was changed: " + pe.Error()}}
	case err != nil && !unavailable(err):
		var he *Error
		if errors.As(err, &he) {
			return err
		}
		return &Error{http.StatusUnprocessableEntity, ErrorBody{Code: "invalid", Message: err.Error()}}
	}
	return err
}

func (h *Handler) identityFail(w http.ResponseWriter, r *http.Request, err error) {
	h.fail(w, r, identityError(err))
}

// Sign asks the control plane for a certificate. Over mTLS with the
// proxy's current certificate, JoinToken may be empty.
func (c *Client) Sign(ctx context.Context, req SignRequest) (*ca.Issued, error) {
	b, _ := json.Marshal(req)
	var out ca.Issued
	if err := c.Do(ctx, http.MethodPost, "/v1/identity/sign", b, http.Header{"Content-Type": {"application/json"}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Bundle returns the trust bundle, waiting up to wait for a revision above
// after. proxy, when set, records that the proxy holds revision after.
func (c *Client) Bundle(ctx context.Context, after int64, wait time.Duration, proxy string) (ca.Bundle, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	if proxy != "" {
		q.Set("proxy", proxy)
	}
	var out ca.Bundle
	err := c.Do(ctx, http.MethodGet, "/v1/identity/bundle?"+q.Encode(), nil, nil, &out)
	return out, err
}

// CAStatus returns the CA's status.
func (c *Client) CAStatus(ctx context.Context) (ca.Status, error) {
	var out ca.Status
	err := c.Do(ctx, http.MethodGet, "/v1/identity/status", nil, nil, &out)
	return out, err
}

// Rotate takes one step of a root rotation.
func (c *Client) Rotate(ctx context.Context, force bool) (ca.Status, error) {
	b, _ := json.Marshal(RotateRequest{Force: force})
	var out ca.Status
	err := c.Do(ctx, http.MethodPost, "/v1/identity/rotate", b, http.Header{"Content-Type": {"application/json"}}, &out)
	return out, err
}

// CreateToken makes a join token.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenCreated, error) {
	b, _ := json.Marshal(req)
	var out TokenCreated
	err := c.Do(ctx, http.MethodPost, "/v1/identity/tokens", b, http.Header{"Content-Type": {"application/json"}}, &out)
	return out, err
}

// Tokens lists the join tokens.
func (c *Client) Tokens(ctx context.Context) ([]ca.TokenInfo, error) {
	var out TokenList
	err := c.Do(ctx, http.MethodGet, "/v1/identity/tokens", nil, nil, &out)
	return out.Items, err
}

// RevokeToken revokes a join token by its ID or text.
func (c *Client) RevokeToken(ctx context.Context, idOrToken string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/identity/tokens/"+url.PathEscape(ca.TokenID(idOrToken)), nil, nil, nil)
}
