package gid_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
	"testing/cryptotest"

	"github.com/golcn/golcn/internal/gid"
)

// canonical is an independent statement of the one accepted spelling.
var canonical = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestNewIsCanonicalAndDistinct(t *testing.T) {
	n := 1_000_000 // S13: 0 collisions in 1,000,000 ids
	if testing.Short() {
		n = 10_000
	}
	for range 100 {
		id := gid.New()
		if got, err := gid.Parse(id); err != nil || got != id {
			t.Fatalf("Parse(New()) = %q, %v; want %q, nil", got, err, id)
		}
	}
	seen := make(map[string]struct{}, n)
	for i := range n {
		id := gid.New()
		if i < 10_000 && !canonical.MatchString(id) { // the regexp is slow under -race
			t.Fatalf("New() #%d = %q, not 32 lower-case hex characters", i, id)
		}
		if !gid.Valid(id) {
			t.Fatalf("Valid(New()) = false for %q", id)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("New() repeated %q after %d ids", id, i)
		}
		seen[id] = struct{}{}
	}
}

// TestNewIs128BitsOfCryptoRand (S13 "group-id guessing": ids are 128-bit
// crypto/rand): with crypto/rand's source made deterministic, each id is
// exactly the hex of the next 16 bytes crypto/rand gives, so an id holds
// 128 bits from crypto/rand and nothing else (no clock, counter or
// math/rand).
func TestNewIs128BitsOfCryptoRand(t *testing.T) {
	for _, seed := range []uint64{1, 2, 0xdeadbeef} {
		cryptotest.SetGlobalRandom(t, seed)
		var want [3][16]byte
		for i := range want {
			if _, err := rand.Read(want[i][:]); err != nil {
				t.Fatal(err)
			}
		}
		cryptotest.SetGlobalRandom(t, seed) // the same stream again
		for i := range want {
			id := gid.New()
			raw, err := hex.DecodeString(id)
			if err != nil || len(raw) != 16 {
				t.Fatalf("seed %d: New() = %q: not the hex of 16 bytes (%v)", seed, id, err)
			}
			if w := hex.EncodeToString(want[i][:]); id != w {
				t.Fatalf("seed %d, id %d: New() = %s, want %s (the next 16 bytes of crypto/rand)", seed, i, id, w)
			}
		}
	}
}

// TestNewUsesEveryNibble guards against an id generator that is valid but not
// random (a counter, a fixed prefix, a time stamp): over many ids every
// position must take many values.
func TestNewUsesEveryNibble(t *testing.T) {
	var vals [gid.Len]map[byte]bool
	for i := range vals {
		vals[i] = map[byte]bool{}
	}
	for range 2000 {
		id := gid.New()
		for i := 0; i < gid.Len; i++ {
			vals[i][id[i]] = true
		}
	}
	for i, v := range vals {
		if len(v) < 14 { // 16 values; P(missing 3+) over 2000 draws is negligible
			t.Errorf("position %d took only %d distinct values in 2000 ids", i, len(v))
		}
	}
}

var parseTests = []struct {
	name string
	in   string
	ok   bool
}{
	{"canonical digits", "0123456789abcdef0123456789abcdef", true},
	{"all zero", strings.Repeat("0", 32), true},
	{"all f", strings.Repeat("f", 32), true},
	{"empty", "", false},
	{"31 chars", strings.Repeat("a", 31), false},
	{"33 chars", strings.Repeat("a", 33), false},
	{"upper case", "0123456789ABCDEF0123456789ABCDEF", false},
	{"one upper-case letter", "0123456789abcdeF0123456789abcdef", false},
	{"uuid with hyphens", "01234567-89ab-cdef-0123-456789abcdef", false},
	{"leading space", " 123456789abcdef0123456789abcdef", false},
	{"trailing space", "0123456789abcdef0123456789abcde ", false},
	{"space padded 34", " 0123456789abcdef0123456789abcdef ", false},
	{"trailing newline", "0123456789abcdef0123456789abcdef\n", false},
	{"tab inside", "0123456789abcdef\t123456789abcdef", false},
	{"non-hex letter g", "0123456789abcdeg0123456789abcdef", false},
	{"0x prefix", "0x23456789abcdef0123456789abcdef", false},
	{"NUL byte", "0123456789abcdef\x00123456789abcdef", false},
	{"cyrillic a (32 bytes, 31 runes)", "0123456789\u0430bcdef0123456789abcde", false},
	{"fullwidth digit", "\uff10123456789abcdef0123456789abcd", false},
	{"latin-1 byte 0xe1", "0123456789abcdef0123456789abcde\xe1", false},
	{"invalid utf-8", "\xff123456789abcdef0123456789abcdef", false},
	{"base64-ish", "ASNFZ4mrze8BI0VniavN7w==ASNFZ4mr", false},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := gid.Parse(tt.in)
			if tt.ok {
				if err != nil || got != tt.in {
					t.Fatalf("Parse(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.in)
				}
			} else {
				if err == nil {
					t.Fatalf("Parse(%q) = %q, nil; want an error", tt.in, got)
				}
				if !errors.Is(err, gid.ErrInvalid) {
					t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tt.in, err)
				}
				if got != "" {
					t.Errorf("Parse(%q) returned %q alongside its error", tt.in, got)
				}
			}
			if v := gid.Valid(tt.in); v != tt.ok {
				t.Errorf("Valid(%q) = %v, want %v", tt.in, v, tt.ok)
			}
			if m := canonical.MatchString(tt.in); m != tt.ok {
				t.Fatalf("test table is wrong: regexp says %v for %q", m, tt.in)
			}
		})
	}
}

func FuzzGroupHeader(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.in)
	}
	f.Add(gid.New())
	f.Fuzz(func(t *testing.T, s string) {
		want := canonical.MatchString(s)
		got, err := gid.Parse(s)
		if want {
			if err != nil || got != s {
				t.Fatalf("Parse(%q) = %q, %v; want it accepted unchanged", s, got, err)
			}
		} else {
			if err == nil {
				t.Fatalf("Parse(%q) = %q, nil; want it refused (not canonical)", s, got)
			}
			if !errors.Is(err, gid.ErrInvalid) {
				t.Fatalf("Parse(%q): %v does not wrap ErrInvalid", s, err)
			}
		}
		if gid.Valid(s) != want {
			t.Fatalf("Valid(%q) = %v, want %v", s, !want, want)
		}
	})
}
