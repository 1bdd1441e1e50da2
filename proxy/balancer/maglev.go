package balancer

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// MaglevTableSize is the number of entries of a maglev lookup table, a
// prime. It bounds the number of hosts maglev can balance over.
const MaglevTableSize = 65537

// maglev is the lookup table of Google's Maglev (Eisenbud et al., NSDI
// 2016): every host has a permutation of the table's slots, fixed by two
// hashes of its key, and the hosts take turns claiming their next free
// preferred slot until the table is full.
type maglev struct {
	table []int32
}

var _ Balancer = (*maglev)(nil)

// newMaglev builds maglev over at least two hosts.
//
// Weights are honoured as in Envoy: in round r a host of weight w takes a
// turn when r·w has caught up with the turns it has had times the largest
// weight, so the heaviest hosts take a turn every round and a host of half
// their weight every other round. Hosts take their turns in the order of
// their keys, which makes the table independent of the order of the slice.
func newMaglev(hosts []Host, weights []int) (Balancer, error) {
	if len(hosts) > MaglevTableSize {
		return nil, fmt.Errorf("balancer: maglev over %d hosts: at most %d", len(hosts), MaglevTableSize)
	}
	type entry struct {
		host   int32
		weight uint64
		target uint64 // turns had times the largest weight
		pos    uint64 // the next preferred slot
		skip   uint64
	}
	const m = MaglevTableSize
	entries := make([]entry, len(hosts))
	var maxWeight uint64
	d := xxhash.NewWithSeed(1)
	for i, h := range hosts {
		key := h.Key()
		d.ResetWithSeed(1)
		d.WriteString(key)
		entries[i] = entry{
			host:   int32(i),
			weight: uint64(weights[i]),
			pos:    xxhash.Sum64String(key) % m,
			skip:   d.Sum64()%(m-1) + 1,
		}
		maxWeight = max(maxWeight, uint64(weights[i]))
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(hosts[a.host].Key(), hosts[b.host].Key()); c != 0 {
			return c
		}
		return cmp.Compare(a.host, b.host)
	})

	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for round := uint64(1); filled < m; round++ {
		for i := range entries {
			e := &entries[i]
			if round*e.weight < e.target {
				continue
			}
			e.target += maxWeight
			for table[e.pos] >= 0 {
				e.pos = (e.pos + e.skip) % m
			}
			table[e.pos] = e.host
			e.pos = (e.pos + e.skip) % m
			if filled++; filled == m {
				break
			}
		}
	}
	return &maglev{table: table}, nil
}

func (b *maglev) Pick(hash uint64) int {
	return int(b.table[hash%MaglevTableSize])
}
