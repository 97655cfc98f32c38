//go:build failpoint

package failpoint

import "testing"

func TestParse(t *testing.T) {
	ps, err := Parse("a, b:3 ,c:p0.25")
	if err != nil {
		t.Fatal(err)
	}
	if ps["a"].prob != 1 || ps["a"].nth != 0 || ps["b"].nth != 3 || ps["c"].prob != 0.25 {
		t.Fatalf("parsed %+v %+v %+v", *ps["a"], *ps["b"], *ps["c"])
	}
	for _, bad := range []string{"a:0", "a:x", "a:p0", "a:p1.5", "a:p", ":3"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
}

func TestFiresAtTheNthHitOnly(t *testing.T) {
	mu.Lock()
	points = map[string]*point{"x": {nth: 3}, "always": {prob: 1}}
	mu.Unlock()
	once.Do(func() {}) // the environment is not read again
	var got []bool
	for range 5 {
		got = append(got, fires("x"))
	}
	want := []bool{false, false, true, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hits of x:3 fired %v, want %v", got, want)
		}
	}
	if !fires("always") || fires("unarmed") {
		t.Fatal("an armed point without spec must fire, an unarmed one never")
	}
}
