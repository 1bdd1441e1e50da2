package balancer

import (
	"cmp"
	"math"
	"math/bits"
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
	// index[b] is the first point whose top 64-shift bits are at least b,
	// so the point of a hash whose top bits are b lies between index[b]
	// and index[b+1] inclusive. There are about as many buckets as
	// points, which spares Pick the cache miss at every step of a binary
	// search over the whole ring.
	index []uint32
	shift uint
}

var _ Balancer = (*ringHash)(nil)

// newRingHash builds ring_hash over at least two hosts. A host's number of
// points is its share of the ring by weight, rounded, and at least one;
// since it depends on nothing else, adding a host of the same weight as
// the others with the default ring size leaves every other host's points
// in place and moves only the keys the new host takes.
func newRingHash(hosts []Host, weights []int, size int) Balancer {
	counts := ringCounts(weights, size)
	n := 0
	for _, c := range counts {
		n += c
	}
	type point struct {
		hash uint64
		host int32
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

	k := max(1, bits.Len64(uint64(n-1)))
	b := &ringHash{
		hashes: make([]uint64, n),
		owners: make([]int32, n),
		index:  make([]uint32, 1<<k+1),
		shift:  uint(64 - k),
	}
	for i, p := range points {
		b.hashes[i] = p.hash
		b.owners[i] = p.host
	}
	next := 0
	for bucket := range b.index {
		for next < n && b.hashes[next]>>b.shift < uint64(bucket) {
			next++
		}
		b.index[bucket] = uint32(next)
	}
	return b
}

// ringCounts returns the number of points of each host on a ring of about
// size points (zero meaning DefaultRingPointsPerHost per host), at most
// MaxRingSize but for the one point every host keeps.
func ringCounts(weights []int, size int) []int {
	if size == 0 {
		size = DefaultRingPointsPerHost * len(weights)
	}
	size = min(size, MaxRingSize)
	var total int
	for _, w := range weights {
		total += w
	}
	counts := make([]int, len(weights))
	for i, w := range weights {
		counts[i] = max(1, int(math.Round(float64(size)*float64(w)/float64(total))))
	}
	return counts
}

func (b *ringHash) Pick(hash uint64) int {
	// The first point at or after hash: at or after the first point of
	// hash's bucket, and at or before the first point of the next.
	bucket := hash >> b.shift
	lo, hi := int(b.index[bucket]), int(b.index[bucket+1])
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
