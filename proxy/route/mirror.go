package route

import (
	"math/rand/v2"

	"github.com/wasmgate/wasmgate/proxy/cluster"
	"github.com/wasmgate/wasmgate/proxy/metrics"
)

// Mirror is one of a route's request mirrors, compiled: the cluster a
// share of the route's requests is copied to, in parts per million.
type Mirror struct {
	Cluster *cluster.Cluster
	Stats   *metrics.MirrorStats
	ppm     uint32
}

// Roll draws, for one request, whether it is copied.
func (m *Mirror) Roll() bool {
	return m.ppm >= 1_000_000 || (m.ppm > 0 && rand.Uint32N(1_000_000) < m.ppm)
}
