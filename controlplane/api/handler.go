package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/config/redact"
	"github.com/wasmgate/wasmgate/controlplane/ca"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// MaxDocumentBytes bounds a request body other than a blob.
const MaxDocumentBytes = 8 << 20

// Handler serves the admin API over a Store. Create it with NewHandler.
type Handler struct {
	st      *store.Store
	tokens  []Token
	logger  *zap.Logger
	mux     *http.ServeMux
	timeout time.Duration
	// workloads verifies mesh client certificates, once ServeDiscovery
	// set it: sidecars then register their own endpoints with them.
	workloads *ca.CA
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the API over st. Only requests with one of tokens
// are served; logger may be nil.
func NewHandler(st *store.Store, tokens []Token, logger *zap.Logger) *Handler {
	if logger == nil {
		logger = zap.NewNop()
	}
	h := &Handler{st: st, tokens: tokens, logger: logger, mux: http.NewServeMux(), timeout: 30 * time.Second}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	h.handle("GET /v1/config", RoleRead, h.getConfig)
	h.handle("POST /v1/apply", RoleAdmin, h.apply)
	h.handle("POST /v1/validate", RoleRead, h.validate)
	for _, k := range resource.Kinds {
		h.handle("GET /v1/"+string(k), RoleRead, h.list(k))
		h.handle("GET /v1/"+string(k)+"/{name}", RoleRead, h.get(k))
		h.handle("PUT /v1/"+string(k)+"/{name}", RoleAdmin, h.put(k))
		h.handle("DELETE /v1/"+string(k)+"/{name}", RoleAdmin, h.delete(k))
	}
	h.handle("GET /v1/history", RoleRead, h.history)
	h.handle("GET /v1/history/{revision}", RoleRead, h.historyEntry)
	h.handle("POST /v1/rollback", RoleAdmin, h.rollback)
	h.handle("GET /v1/status", RoleRead, h.status)
	h.handle("PUT /v1/blobs", RoleAdmin, h.putBlob)
	h.handle("GET /v1/blobs", RoleRead, h.listBlobs)
	h.handleBlob("GET /v1/blobs/{sha256}", h.getBlob)
	h.handle("GET /v1/endpoints", RoleRead, h.listEndpoints)
	h.handleEndpoint("PUT /v1/endpoints/{cluster}/{id}", h.registerEndpoint)
	h.handleEndpoint("DELETE /v1/endpoints/{cluster}/{id}", h.deregisterEndpoint)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type handlerFunc func(w http.ResponseWriter, r *http.Request, tok Token) error

func (h *Handler) handle(pattern string, role Role, fn handlerFunc) {
	h.mux.HandleFunc(pattern, h.withToken(role, fn))
}

// withToken serves fn to a caller whose bearer token has at least role.
func (h *Handler) withToken(role Role, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := authenticate(h.tokens, r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wasmgate"`)
			h.writeError(w, r, http.StatusUnauthorized, ErrorBody{Code: "unauthorized", Message: "a valid bearer token is required (Authorization: Bearer TOKEN)"})
			return
		}
		if tok.Role < role {
			h.writeError(w, r, http.StatusForbidden, ErrorBody{Code: "forbidden",
				Message: fmt.Sprintf("token %q has the %s role; this request needs %s", tok.Name, tok.Role, role)})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		if err := fn(w, r.WithContext(ctx), tok); err != nil {
			h.fail(w, r, err)
		}
	}
}

func badRequest(format string, args ...any) error {
	return &Error{http.StatusBadRequest, ErrorBody{Code: "bad_request", Message: fmt.Sprintf(format, args...)}}
}

// docErrors carries the submitted document and the index of each
// resource in it, to name fields as the writer wrote them, with the
// document's name and line.
type docErrors struct {
	err   error
	doc   *config.Document
	index map[resource.Ref]int
}

func (e *docErrors) Error() string { return e.err.Error() }
func (e *docErrors) Unwrap() error { return e.err }

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		he *Error
		ve *store.ValidationError
		ce *store.ConflictError
		re *store.ReferencedError
		de *docErrors
	)
	if !errors.As(err, &de) {
		de = &docErrors{}
	}
	switch {
	case errors.As(err, &he):
		h.writeError(w, r, he.Status, he.Body)
	case errors.As(err, &ve):
		body := ErrorBody{Code: "invalid", Message: "the resulting configuration is invalid; nothing was changed",
			Errors: documentErrors(de.doc, nil, de.index, ve.Errors)}
		h.writeError(w, r, http.StatusUnprocessableEntity, body)
	case errors.As(err, &ce):
		h.writeError(w, r, http.StatusConflict, ErrorBody{Code: "conflict",
			Message: "the change was made from a stale revision; read again and retry; nothing was changed", Conflicts: ce.Conflicts})
	case errors.As(err, &re):
		h.writeError(w, r, http.StatusConflict, ErrorBody{Code: "referenced",
			Message: "a resource to delete is still referenced; remove the references first; nothing was changed", Referenced: re.Refs})
	case errors.Is(err, store.ErrNotFound):
		h.writeError(w, r, http.StatusNotFound, ErrorBody{Code: "not_found", Message: err.Error()})
	case unavailable(err):
		h.logger.Warn("etcd unavailable", zap.String("path", r.URL.Path), zap.Error(err))
		h.writeError(w, r, http.StatusServiceUnavailable, ErrorBody{Code: "unavailable", Message: "etcd is unavailable: " + err.Error()})
	default:
		h.logger.Error("request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		h.writeError(w, r, http.StatusInternalServerError, ErrorBody{Code: "internal", Message: err.Error()})
	}
}

func unavailable(err error) bool {
	return store.Transient(err) || errors.Is(err, context.Canceled)
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, status int, body ErrorBody) {
	write(w, r, status, body)
}

// wantsYAML reports whether the client asked for YAML.
func wantsYAML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if strings.Contains(mt, "yaml") {
			return true
		}
		if strings.Contains(mt, "json") {
			return false
		}
	}
	return false
}

