package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// plotPoint is one in-flight level of a sweep.
type plotPoint struct {
	X     float64 // sagas/s
	P50   float64 // ms
	P99   float64 // ms
	Label string  // e.g. "32"
}

// vline is a labelled vertical reference line (a throughput).
type vline struct {
	X     float64
	Label string
	Color string
}

// niceStep is a round tick step (1, 2 or 5 × 10^k) giving about n ticks
// over [0, max].
func niceStep(max float64, n int) float64 {
	if max <= 0 || n <= 0 {
		return 1
	}
	raw := max / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// writeSVG writes a throughput (x) vs latency (y) plot: one line for p50
// and one for p99, a point per in-flight level, and the reference lines.
// It is plain SVG 1.1 with no scripts or external resources.
func writeSVG(w io.Writer, title string, pts []plotPoint, refs []vline) error {
	const (
		width, height = 760, 460
		left, right   = 70, 30
		top, bottom   = 50, 60
		plotW, plotH  = width - left - right, height - top - bottom
	)
	maxX, maxY := 0.0, 0.0
	for _, p := range pts {
		maxX = math.Max(maxX, p.X)
		maxY = math.Max(maxY, math.Max(p.P50, p.P99))
	}
	for _, r := range refs {
		maxX = math.Max(maxX, r.X)
	}
	xStep, yStep := niceStep(maxX*1.05, 6), niceStep(maxY*1.05, 6)
	xMax := math.Max(xStep, math.Ceil(maxX*1.05/xStep)*xStep)
	yMax := math.Max(yStep, math.Ceil(maxY*1.05/yStep)*yStep)
	sx := func(x float64) float64 { return left + x/xMax*plotW }
	sy := func(y float64) float64 { return top + plotH - y/yMax*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and ticks.
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e5e5"/>`+"\n", sx(x), top, sx(x), top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", sx(x), top+plotH+18, tickLabel(x))
	}
	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, sy(y), left+plotW, sy(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, sy(y)+4, tickLabel(y))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">throughput (sagas/s)</text>`+"\n", left+plotW/2, height-18)
	fmt.Fprintf(&b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">saga latency (ms)</text>`+"\n", top+plotH/2, top+plotH/2)
	// Reference lines.
	for i, r := range refs {
		c := r.Color
		if c == "" {
			c = "#888"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="6 4"/>`+"\n", sx(r.X), top, sx(r.X), top+plotH, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="%s" text-anchor="end">%s</text>`+"\n", sx(r.X)-4, top+14+14*i, c, html.EscapeString(r.Label))
	}
	// Series.
	series := []struct {
		name, color string
		y           func(p plotPoint) float64
	}{{"p50", "#1f77b4", func(p plotPoint) float64 { return p.P50 }}, {"p99", "#d62728", func(p plotPoint) float64 { return p.P99 }}}
	for si, s := range series {
		var path []string
		for _, p := range pts {
			path = append(path, fmt.Sprintf("%.1f,%.1f", sx(p.X), sy(s.y(p))))
		}
		if len(path) > 0 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(path, " "), s.color)
		}
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", sx(p.X), sy(s.y(p)), s.color)
			if s.name == "p99" && p.Label != "" {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%s</text>`+"\n", sx(p.X), sy(s.y(p))-8, html.EscapeString(p.Label))
			}
		}
		lx, ly := left+12, top+16+18*si
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n",
			lx, ly-4, lx+20, ly-4, s.color, lx+26, ly, s.name)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">labels: sagas in flight</text>`+"\n", left+12, top+16+18*len(series))
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) {
		return thousands(v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}
