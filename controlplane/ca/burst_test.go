//go:build !race

package ca

import (
	"testing"
	"time"
)

// The race detector slows the burst tenfold and says nothing of its
// figures; TestTokenUsesAreCountedOnceUnderRace covers the concurrency.

// TestBurst1000 has 1,000 proxies join at once: every one gets its
// certificate, within seconds, and the heap stays bounded.
func TestBurst1000(t *testing.T) {
	took, grown := burst(t, 1000)
	t.Logf("1000 concurrent CSRs: %s, heap grew %.1f MiB at its peak", took.Round(time.Millisecond), float64(grown)/(1<<20))
	if grown > 256<<20 {
		t.Fatalf("the heap grew by %d MiB for 1000 requests", grown>>20)
	}
}