// write answers with v as JSON, or as YAML when asked. YAML is made from
// the JSON form, so both name fields alike and keep their order.
func write(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if wantsYAML(r) {
		y, err := JSONToYAML(b)
		if err == nil {
			w.Header().Set("Content-Type", "application/yaml")
			w.WriteHeader(status)
			w.Write(y)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// JSONToYAML re-encodes a JSON document as YAML, keeping key order.
func JSONToYAML(b []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return nil, err
	}
	clearStyle(&n)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// clearStyle turns JSON's flow style into YAML's block style.
func clearStyle(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Style == yaml.DoubleQuotedStyle {
		n.Style = 0
	}
	for _, c := range n.Content {
		clearStyle(c)
	}
}

func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := readDocument(r, limit)
	if err == nil && len(bytes.TrimSpace(b)) == 0 {
		return nil, badRequest("the request body is empty")
	}
	return b, err
}

// readDocument reads a configuration document, which the decoder, not
// this, refuses when it is empty: with the words `wasmgate validate` uses.
func readDocument(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("reading the request body: %v", err)
	}
	if int64(len(b)) > limit {
		return nil, &Error{http.StatusRequestEntityTooLarge, ErrorBody{Code: "too_large", Message: fmt.Sprintf("the request body is larger than %d bytes", limit)}}
	}
	return b, nil
}

// DocumentHeader names the document of a request body in its errors: the
// file a client read it from. Errors about the document then read as
// `wasmgate validate` prints them for that file.
const DocumentHeader = "X-Wasmgate-Document"

// Decode decodes a JSON or YAML document strictly into v, a pointer to a
// struct: an unknown field is an error. It is what the API does with
// request bodies, and it decodes as config.DecodeValue does, with its
// errors.
func Decode(data []byte, v any) error { return decode(data, "", v) }

func decode(data []byte, name string, v any) error {
	err := config.DecodeValue(data, name, v)
	if err == nil {
		return nil
	}
	var list config.Errors
	if !errors.As(err, &list) {
		list = config.Errors{{File: name, Msg: err.Error()}}
	}
	return invalidDocument(list, nil)
}

// invalidDocument is the answer to a document with decode errors, and
// the validation errors of what decoded.
func invalidDocument(list config.Errors, more []FieldError) error {
	body := ErrorBody{Code: "invalid", Message: "the document does not decode; nothing was changed", Errors: apiErrors(list)}
	body.Errors = append(body.Errors, more...)
	return &Error{http.StatusUnprocessableEntity, body}
}

func apiErrors(list config.Errors) []FieldError {
	out := make([]FieldError, 0, len(list))
	for _, fe := range list {
		out = append(out, FieldError{File: fe.File, Line: fe.Line, DocumentPath: fe.Path, Message: fe.Msg})
	}
	return out
}

// documentErrors names the validation errors of the resources of a
// submitted document as fields of the document, with its name and their
// lines (from doc, when not nil), after the document's own problems,
// local; the others name their resource.
func documentErrors(doc *config.Document, local config.Errors, index map[resource.Ref]int, errs []store.FieldError) []FieldError {
	found := local
	var others []FieldError
	for _, fe := range errs {
		if ref, err := resource.ParseRef(fe.Resource); err == nil {
			if i, ok := index[ref]; ok {
				path := fmt.Sprintf("%s[%d]", ref.Kind, i)
				if fe.Path != "" {
					path += "." + fe.Path
				}
				found = append(found, &config.FieldError{Path: path, Msg: fe.Message})
				continue
			}
		}
		others = append(others, FieldError{Resource: fe.Resource, Path: fe.Path, Message: fe.Message})
	}
	if doc == nil {
		doc = &config.Document{}
	}
	return append(apiErrors(doc.Report(found)), others...)
}

// DecodeBundle decodes a whole or partial configuration document and
// refuses the fields that belong to each proxy's own bootstrap file.
func DecodeBundle(data []byte) (*config.Config, error) {
	doc, local := DecodeBundleDocument(data, "")
	if list := doc.Report(local); len(list) > 0 {
		return nil, invalidDocument(list, nil)
	}
	return doc.Config, nil
}

// DecodeBundleDocument decodes a whole or partial configuration document
// with config.DecodeDocument, as the API does, and returns it with the
// problems of a bundle that are not decode errors: fields that belong to
// each proxy's own bootstrap file, and resources named twice. doc.Report
// gives them all in line order.
func DecodeBundleDocument(data []byte, name string) (doc *config.Document, problems config.Errors) {
	doc = config.DecodeDocument(data, name)
	if doc.Config == nil {
		return doc, nil
	}
	cfg := doc.Config
	for _, f := range []struct {
		name string
		v    any
	}{{"admin", cfg.Admin}, {"access_log", cfg.AccessLog}, {"node", cfg.Node}, {"drain_timeout", cfg.DrainTimeout}, {"shutdown_delay", cfg.ShutdownDelay}} {
		if !reflect.ValueOf(f.v).IsZero() {
			problems = append(problems, &config.FieldError{Path: f.name, Msg: "is local to each proxy: set it in the proxy's bootstrap file, not in the control plane"})
		}
	}
	_, dups := bundleIndex(cfg)
	return doc, append(problems, dups...)
}

// bundleIndex returns the index of each resource in a bundle and an error
// for each name used twice, in the words of config's validation.
func bundleIndex(cfg *config.Config) (map[resource.Ref]int, config.Errors) {
	index := map[resource.Ref]int{}
	var dups config.Errors
	add := func(kind resource.Kind, what string, i int, name string) {
		ref := resource.Ref{Kind: kind, Name: name}
		if first, dup := index[ref]; dup {
			dups = append(dups, &config.FieldError{Path: fmt.Sprintf("%s[%d].name", kind, i), Msg: fmt.Sprintf("duplicate %s name %q (first at index %d)", what, name, first)})
			return
		}
		index[ref] = i
	}
	for i, v := range cfg.Listeners {
		add(resource.Listeners, "listener", i, v.Name)
	}
	for i, v := range cfg.VirtualHosts {
		add(resource.VirtualHosts, "virtual host", i, v.Name)
	}
	for i, v := range cfg.Clusters {
		add(resource.Clusters, "cluster", i, v.Name)
	}
	for i, v := range cfg.Plugins {
		add(resource.Plugins, "plugin", i, v.Name)
	}
	for i, v := range cfg.Certificates {
		add(resource.Certificates, "certificate", i, v.Name)
	}
	return index, dups
}

func (h *Handler) getConfig(w http.ResponseWriter, r *http.Request, _ Token) error {
	snap, err := h.st.Snapshot(r.Context())
	if err != nil {
		return err
	}
	cfg, err := snap.Config()
	if err != nil {
		return err
	}
	for i := range cfg.Certificates {
		cfg.Certificates[i] = redact.Certificate(cfg.Certificates[i])
	}
	doc := ConfigDoc{Revision: snap.Revision, ChangeRevision: snap.ChangeRevision, Config: cfg, Revisions: map[string]int64{}}
	for ref, rev := range snap.ModRevisions {
		doc.Revisions[ref.String()] = rev
	}
	w.Header().Set("X-Wasmgate-Revision", strconv.FormatInt(snap.Revision, 10))
	write(w, r, http.StatusOK, doc)
	return nil
}

func (h *Handler) list(kind resource.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ Token) error {
		snap, err := h.st.Snapshot(r.Context())
		if err != nil {
			return err
		}
		out := ItemList{Revision: snap.Revision, Items: []Item{}}
		refs := make([]resource.Ref, 0, len(snap.Raw))
		for ref := range snap.Raw {
			if ref.Kind == kind {
				refs = append(refs, ref)
			}
		}
		resource.SortRefs(refs)
		for _, ref := range refs {
			out.Items = append(out.Items, Item{Resource: ref.String(), Name: ref.Name, Revision: snap.ModRevisions[ref], Value: redactRaw(ref, snap.Raw[ref])})
		}
		write(w, r, http.StatusOK, out)
		return nil
	}
}

