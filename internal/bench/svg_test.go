package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct {
		max  float64
		n    int
		want float64
	}{{1000, 5, 200}, {1234, 6, 500}, {7, 6, 2}, {0.9, 6, 0.2}, {0, 5, 1}, {100, 10, 10}} {
		if got := niceStep(tc.max, tc.n); got != tc.want {
			t.Errorf("niceStep(%v, %d) = %v, want %v", tc.max, tc.n, got, tc.want)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	pts := []plotPoint{{X: 150, P50: 6.4, P99: 9.6, Label: "1"}, {X: 600, P50: 12, P99: 20, Label: "8"}, {X: 900, P50: 35, P99: 60, Label: "32"}}
	var b bytes.Buffer
	if err := writeSVG(&b, `ksaga <choreography> & "sweep"`, pts, []vline{{X: 1200, Label: "target 1,200/s"}}); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	// Well-formed XML, root <svg>, title escaped.
	dec := xml.NewDecoder(strings.NewReader(svg))
	var root string
	counts := map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			counts[se.Name.Local]++
		}
	}
	if root != "svg" {
		t.Errorf("root element %q", root)
	}
	if counts["polyline"] != 2 || counts["circle"] != 2*len(pts) {
		t.Errorf("want 2 series with %d points each: %v", len(pts), counts)
	}
	for _, want := range []string{"&lt;choreography&gt; &amp; &#34;sweep&#34;", "throughput (sagas/s)", "target 1,200/s", ">1,000<", "p99"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// The x axis reaches the reference line.
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Errorf("bad coordinates:\n%s", svg)
	}
	// No points: still a valid, empty plot.
	b.Reset()
	if err := writeSVG(&b, "empty", nil, nil); err != nil || !strings.HasSuffix(b.String(), "</svg>\n") {
		t.Errorf("empty plot: %v", err)
	}
}
