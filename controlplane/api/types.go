// Package api is the control plane's admin API over HTTP: resources, whole
// or partial configuration bundles, dry runs, history, rollback, fleet
// status, plugin blobs and endpoint registration. Requests and responses
// are JSON, or YAML when the Content-Type or Accept header says so. Every
// request but /healthz carries a bearer token.
//
// Handler serves it; Client calls it.
package api

import (
	"encoding/json"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/discovery"
	"github.com/wasmgate/wasmgate/controlplane/registry"
	"github.com/wasmgate/wasmgate/controlplane/store"
)

// ErrorBody is the body of every error response.
type ErrorBody struct {
	// Code is unauthorized, forbidden, not_found, bad_request, invalid,
	// conflict, referenced, too_large, unavailable or internal.
	Code    string `json:"error" yaml:"error"`
	Message string `json:"message" yaml:"message"`
	// Errors name the fields of an invalid configuration.
	Errors []FieldError `json:"errors,omitempty" yaml:"errors,omitempty"`
	// Conflicts say which preconditions of a change no longer hold.
	Conflicts []store.Conflict `json:"conflicts,omitempty" yaml:"conflicts,omitempty"`
	// Referenced say which removed resources are still in use, and where.
	Referenced []store.Referenced `json:"referenced,omitempty" yaml:"referenced,omitempty"`
}

// FieldError is one invalid field.
type FieldError struct {
	// Resource is "kind/name"; empty for the configuration as a whole.
	Resource string `json:"resource,omitempty" yaml:"resource,omitempty"`
	// Path is the field inside the resource.
	Path string `json:"path,omitempty" yaml:"path,omitempty"`
	// DocumentPath is the field in the submitted document, when the
	// resource was in it ("clusters[2].endpoints[0].address").
	DocumentPath string `json:"document_path,omitempty" yaml:"document_path,omitempty"`
	// File is the submitted document's name, as its client sent it in
	// the X-Wasmgate-Document header.
	File string `json:"file,omitempty" yaml:"file,omitempty"`
	// Line is the line in the submitted document, when known.
	Line    int    `json:"line,omitempty" yaml:"line,omitempty"`
	Message string `json:"message" yaml:"message"`
}

// ChangeResult is the answer to a change: put, delete, apply, validate or
// rollback.
type ChangeResult struct {
	// Revision is the etcd revision of the change, or the revision it was
	// checked against for a dry run or a change that changed nothing.
	Revision  int64      `json:"revision" yaml:"revision"`
	Seq       int64      `json:"seq,omitempty" yaml:"seq,omitempty"`
	DryRun    bool       `json:"dry_run,omitempty" yaml:"dry_run,omitempty"`
	Unchanged bool       `json:"unchanged,omitempty" yaml:"unchanged,omitempty"`
	Ops       []store.Op `json:"ops" yaml:"ops"`
}

// ConfigDoc is the stored configuration: its resources, the revision it
// was read at and the mod revision of each resource ("kind/name").
type ConfigDoc struct {
	Revision       int64            `json:"revision" yaml:"revision"`
	ChangeRevision int64            `json:"change_revision" yaml:"change_revision"`
	Config         *config.Config   `json:"config" yaml:"config"`
	Revisions      map[string]int64 `json:"revisions" yaml:"revisions"`
}

// Item is one resource with its mod revision.
type Item struct {
	Resource string          `json:"resource" yaml:"resource"`
	Name     string          `json:"name" yaml:"name"`
	Revision int64           `json:"revision" yaml:"revision"`
	Value    json.RawMessage `json:"value" yaml:"value"`
}

// ItemList is the resources of one kind.
type ItemList struct {
	Revision int64  `json:"revision" yaml:"revision"`
	Items    []Item `json:"items" yaml:"items"`
}

// HistoryList is the latest changes, newest first.
type HistoryList struct {
	Items []store.Entry `json:"items" yaml:"items"`
}

// RollbackRequest asks to return the configuration to a revision.
type RollbackRequest struct {
	Revision int64  `json:"revision" yaml:"revision"`
	Message  string `json:"message,omitempty" yaml:"message,omitempty"`
	DryRun   bool   `json:"dry_run,omitempty" yaml:"dry_run,omitempty"`
}

// Status is the fleet's state.
type Status struct {
	// Revision is the etcd revision now; ChangeRevision the revision of
	// the latest configuration change.
	Revision       int64 `json:"revision" yaml:"revision"`
	ChangeRevision int64 `json:"change_revision" yaml:"change_revision"`
	// Converged is true when every registered proxy runs a revision at or
	// after ChangeRevision and reports no error.
	Converged bool                 `json:"converged" yaml:"converged"`
	Proxies   []registry.ProxyInfo `json:"proxies" yaml:"proxies"`
}

// MeshStatusPath is where the control plane lists the sidecars that
// follow its discovery (MeshStatus).
const MeshStatusPath = "/v1/mesh/status"

// MeshStatus is what the discovery hub knows of the sidecars that follow
// it, as istioctl proxy-status shows them.
type MeshStatus struct {
	// PolicyRevision is the revision of the latest policy change the hub
	// saw; Synced is true when every sidecar has been handed all it
	// follows.
	PolicyRevision int64                   `json:"policy_revision" yaml:"policy_revision"`
	Synced         bool                    `json:"synced" yaml:"synced"`
	Sidecars       []discovery.WatchStatus `json:"sidecars" yaml:"sidecars"`
}

// BlobList lists stored blobs.
type BlobList struct {
	Items []store.BlobMeta `json:"items" yaml:"items"`
}

// EndpointRequest registers an endpoint.
type EndpointRequest struct {
	Address string `json:"address" yaml:"address"`
	Weight  int    `json:"weight,omitempty" yaml:"weight,omitempty"`
	// Version labels the endpoint's release (registry.Endpoint.Version).
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// Protocol is "tcp" for an endpoint of opaque TCP
	// (registry.Endpoint.Protocol).
	Protocol string `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	// TTL is the lease's time to live ("10s"). Zero means 10s.
	TTL config.Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

// EndpointList lists registered endpoints.
type EndpointList struct {
	Items []registry.Endpoint `json:"items" yaml:"items"`
}