// redactKey returns v with the private key of a certificate replaced by
// redact.Marker; other resources are returned as they are. The API shows
// what it stores, to be read, changed and applied back: only the keys,
// which the store restores when it reads the marker, are hidden.
func redactKey(v any) any {
	if c, ok := v.(*config.Certificate); ok {
		return redact.Resource(c)
	}
	return v
}

// redactRaw is redact for a stored value.
func redactRaw(ref resource.Ref, b []byte) json.RawMessage {
	if ref.Kind != resource.Certificates {
		return rawJSON(b)
	}
	v, err := resource.Decode(ref, b)
	if err != nil {
		s, _ := json.Marshal(err.Error())
		return s
	}
	out, _ := resource.Encode(redactKey(v))
	return out
}

func rawJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

func (h *Handler) get(kind resource.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ Token) error {
		ref := resource.Ref{Kind: kind, Name: r.PathValue("name")}
		v, rev, err := h.st.Get(r.Context(), ref)
		if err != nil && rev == 0 {
			return err
		}
		var raw json.RawMessage
		if err != nil {
			raw, _ = json.Marshal(err.Error())
		} else if raw, err = resource.Encode(redactKey(v)); err != nil {
			return err
		}
		w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(rev, 10)))
		write(w, r, http.StatusOK, Item{Resource: ref.String(), Name: ref.Name, Revision: rev, Value: raw})
		return nil
	}
}

