package account

import (
	"fmt"
	"testing"
)

func TestInjectsFailure(t *testing.T) {
	const n = 20000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15)
	}
	for _, tc := range []struct {
		rate     float64
		min, max int
	}{{0, 0, 0}, {-1, 0, 0}, {1, n, n}, {0.05, n * 4 / 100, n * 6 / 100}, {0.25, n * 23 / 100, n * 27 / 100}} {
		got := 0
		for _, id := range ids {
			first := InjectsFailure(id, tc.rate)
			if first {
				got++
			}
			if again := InjectsFailure(id, tc.rate); again != first {
				t.Fatalf("rate %v: not deterministic for %s", tc.rate, id)
			}
		}
		if got < tc.min || got > tc.max {
			t.Errorf("rate %v: %d of %d orders fail, want %d to %d", tc.rate, got, n, tc.min, tc.max)
		}
	}
}
