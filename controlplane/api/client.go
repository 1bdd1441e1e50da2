package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

// Client calls the admin API. The zero HTTP means http.DefaultClient.
type Client struct {
	// Server is the API's base URL ("http://127.0.0.1:9900").
	Server string
	// Token is the bearer token sent with every request.
	Token string
	HTTP  *http.Client
}

// Error is an error answer of the API.
type Error struct {
	Status int
	Body   ErrorBody
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (HTTP %d)", e.Body.Message, e.Status)
	for _, fe := range e.Body.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.String())
	}
	for _, c := range e.Body.Conflicts {
		fmt.Fprintf(&b, "\n  %s: %s", c.Resource, c.Reason)
	}
	for _, r := range e.Body.Referenced {
		fmt.Fprintf(&b, "\n  %s is referenced by:", r.Resource)
		for _, by := range r.By {
			b.WriteString("\n    " + by)
		}
	}
	return b.String()
}

// String formats the error as config.FieldError does, so that a problem
// with a document reads the same from the API as from `wasmgate
// validate`: "b.yaml:4: clusters[0].idle_timout: unknown field".
func (fe FieldError) String() string {
	path := fe.DocumentPath
	switch {
	case path != "":
	case fe.Resource != "" && fe.Path != "":
		path = fe.Resource + " " + fe.Path
	case fe.Resource != "":
		path = fe.Resource
	default:
		path = fe.Path
	}
	return (&config.FieldError{File: fe.File, Line: fe.Line, Path: path, Msg: fe.Message}).Error()
}

// Options of a change request.
type Options struct {
	DryRun bool
	Prune  bool
	// ExpectedRevision is the revision the change was prepared from.
	ExpectedRevision int64
	// IfMatch, when not zero, is the resource's revision that a put or
	// delete was prepared from.
	IfMatch int64
	// Create makes a put fail if the resource exists.
	Create  bool
	Message string
	// Document names the document of a put or an apply in its errors: the
	// file it was read from.
	Document string
}

// Do sends a request and decodes a JSON answer into out (when not nil).
// A non-2xx answer is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, header http.Header, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Server, "/")+path, rd)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the control plane at %s: %w", c.Server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the control plane's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) != nil || e.Body.Message == "" {
			e.Body.Message = strings.TrimSpace(string(data))
			if e.Body.Message == "" {
				e.Body.Message = http.StatusText(resp.StatusCode)
			}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if b, ok := out.(*[]byte); ok {
		*b = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding the control plane's answer: %w", err)
	}
	return nil
}