// preconditions reads If-Match, If-None-Match and expected_revision.
func preconditions(r *http.Request, ref *resource.Ref, ch *store.Change) error {
	if v := r.URL.Query().Get("expected_revision"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("expected_revision: %q is not a revision", v)
		}
		ch.ExpectedRevision = n
	}
	if ref == nil {
		return nil
	}
	if v := r.Header.Get("If-Match"); v != "" {
		n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(v, "W/"), `"`), 10, 64)
		if err != nil || n < 0 {
			return badRequest("If-Match: %q is not a revision", v)
		}
		ch.IfMatch = map[resource.Ref]int64{*ref: n}
	}
	if r.Header.Get("If-None-Match") == "*" {
		ch.IfMatch = map[resource.Ref]int64{*ref: 0}
	}
	return nil
}

func flag(r *http.Request, name string) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get(name))
	return v
}

func (h *Handler) put(kind resource.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, tok Token) error {
		ref := resource.Ref{Kind: kind, Name: r.PathValue("name")}
		body, err := readDocument(r, MaxDocumentBytes)
		if err != nil {
			return err
		}
		v := resource.New(kind)
		if err := decode(body, r.Header.Get(DocumentHeader), v); err != nil {
			return err
		}
		switch n := resource.NameOf(v); n {
		case "":
			setName(v, ref.Name)
		case ref.Name:
		default:
			return &Error{http.StatusUnprocessableEntity, ErrorBody{Code: "invalid", Message: "the name in the body is not the name in the path",
				Errors: []FieldError{{Resource: ref.String(), Path: "name", Message: fmt.Sprintf("%q is not %q", n, ref.Name)}}}}
		}
		ch := h.change(r, tok, "put")
		ch.Put = resource.Set{ref: v}
		if err := preconditions(r, &ref, &ch); err != nil {
			return err
		}
		return h.commit(w, r, ch, nil, nil)
	}
}

