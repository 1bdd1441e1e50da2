package balancer

import (
	"testing"

	"github.com/wasmgate/wasmgate/config"
)

// movement maps keys with a balancer over before and one over after and
// reports the fraction of keys whose host changed, and the fraction that
// moved to a host other than added (or, when a host was removed, away from
// a host other than removed).
func movement(t *testing.T, policy string, before, after []Host, added, removed string) (moved, stray float64) {
	t.Helper()
	const keys = 100_000
	a := mustNew(t, policy, before, Options{})
	b := mustNew(t, policy, after, Options{})
	var nMoved, nStray int
	for i := range keys {
		h := keyHash(i)
		from, to := before[a.Pick(h)].Key(), after[b.Pick(h)].Key()
		if from == to {
			continue
		}
		nMoved++
		if to != added && from != removed {
			nStray++
		}
	}
	return float64(nMoved) / keys, float64(nStray) / keys
}

// TestConsistentHashMovement checks that adding a fifth host to four (or
// removing one of five) remaps about a fifth of the keys, and that the
// keys that move go to the new host (or come from the removed one). A
// ring moves no other key. Maglev trades a little of that for its even
// table: a host's arrival changes which host wins a contended slot, so a
// small fraction of keys also moves between old hosts.
func TestConsistentHashMovement(t *testing.T) {
	tests := []struct {
		policy   string
		maxStray float64
	}{
		{config.LBRingHash, 0},
		{config.LBMaglev, 0.01},
	}
	four, five := makeHosts(1, 1, 1, 1), makeHosts(1, 1, 1, 1, 1)
	// Five without the third host: the slice is renumbered around the gap.
	gap := append(append([]Host(nil), five[:2]...), five[3:]...)
	for _, tt := range tests {
		t.Run(tt.policy+"/add", func(t *testing.T) {
			moved, stray := movement(t, tt.policy, four, five, five[4].Key(), "")
			t.Logf("4 -> 5 hosts: %.4f of keys moved, %.4f between old hosts", moved, stray)
			if moved < 0.15 || moved > 0.30 {
				t.Errorf("%.4f of keys moved, want 0.15 to 0.30", moved)
			}
			if stray > tt.maxStray {
				t.Errorf("%.4f of keys moved between old hosts, want at most %.4f", stray, tt.maxStray)
			}
		})
		t.Run(tt.policy+"/remove", func(t *testing.T) {
			moved, stray := movement(t, tt.policy, five, gap, "", five[2].Key())
			t.Logf("5 -> 4 hosts: %.4f of keys moved, %.4f between remaining hosts", moved, stray)
			if moved < 0.15 || moved > 0.30 {
				t.Errorf("%.4f of keys moved, want 0.15 to 0.30", moved)
			}
			if stray > tt.maxStray {
				t.Errorf("%.4f of keys moved between remaining hosts, want at most %.4f", stray, tt.maxStray)
			}
		})
	}
}

// TestConsistentHashLargeCluster checks movement at a larger scale: 50 to
// 51 hosts should move about 1/51 of the keys.
func TestConsistentHashLargeCluster(t *testing.T) {
	tests := []struct {
		policy   string
		maxStray float64
	}{
		{config.LBRingHash, 0},
		{config.LBMaglev, 0.01},
	}
	before, after := makeHosts(equalWeights(50)...), makeHosts(equalWeights(51)...)
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			moved, stray := movement(t, tt.policy, before, after, after[50].Key(), "")
			t.Logf("50 -> 51 hosts: %.4f of keys moved, %.4f between old hosts", moved, stray)
			if want := 1.0 / 51; moved < want/2 || moved > want*1.5+tt.maxStray {
				t.Errorf("%.4f of keys moved, want about %.4f", moved, want)
			}
			if stray > tt.maxStray {
				t.Errorf("%.4f of keys moved between old hosts, want at most %.4f", stray, tt.maxStray)
			}
		})
	}
}
