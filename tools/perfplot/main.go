// Command perfplot draws how the relay scales with the number of open
// connections from relay-load's JSON results (idle mode, one file per run)
// and prints the same numbers as a Markdown table. Standard library only.
//
//	go run ./tools/perfplot -o docs/performance-scaling.svg tools/perfplot/testdata/idle-*.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
)

// point is one run: connections and what was measured with them open.
type point struct {
	conns      int
	rssMiB     float64
	perConnKiB float64
	p50, p99   float64 // probe round trip, ms
	connP99    float64 // connect latency p99, ms
}

func main() {
	out := flag.String("o", "performance-scaling.svg", "SVG file to write")
	summary := flag.Bool("summary", false, "print one line of key figures per result file (any mode) instead of plotting")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: perfplot [-o out.svg | -summary] result.json...")
		os.Exit(2)
	}
	if *summary {
		if err := summarize(os.Stdout, flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, "perfplot:", err)
			os.Exit(1)
		}
		return
	}
	pts, err := load(flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfplot:", err)
		os.Exit(1)
	}
	table(os.Stdout, pts)
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "perfplot:", err)
		os.Exit(1)
	}
	svg(f, pts)
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "perfplot:", err)
		os.Exit(1)
	}
}

func load(files []string) ([]point, error) {
	var pts []point
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r loadgen.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if r.Relay == nil {
			return nil, fmt.Errorf("%s: no relay figures (run relay-load with --relay-pid)", name)
		}
		pts = append(pts, point{
			conns:      r.Connections.Binaries + r.Connections.Phones,
			rssMiB:     float64(r.Relay.RSSAfter) / (1 << 20),
			perConnKiB: r.Relay.RSSPerConn / 1024,
			p50:        r.Latency.P50,
			p99:        r.Latency.P99,
			connP99:    r.ConnectLatency.P99,
		})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].conns < pts[j].conns })
	return pts, nil
}

func table(w io.Writer, pts []point) {
	fmt.Fprintln(w, "| Connections | Relay RSS | RSS per connection | Round trip p50 | Round trip p99 | Connect p99 |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|")
	for _, p := range pts {
		fmt.Fprintf(w, "| %d | %.1f MiB | %.2f KiB | %.3f ms | %.3f ms | %.2f ms |\n",
			p.conns, p.rssMiB, p.perConnKiB, p.p50, p.p99, p.connP99)
	}
}

// Drawing: three panels side by side, a log-scale x axis of connections.
const (
	panelW, panelH = 300.0, 220.0
	marginL        = 60.0
	marginT        = 40.0
	marginB        = 50.0
	gap            = 80.0
)

type series struct {
	name  string
	color string
	y     func(point) float64
}

func svg(w io.Writer, pts []point) {
	width := marginL + 3*panelW + 2*gap + 20
	height := marginT + panelH + marginB + 20
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	panels := []struct {
		title string
		logY  bool
		ref   float64 // a dashed target line, 0 for none
		ss    []series
	}{
		{"Relay RSS per connection (KiB, log)", true, 8, []series{{"RSS growth / connection", "#1f77b4", func(p point) float64 { return p.perConnKiB }}}},
		{"Relay RSS (MiB)", false, 0, []series{{"RSS", "#2ca02c", func(p point) float64 { return p.rssMiB }}}},
		{"Round trip with N open (ms)", false, 0, []series{
			{"p50", "#1f77b4", func(p point) float64 { return p.p50 }},
			{"p99", "#d62728", func(p point) float64 { return p.p99 }},
		}},
	}
	for i, pn := range panels {
		x0 := marginL + float64(i)*(panelW+gap)
		panel(w, x0, marginT, pn.title, pn.logY, pn.ref, pts, pn.ss)
	}
	fmt.Fprintln(w, "</svg>")
}

