package config

// Plugin is a Wasm filter module and how to run it.
type Plugin struct {
	Name string `yaml:"name" json:"name"`
	// File is the path of the .wasm module. With SHA256 set too, the file's
	// digest must match.
	File string `yaml:"file,omitempty" json:"file,omitempty"`
	// SHA256 is the module's content address (lowercase hex). Alone, it names
	// a blob held by the control plane.
	SHA256 string `yaml:"sha256,omitempty" json:"sha256,omitempty"`
	// RootID selects the root context inside the module (the guest reads
	// it as the plugin_root_id property); empty is valid.
	RootID string `yaml:"root_id,omitempty" json:"root_id,omitempty"`
	// VMID names the VM the plugin runs in, as Envoy's vm_id does: plugins
	// with the same vm_id run in one VM (one compiled module, one pool of
	// instances, one guest runtime per instance), each with its own root
	// context, configuration, failure policy, logs and metrics. They must
	// agree on what makes the VM: file or sha256, vm_config,
	// memory_limit_mb, pool_size and call_timeout. Empty gives the plugin
	// a VM of its own.
	VMID string `yaml:"vm_id,omitempty" json:"vm_id,omitempty"`
	// VMConfig is passed to proxy_on_vm_start; Config to proxy_on_configure.
	// Each is a string (raw bytes) or a mapping (passed as JSON).
	VMConfig RawConfig `yaml:"vm_config,omitempty" json:"vm_config,omitempty"`
	Config   RawConfig `yaml:"config,omitempty" json:"config,omitempty"`
	// FailurePolicy is fail_closed (the default: a broken plugin fails its
	// request with 500), fail_open (the request goes on without the plugin)
	// or reload (fail closed, and rebuild the instance at once).
	FailurePolicy string `yaml:"failure_policy,omitempty" json:"failure_policy,omitempty"`
	// MemoryLimitMB caps each instance's linear memory. Zero means 256.
	MemoryLimitMB int `yaml:"memory_limit_mb,omitempty" json:"memory_limit_mb,omitempty"`
	// CallTimeout is the CPU time one call into the guest may use. Zero
	// means 1s.
	CallTimeout Duration `yaml:"call_timeout,omitempty" json:"call_timeout,omitempty"`
	// PoolSize is the most module instances: the pool starts with one, grows
	// while requests find every instance busy and shrinks when they stay
	// idle. Zero means GOMAXPROCS.
	PoolSize int `yaml:"pool_size,omitempty" json:"pool_size,omitempty"`
	// MaxBodyBytes bounds a body the plugin buffers. Zero means 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes,omitempty" json:"max_body_bytes,omitempty"`
	// AllowedClusters are the clusters the plugin may call with
	// proxy_http_call. Empty means none.
	AllowedClusters []string `yaml:"allowed_clusters,omitempty" json:"allowed_clusters,omitempty"`
	// StatsTags extract labels from the names of the metrics the plugin
	// defines, as Envoy's stats_config.stats_tags do for its stats.
	StatsTags []StatsTag `yaml:"stats_tags,omitempty" json:"stats_tags,omitempty"`
}

// StatsTag is one label of a plugin's metrics, as Envoy's TagSpecifier:
// taken from the metric's name by a regular expression, or fixed.
type StatsTag struct {
	// TagName is the label's name.
	TagName string `yaml:"tag_name" json:"tag_name"`
	// Regex is searched for in the metric's name. Its first capture group
	// is cut from the name; its second, or the first when there is only
	// one, is the label's value.
	Regex string `yaml:"regex,omitempty" json:"regex,omitempty"`
	// FixedValue is the label's value on every metric of the plugin.
	FixedValue string `yaml:"fixed_value,omitempty" json:"fixed_value,omitempty"`
}

// Native filters, as FilterRef.Native names them.
const (
	// NativeForwarded sets the X-Forwarded-* headers and
	// X-Forwarded-Client-Cert.
	NativeForwarded = "forwarded"
	// NativeRateLimit applies the virtual host's and the route's rate
	// limits.
	NativeRateLimit = "rate_limit"
	// NativeHeaders applies the request_headers and response_headers
	// mutations.
	NativeHeaders = "headers"
	// NativeMeshPolicy enforces the mesh's authorization policy of the
	// sidecar's own service on its inbound listener. Only a proxy run as
	// a sidecar has it; it is never placed by default.
	NativeMeshPolicy = "mesh_policy"
)

// Failure policies.
const (
	FailClosed = "fail_closed"
	FailOpen   = "fail_open"
	FailReload = "reload"
)

// FilterRef attaches a plugin, or places a native filter, in the filter
// chain of a virtual host or a route. Exactly one of Plugin and Native is
// set.
type FilterRef struct {
	Plugin string `yaml:"plugin,omitempty" json:"plugin,omitempty"`
	// Native places one of the proxy's own filters (NativeForwarded,
	// NativeRateLimit, NativeHeaders) at this point of the chain instead of
	// at its default place.
	Native string `yaml:"native,omitempty" json:"native,omitempty"`
	// Config, when set, replaces the plugin's configuration for this
	// attachment.
	Config RawConfig `yaml:"config,omitempty" json:"config,omitempty"`
}
