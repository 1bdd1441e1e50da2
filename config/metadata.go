package config

// Metadata is data attached to a route or a cluster for filters to read,
// shaped as Envoy's: filter_metadata maps a namespace (by convention the
// name of the filter that reads it) to a map of values. Wasm filters read
// it as the properties route_metadata.filter_metadata.<namespace>.<key>
// and cluster_metadata.filter_metadata.<namespace>.<key>.
type Metadata struct {
	FilterMetadata map[string]map[string]any `yaml:"filter_metadata,omitempty" json:"filter_metadata,omitempty"`
}