func panel(w io.Writer, x0, y0 float64, title string, logY bool, ref float64, pts []point, ss []series) {
	minX, maxX := math.Log10(float64(max(1, pts[0].conns))), math.Log10(float64(max(2, pts[len(pts)-1].conns)))
	if maxX-minX < 1 {
		maxX = minX + 1
	}
	maxY := 0.0
	for _, s := range ss {
		for _, p := range pts {
			maxY = max(maxY, s.y(p))
		}
	}
	maxY = niceCeil(max(maxY, ref))
	px := func(c int) float64 { return x0 + (math.Log10(float64(max(1, c)))-minX)/(maxX-minX)*panelW }
	py := func(v float64) float64 { return y0 + panelH - v/maxY*panelH }
	var ticks []float64
	for k := 0; k <= 4; k++ {
		ticks = append(ticks, maxY*float64(k)/4)
	}
	if logY {
		lo, hi := math.Floor(math.Log10(minPos(pts, ss, ref))), math.Ceil(math.Log10(maxY))
		if hi-lo < 1 {
			hi = lo + 1
		}
		py = func(v float64) float64 { return y0 + panelH - (math.Log10(max(v, 1e-9))-lo)/(hi-lo)*panelH }
		ticks = ticks[:0]
		for e := lo; e <= hi; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	}
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+panelW/2, y0-15, esc(title))
	fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", x0, y0, panelW, panelH)
	for _, v := range ticks { // y grid
		y := py(v)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, y, x0+panelW, y)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-5, y+4, num(v))
	}
	for e := math.Ceil(minX); e <= maxX+1e-9; e++ { // x decades
		x := x0 + (e-minX)/(maxX-minX)*panelW
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, y0, x, y0+panelH)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, y0+panelH+16, num(math.Pow(10, e)))
	}
	fmt.Fprintf(w, `<text x="%.1f" y="%.1f" text-anchor="middle">open connections (log scale)</text>`+"\n", x0+panelW/2, y0+panelH+36)
	if ref > 0 {
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-dasharray="6,4"/>`+"\n", x0, py(ref), x0+panelW, py(ref))
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="#d62728">target %s</text>`+"\n", x0+4, py(ref)+14, num(ref))
	}
	for si, s := range ss {
		var b strings.Builder
		for i, p := range pts {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", px(p.conns), py(s.y(p)))
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", b.String(), s.color)
		for _, p := range pts {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.conns), py(s.y(p)), s.color)
		}
		if len(ss) > 1 {
			fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", x0+8, y0+16+float64(si)*14, s.color, esc(s.name))
		}
	}
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// summarize prints the figures docs/performance.md quotes, one file a line.
func summarize(w io.Writer, files []string) error {
	fmt.Fprintln(w, "| Run | Mode | Conns | Rate | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | Relay CPU µs/op | Relay RSS/conn KiB | Lost/dup/reord | Other | OK |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		var r loadgen.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cpu, perConn, other := "", "", ""
		if rs := r.Relay; rs != nil {
			cpu = fmt.Sprintf("%.2f", rs.CPUPerOpUs)
			perConn = fmt.Sprintf("%.2f", rs.RSSPerConn/1024)
			other = fmt.Sprintf("rss %.1f MiB", float64(rs.RSSAfter)/(1<<20))
		}
		if st := r.Stall; st != nil {
			other = fmt.Sprintf("closed %d; peak growth %.1f MiB of budgets %.1f MiB; bounded %v",
				st.PhonesClosed, float64(st.RSSGrowth)/(1<<20), float64(st.BudgetSum)/(1<<20), st.Bounded)
		}
		if r.Mode == loadgen.ModeChurn && r.ConnectLatency.Count > 0 {
			other += fmt.Sprintf("; connect p50 %.2f p99 %.2f ms", r.ConnectLatency.P50, r.ConnectLatency.P99)
		}
		if c := r.Chat; c != nil {
			other += fmt.Sprintf("; pauses %g–%g s, longest %.1f s; %d frames after a ping",
				r.Params.PauseMin, r.Params.PauseMax, c.LongestPause, c.AfterPing)
		}
		if r.Mode == loadgen.ModeIdle || r.Mode == loadgen.ModeChat {
			other += fmt.Sprintf("; %d heartbeat pings", r.Pings)
			if r.Params.Hold > 0 {
				other += fmt.Sprintf(" in a %g s hold", r.Params.Hold)
			}
		}
		if d := r.Connections.Dropped; d > 0 {
			other += fmt.Sprintf("; %d connections DROPPED", d)
		}
		l := r.Latency
		f := r.Frames
		fmt.Fprintf(w, "| %s | %s%s | %d | %.0f %s/s | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s | %d/%d/%d | %s | %v |\n",
			strings.TrimSuffix(name[strings.LastIndexByte(name, '/')+1:], ".json"), r.Mode, map[bool]string{true: "+tls"}[r.Params.TLS],
			r.Connections.Binaries+r.Connections.Phones, r.OpsPerSec, r.OpUnit, l.P50, l.P90, l.P99, l.P999, l.Max,
			cpu, perConn, f.Lost, f.Duplicated, f.Reordered, other, r.OK)
	}
	return nil
}

// minPos is the smallest positive value the panel shows.
func minPos(pts []point, ss []series, ref float64) float64 {
	m := math.Inf(1)
	if ref > 0 {
		m = ref
	}
	for _, s := range ss {
		for _, p := range pts {
			if v := s.y(p); v > 0 {
				m = min(m, v)
			}
		}
	}
	if math.IsInf(m, 1) {
		return 1
	}
	return m
}
