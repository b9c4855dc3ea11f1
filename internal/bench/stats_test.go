package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond},
		{99.9, 100 * time.Millisecond}, {0.5, time.Millisecond}, {1, time.Millisecond}} {
		if got := percentile(s, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	one := []time.Duration{7 * time.Microsecond}
	for _, p := range []float64{1, 50, 99, 100} {
		if got := percentile(one, p); got != 7*time.Microsecond {
			t.Errorf("single sample p%v = %v", p, got)
		}
	}
}

func TestSummarize(t *testing.T) {
	in := []time.Duration{5 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	orig := slices.Clone(in)
	l := summarize(in)
	if !slices.Equal(in, orig) {
		t.Errorf("summarize reordered its input: %v", in)
	}
	want := Latency{Count: 5, MinMs: 1, MeanMs: 3, P50Ms: 3, P90Ms: 5, P95Ms: 5, P99Ms: 5, P999Ms: 5, MaxMs: 5}
	if l != want {
		t.Errorf("summarize = %+v, want %+v", l, want)
	}
	if (summarize(nil) != Latency{}) {
		t.Errorf("empty summary not zero")
	}
	// Microsecond rounding.
	if l := summarize([]time.Duration{1234567 * time.Nanosecond}); l.P50Ms != 1.235 {
		t.Errorf("rounding: %v", l.P50Ms)
	}
}

// Percentiles are monotonic in p and bounded by min and max, whatever the
// sample order.
func TestSummarizeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		n := 1 + rng.IntN(500)
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
		}
		l := summarize(s)
		seq := []float64{l.MinMs, l.P50Ms, l.P90Ms, l.P95Ms, l.P99Ms, l.P999Ms, l.MaxMs}
		if !slices.IsSorted(seq) || l.Count != n || l.MeanMs < l.MinMs || l.MeanMs > l.MaxMs {
			t.Fatalf("n=%d: %+v", n, l)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestMixer(t *testing.T) {
	kinds := []Kind{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	m := newMixer(kinds, []float64{80, 10, 10}, 1, 1)
	n := map[string]int{}
	for range 100000 {
		n[m.next().Name]++
	}
	if n["a"] < 79000 || n["a"] > 81000 || n["b"] < 9500 || n["c"] < 9500 {
		t.Errorf("mix 80/10/10 gave %v", n)
	}
	only := newMixer(kinds, []float64{0, 0, 5}, 1, 1)
	for range 100 {
		if k := only.next(); k.Name != "c" {
			t.Fatalf("mix 0/0/5 gave %s", k.Name)
		}
	}
	// Same seed and stream, same sequence.
	a, b := newMixer(kinds, []float64{1, 1, 1}, 9, 3), newMixer(kinds, []float64{1, 1, 1}, 9, 3)
	for range 100 {
		if a.next() != b.next() {
			t.Fatal("mixer not deterministic")
		}
	}
}

func TestParseMixAndLevels(t *testing.T) {
	w := &Workload{Kinds: []Kind{{Name: "a"}, {Name: "b"}, {Name: "c"}}}
	if m, err := parseMix("80, 10,10", w); err != nil || !slices.Equal(m, []float64{80, 10, 10}) {
		t.Errorf("parseMix: %v %v", m, err)
	}
	for _, bad := range []string{"1,2", "a,b,c", "-1,1,1", "0,0,0", "1,2,3,4"} {
		if _, err := parseMix(bad, w); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
	if got := formatMix(OrderSaga.Mix); got != "80,10,10" {
		t.Errorf("the order saga's default mix is %q", got)
	}
	if l, err := parseLevels("1,2,4"); err != nil || !slices.Equal(l, []int{1, 2, 4}) {
		t.Errorf("parseLevels: %v %v", l, err)
	}
	for _, bad := range []string{"", "0", "1,x", "-2"} {
		if _, err := parseLevels(bad); err == nil {
			t.Errorf("parseLevels(%q) accepted", bad)
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", 12.5: "13"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}