func setName(v any, name string) {
	switch x := v.(type) {
	case *config.Listener:
		x.Name = name
	case *config.VirtualHost:
		x.Name = name
	case *config.Cluster:
		x.Name = name
	case *config.Plugin:
		x.Name = name
	case *policy.AuthorizationPolicy:
		x.Name = name
	case *policy.PeerAuthentication:
		x.Name = name
	case *policy.OutboundTrafficPolicy:
		x.Name = name
	case *policy.WasmPlugin:
		x.Name = name
	case *policy.ServiceRoute:
		x.Name = name
	case *policy.ServiceEntry:
		x.Name = name
	case *policy.RequestAuthentication:
		x.Name = name
	case *policy.RateLimitPolicy:
		x.Name = name
	}
}

func (h *Handler) delete(kind resource.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, tok Token) error {
		ref := resource.Ref{Kind: kind, Name: r.PathValue("name")}
		ch := h.change(r, tok, "delete")
		ch.Delete = []resource.Ref{ref}
		if err := preconditions(r, &ref, &ch); err != nil {
			return err
		}
		return h.commit(w, r, ch, nil, nil)
	}
}

func (h *Handler) change(r *http.Request, tok Token, action string) store.Change {
	return store.Change{Author: tok.Name, Action: action, Message: r.Header.Get("X-Wasmgate-Message"), DryRun: flag(r, "dry_run")}
}

func (h *Handler) apply(w http.ResponseWriter, r *http.Request, tok Token) error {
	return h.applyBundle(w, r, tok, false)
}

func (h *Handler) validate(w http.ResponseWriter, r *http.Request, tok Token) error {
	return h.applyBundle(w, r, tok, true)
}

