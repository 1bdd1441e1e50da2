package balancer

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Ring sizes.
const (
	// DefaultRingPointsPerHost is the ring size per host when
	// Options.RingSize is zero.
	DefaultRingPointsPerHost = 1024
	// MaxRingSize bounds the number of points on a ring.
	MaxRingSize = 8 << 20
)

// ringHash is a consistent-hash ring in the manner of Ketama: every host
// owns points at xxhash("<key>_<i>"), i = 0, 1, ..., and a hash goes to
// the owner of the first point at or after it, wrapping round.
type ringHash struct {
	// hashes are the points in ascending order; owners[i] owns hashes[i].
	hashes []uint64
	owners []int32
}

var _ Balancer = (*ringHash)(nil)

// newRingHash builds ring_hash over at least two hosts. A host's number of
// points is its share of the ring by weight, rounded, and at least one;
// since it depends on nothing else, adding a host of the same weight as
// the others with the default ring size leaves every other host's points
// in place and moves only the keys the new host takes.
func newRingHash(hosts []Host, weights []int, size int) Balancer {
	if size == 0 {
		size = DefaultRingPointsPerHost * len(hosts)
	}
	size = min(size, MaxRingSize)
	var total int
	for _, w := range weights {
		total += w
	}

	type point struct {
		hash uint64
		host int32
	}
	counts := make([]int, len(hosts))
	n := 0
	for i, w := range weights {
		counts[i] = max(1, int(math.Round(float64(size)*float64(w)/float64(total))))
		n += counts[i]
	}
	points := make([]point, 0, n)
	var buf []byte
	for i, h := range hosts {
		key := h.Key()
		for j := range counts[i] {
			buf = append(buf[:0], key...)
			buf = append(buf, '_')
			buf = strconv.AppendInt(buf, int64(j), 10)
			points = append(points, point{hash: xxhash.Sum64(buf), host: int32(i)})
		}
	}
	// Ties between hashes, which take two hosts with one key or a 64-bit
	// collision, are broken by key and then by position, so that the ring
	// does not depend on the order of distinct hosts.
	slices.SortFunc(points, func(a, b point) int {
		if c := cmp.Compare(a.hash, b.hash); c != 0 {
			return c
		}
		if c := cmp.Compare(hosts[a.host].Key(), hosts[b.host].Key()); c != 0 {
			return c
		}
		return cmp.Compare(a.host, b.host)
	})

	b := &ringHash{hashes: make([]uint64, n), owners: make([]int32, n)}
	for i, p := range points {
		b.hashes[i] = p.hash
		b.owners[i] = p.host
	}
	return b
}

func (b *ringHash) Pick(hash uint64) int {
	// The first point at or after hash.
	lo, hi := 0, len(b.hashes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if b.hashes[m] < hash {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(b.hashes) {
		lo = 0
	}
	return int(b.owners[lo])
}