func (o Options) query() string {
	q := url.Values{}
	if o.DryRun {
		q.Set("dry_run", "true")
	}
	if o.Prune {
		q.Set("prune", "true")
	}
	if o.ExpectedRevision > 0 {
		q.Set("expected_revision", strconv.FormatInt(o.ExpectedRevision, 10))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func (o Options) header(contentType string) http.Header {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if o.IfMatch > 0 {
		h.Set("If-Match", strconv.Quote(strconv.FormatInt(o.IfMatch, 10)))
	} else if o.Create {
		h.Set("If-None-Match", "*")
	}
	if o.Message != "" {
		h.Set("X-Wasmgate-Message", o.Message)
	}
	if o.Document != "" {
		h.Set(DocumentHeader, o.Document)
	}
	return h
}

// Config returns the whole stored configuration.
func (c *Client) Config(ctx context.Context) (*ConfigDoc, error) {
	var out ConfigDoc
	return &out, c.Do(ctx, http.MethodGet, "/v1/config", nil, nil, &out)
}

// List returns the resources of a kind.
func (c *Client) List(ctx context.Context, kind resource.Kind) (*ItemList, error) {
	var out ItemList
	return &out, c.Do(ctx, http.MethodGet, "/v1/"+string(kind), nil, nil, &out)
}

// Get returns one resource.
func (c *Client) Get(ctx context.Context, ref resource.Ref) (*Item, error) {
	var out Item
	return &out, c.Do(ctx, http.MethodGet, "/v1/"+string(ref.Kind)+"/"+url.PathEscape(ref.Name), nil, nil, &out)
}

// Put creates or replaces one resource from a JSON or YAML document.
func (c *Client) Put(ctx context.Context, ref resource.Ref, doc []byte, o Options) (*ChangeResult, error) {
	var out ChangeResult
	return &out, c.Do(ctx, http.MethodPut, "/v1/"+string(ref.Kind)+"/"+url.PathEscape(ref.Name)+o.query(), doc, o.header(contentType(doc)), &out)
}

// Delete removes one resource.
func (c *Client) Delete(ctx context.Context, ref resource.Ref, o Options) (*ChangeResult, error) {
	var out ChangeResult
	return &out, c.Do(ctx, http.MethodDelete, "/v1/"+string(ref.Kind)+"/"+url.PathEscape(ref.Name)+o.query(), nil, o.header(""), &out)
}

// Apply applies a whole or partial configuration document (JSON or
// YAML); with o.DryRun it only validates.
func (c *Client) Apply(ctx context.Context, doc []byte, o Options) (*ChangeResult, error) {
	o.IfMatch, o.Create = 0, false
	var out ChangeResult
	return &out, c.Do(ctx, http.MethodPost, "/v1/apply"+o.query(), doc, o.header(contentType(doc)), &out)
}

// History returns the latest limit changes, newest first; with values,
// each change carries the resources before and after.
func (c *Client) History(ctx context.Context, limit int, values bool) (*HistoryList, error) {
	var out HistoryList
	path := "/v1/history?limit=" + strconv.Itoa(limit)
	if values {
		path += "&values=true"
	}
	return &out, c.Do(ctx, http.MethodGet, path, nil, nil, &out)
}

// Rollback returns the configuration to a revision as a new change.
func (c *Client) Rollback(ctx context.Context, req RollbackRequest) (*ChangeResult, error) {
	body, _ := json.Marshal(req)
	var out ChangeResult
	return &out, c.Do(ctx, http.MethodPost, "/v1/rollback", body, http.Header{"Content-Type": {"application/json"}}, &out)
}

// Status returns the fleet's state.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	return &out, c.Do(ctx, http.MethodGet, "/v1/status", nil, nil, &out)
}

// MeshStatus returns the sidecars that follow the control plane's
// discovery, and whether each holds the latest of what it follows.
func (c *Client) MeshStatus(ctx context.Context) (*MeshStatus, error) {
	var out MeshStatus
	return &out, c.Do(ctx, http.MethodGet, MeshStatusPath, nil, nil, &out)
}

// PushBlob stores a plugin module and returns its meta.
func (c *Client) PushBlob(ctx context.Context, data []byte) (*store.BlobMeta, error) {
	var out store.BlobMeta
	return &out, c.Do(ctx, http.MethodPut, "/v1/blobs", data, http.Header{"Content-Type": {"application/wasm"}}, &out)
}

// RegisterEndpoint registers (or renews) an endpoint under a lease.
func (c *Client) RegisterEndpoint(ctx context.Context, cluster, id string, req EndpointRequest) (*registry.Endpoint, error) {
	body, _ := json.Marshal(req)
	var out registry.Endpoint
	return &out, c.Do(ctx, http.MethodPut, "/v1/endpoints/"+url.PathEscape(cluster)+"/"+url.PathEscape(id), body, http.Header{"Content-Type": {"application/json"}}, &out)
}

// DeregisterEndpoint removes an endpoint.
func (c *Client) DeregisterEndpoint(ctx context.Context, cluster, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(cluster)+"/"+url.PathEscape(id), nil, nil, nil)
}

// Endpoints lists registered endpoints of a cluster ("" for all).
func (c *Client) Endpoints(ctx context.Context, cluster string) (*EndpointList, error) {
	var out EndpointList
	path := "/v1/endpoints"
	if cluster != "" {
		path += "?cluster=" + url.QueryEscape(cluster)
	}
	return &out, c.Do(ctx, http.MethodGet, path, nil, nil, &out)
}

func contentType(doc []byte) string {
	t := bytes.TrimSpace(doc)
	if len(t) > 0 && t[0] == '{' {
		return "application/json"
	}
	return "application/yaml"
}