func (h *Handler) applyBundle(w http.ResponseWriter, r *http.Request, tok Token, dryRun bool) error {
	body, err := readDocument(r, MaxDocumentBytes)
	if err != nil {
		return err
	}
	doc, problems := DecodeBundleDocument(body, r.Header.Get(DocumentHeader))
	if doc.Config == nil {
		return invalidDocument(doc.Errors, nil)
	}
	index, _ := bundleIndex(doc.Config)
	ch := h.change(r, tok, "apply")
	ch.DryRun = ch.DryRun || dryRun
	ch.Prune = flag(r, "prune")
	ch.Put = resource.Split(doc.Config)
	if err := preconditions(r, nil, &ch); err != nil {
		return err
	}
	if len(doc.Errors) > 0 || len(problems) > 0 {
		// Report what decoded but does not validate too, so that every
		// problem of the document is answered at once.
		ch.DryRun = true
		var errs []store.FieldError
		var ve *store.ValidationError
		if _, err := h.st.Apply(r.Context(), ch); errors.As(err, &ve) {
			errs = ve.Errors
		}
		body := ErrorBody{Code: "invalid", Message: "the document has problems; nothing was changed",
			Errors: documentErrors(doc, problems, index, errs)}
		if len(doc.Errors) > 0 {
			body.Message = "the document does not decode; nothing was changed"
		}
		return &Error{http.StatusUnprocessableEntity, body}
	}
	return h.commit(w, r, ch, doc, index)
}

func (h *Handler) commit(w http.ResponseWriter, r *http.Request, ch store.Change, doc *config.Document, index map[resource.Ref]int) error {
	res, err := h.st.Apply(r.Context(), ch)
	if err != nil {
		return &docErrors{err: err, doc: doc, index: index}
	}
	h.answer(w, r, ch, res)
	return nil
}

func (h *Handler) answer(w http.ResponseWriter, r *http.Request, ch store.Change, res *store.Result) {
	out := ChangeResult{Revision: res.Revision, Seq: res.Seq, DryRun: res.DryRun, Unchanged: len(res.Ops) == 0, Ops: res.Ops}
	if out.Ops == nil {
		out.Ops = []store.Op{}
	}
	if !res.DryRun && len(res.Ops) > 0 {
		h.logger.Info("configuration changed", zap.String("author", ch.Author), zap.String("action", ch.Action),
			zap.Int64("revision", res.Revision), zap.Int64("seq", res.Seq), zap.Int("ops", len(res.Ops)))
	}
	w.Header().Set("X-Wasmgate-Revision", strconv.FormatInt(res.Revision, 10))
	write(w, r, http.StatusOK, out)
}

func (h *Handler) history(w http.ResponseWriter, r *http.Request, _ Token) error {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return badRequest("limit: %q is not a number", v)
		}
		limit = n
	}
	entries, err := h.st.History(r.Context(), limit)
	if err != nil {
		return err
	}
	if !flag(r, "values") {
		for i := range entries {
			for j := range entries[i].Ops {
				entries[i].Ops[j].Before, entries[i].Ops[j].After = nil, nil
			}
		}
	}
	if entries == nil {
		entries = []store.Entry{}
	}
	write(w, r, http.StatusOK, HistoryList{Items: entries})
	return nil
}

func (h *Handler) historyEntry(w http.ResponseWriter, r *http.Request, _ Token) error {
	rev, err := strconv.ParseInt(r.PathValue("revision"), 10, 64)
	if err != nil {
		return badRequest("%q is not a revision", r.PathValue("revision"))
	}
	e, err := h.st.Entry(r.Context(), rev)
	if err != nil {
		return err
	}
	write(w, r, http.StatusOK, e)
	return nil
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request, tok Token) error {
	body, err := readBody(r, MaxDocumentBytes)
	if err != nil {
		return err
	}
	var req RollbackRequest
	if err := Decode(body, &req); err != nil {
		return err
	}
	ch := h.change(r, tok, "rollback")
	ch.DryRun = ch.DryRun || req.DryRun
	if req.Message != "" {
		ch.Message = req.Message
	}
	res, err := h.st.Rollback(r.Context(), req.Revision, ch)
	if err != nil {
		return err
	}
	h.answer(w, r, ch, res)
	return nil
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request, _ Token) error {
	cli := h.st.Client()
	resp, err := cli.Get(r.Context(), h.st.Keys().Head())
	if err != nil {
		return err
	}
	st := Status{Revision: resp.Header.Revision, Converged: true}
	if len(resp.Kvs) == 1 {
		st.ChangeRevision = resp.Kvs[0].ModRevision
	}
	st.Proxies, err = registry.Proxies(r.Context(), cli, h.st.Keys().Prefix())
	if err != nil {
		return err
	}
	for _, p := range st.Proxies {
		if p.Revision < st.ChangeRevision || p.LastError != "" || p.FromCache {
			st.Converged = false
		}
	}
	write(w, r, http.StatusOK, st)
	return nil
}

func (h *Handler) putBlob(w http.ResponseWriter, r *http.Request, _ Token) error {
	body, err := readBody(r, store.MaxBlobSize)
	if err != nil {
		return err
	}
	meta, err := h.st.PutBlob(r.Context(), body)
	if err != nil {
		return err
	}
	h.logger.Info("blob stored", zap.String("sha256", meta.SHA256), zap.Int64("size", meta.Size))
	write(w, r, http.StatusOK, meta)
	return nil
}

func (h *Handler) listBlobs(w http.ResponseWriter, r *http.Request, _ Token) error {
	list, err := h.st.Blobs(r.Context())
	if err != nil {
		return err
	}
	if list == nil {
		list = []store.BlobMeta{}
	}
	write(w, r, http.StatusOK, BlobList{Items: list})
	return nil
}

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, _ Token) error {
	b, err := h.st.Blob(r.Context(), r.PathValue("sha256"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Set("ETag", strconv.Quote(r.PathValue("sha256")))
	w.Write(b)
	return nil
}

func (h *Handler) listEndpoints(w http.ResponseWriter, r *http.Request, _ Token) error {
	list, err := registry.Endpoints(r.Context(), h.st.Client(), h.st.Keys().Prefix(), r.URL.Query().Get("cluster"))
	if err != nil {
		return err
	}
	write(w, r, http.StatusOK, EndpointList{Items: list})
	return nil
}

func (h *Handler) registerEndpoint(w http.ResponseWriter, r *http.Request, _ Token) error {
	body, err := readBody(r, MaxDocumentBytes)
	if err != nil {
		return err
	}
	var req EndpointRequest
	if err := Decode(body, &req); err != nil {
		return err
	}
	ttl := req.TTL.Or(10 * time.Second)
	if ttl < 2*time.Second || ttl > 24*time.Hour {
		return &Error{http.StatusUnprocessableEntity, ErrorBody{Code: "invalid", Message: "invalid endpoint",
			Errors: []FieldError{{Path: "ttl", Message: "must be between 2s and 24h"}}}}
	}
	ep := registry.Endpoint{Cluster: r.PathValue("cluster"), ID: r.PathValue("id"), Address: req.Address, Weight: req.Weight, Version: req.Version, Protocol: req.Protocol}
	if err := ep.Check(); err != nil {
		return &Error{http.StatusUnprocessableEntity, ErrorBody{Code: "invalid", Message: "invalid endpoint: " + err.Error()}}
	}
	lease, err := registry.RegisterEndpoint(r.Context(), h.st.Client(), h.st.Keys().Prefix(), ep, ttl)
	if err != nil {
		return err
	}
	ep.Lease, ep.TTL = int64(lease), int64(ttl/time.Second)
	write(w, r, http.StatusOK, ep)
	return nil
}

func (h *Handler) deregisterEndpoint(w http.ResponseWriter, r *http.Request, _ Token) error {
	ok, err := registry.DeregisterEndpoint(r.Context(), h.st.Client(), h.st.Keys().Prefix(), r.PathValue("cluster"), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !ok {
		return &store.NotFoundError{What: "endpoint " + r.PathValue("cluster") + "/" + r.PathValue("id")}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
