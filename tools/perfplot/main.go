// Command perfplot draws how the relay scales with the number of open
// connections, for each I/O path, from the JSON results of
// tools/perfplot/sweep.sh, and prints the same numbers as a Markdown table.
// Standard library only.
//
//	go run ./tools/perfplot -o docs/performance-scaling.svg tools/perfplot/testdata/{idle,rt}-*-*.json
//
// The files are relay-load results named MODE-IO-N.json: idle-IO-N.json
// (relay-load --mode idle with N connections: memory per connection at
// --idle-at and after the hold) and rt-IO-N.json (relay-load --mode rt run
// while those N were open: the relay's CPU per round trip), IO being the
// relay's --io. An idle file named idle-N.json (the sweep before it ran
// both paths) is read as a path without a name.
//
//	go run ./tools/perfplot -summary result.json...
//
// prints one line of key figures per result file of any mode instead.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
)

// point is what was measured with conns connections open on one I/O path.
// A figure that was not measured is 0.
type point struct {
	io    string
	conns int

	idleAt     float64 // seconds after the last connect of the first memory reading
	atKiB      float64 // relay RSS growth per connection then
	hold       float64 // seconds of the hold
	holdKiB    float64 // relay RSS growth per connection at its end
	rssMiB     float64 // relay RSS at its end
	idleFailed bool    // the idle run was not OK

	cpuUs        float64 // relay CPU per round trip, rt run next to the conns
	rtPerSec     float64
	rtP50, rtP99 float64 // ms
	rtFailed     bool    // the rt run was not OK
}

func main() {
	out := flag.String("o", "performance-scaling.svg", "SVG file to write")
	summary := flag.Bool("summary", false, "print one line of key figures per result file (any mode) instead of plotting")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: perfplot [-o out.svg] {idle,rt}-IO-N.json... | perfplot -summary result.json...")
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

// parseName splits a result file's name, MODE-IO-N.json or MODE-N.json,
// into its parts; n is 0 when the name has no count.
func parseName(name string) (mode, io string, n int) {
	parts := strings.Split(strings.TrimSuffix(filepath.Base(name), ".json"), "-")
	mode = parts[0]
	if len(parts) > 1 {
		if v, err := strconv.Atoi(parts[len(parts)-1]); err == nil && v > 0 {
			n = v
			parts = parts[:len(parts)-1]
		}
	}
	io = strings.Join(parts[1:], "-")
	return mode, io, n
}

// load reads the files and pairs each idle run with the rt run of the same
// path and count. Points come out by path, in the order the paths first
// appear in files, then by count.
func load(files []string) ([]point, error) {
	type key struct {
		io string
		n  int
	}
	byKey := map[key]*point{}
	var ios []string
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r loadgen.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		rs := r.Relay
		if rs == nil {
			return nil, fmt.Errorf("%s: no relay figures (run relay-load with --relay-pid)", name)
		}
		_, io, n := parseName(name)
		switch r.Mode {
		case loadgen.ModeIdle:
			if n == 0 {
				n = r.Connections.Binaries + r.Connections.Phones
			}
		case loadgen.ModeRT:
			if n == 0 {
				return nil, fmt.Errorf("%s: an rt result's name must say how many connections were open next to it (rt-IO-N.json)", name)
			}
		default:
			return nil, fmt.Errorf("%s: mode %q: want idle or rt results", name, r.Mode)
		}
		k := key{io, n}
		p := byKey[k]
		if p == nil {
			p = &point{io: io, conns: n}
			byKey[k] = p
			if !slices.Contains(ios, io) {
				ios = append(ios, io)
			}
		}
		if r.Mode == loadgen.ModeIdle {
			p.idleAt, p.atKiB = rs.IdleAt, rs.RSSPerConnIdleAt/1024
			p.hold, p.holdKiB = r.Params.Hold, rs.RSSPerConn/1024
			p.rssMiB = float64(rs.RSSAfter) / (1 << 20)
			p.idleFailed = !r.OK
		} else {
			p.cpuUs, p.rtPerSec = rs.CPUPerOpUs, r.OpsPerSec
			p.rtP50, p.rtP99 = r.Latency.P50, r.Latency.P99
			p.rtFailed = !r.OK
		}
	}
	pts := make([]point, 0, len(byKey))
	for _, p := range byKey {
		pts = append(pts, *p)
	}
	sort.Slice(pts, func(i, j int) bool {
		a, b := slices.Index(ios, pts[i].io), slices.Index(ios, pts[j].io)
		if a != b {
			return a < b
		}
		return pts[i].conns < pts[j].conns
	})
	return pts, nil
}

// pathName is how a path is called in the table and the legend.
func pathName(io string) string {
	if io == "" {
		return "relay"
	}
	return "--io " + io
}

// first returns the first non-zero f(p), or 0.
func first(pts []point, f func(point) float64) float64 {
	for _, p := range pts {
		if v := f(p); v != 0 {
			return v
		}
	}
	return 0
}

func table(w io.Writer, pts []point) {
	idleAt := first(pts, func(p point) float64 { return p.idleAt })
	hold := first(pts, func(p point) float64 { return p.hold })
	at, after := "soon after the last connect", "after the hold"
	if idleAt > 0 {
		at = fmt.Sprintf("%g s after the last connect", idleAt)
	}
	if hold > 0 {
		after = fmt.Sprintf("after a %g s hold", hold)
	}
	fmt.Fprintf(w, "| I/O path | Connections | RSS per connection %s | RSS per connection %s | Relay RSS after the hold | Relay CPU per round trip | Round trips/s | Round trip p50 | Round trip p99 |\n", at, after)
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	f := func(v float64, format string) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf(format, v)
	}
	for _, p := range pts {
		note := ""
		if p.idleFailed {
			note += " (idle run FAILED)"
		}
		if p.rtFailed {
			note += " (rt run FAILED)"
		}
		fmt.Fprintf(w, "| `%s` | %d%s | %s | %s | %s | %s | %s | %s | %s |\n", pathName(p.io), p.conns, note,
			f(p.atKiB, "%.2f KiB"), f(p.holdKiB, "%.2f KiB"), f(p.rssMiB, "%.1f MiB"),
			f(p.cpuUs, "%.2f µs"), f(p.rtPerSec, "%.0f"), f(p.rtP50, "%.3f ms"), f(p.rtP99, "%.3f ms"))
	}
}

// Drawing: two panels side by side, a log-scale x axis of connections, a
// legend under each.
const (
	panelW, panelH = 380.0, 240.0
	marginL        = 60.0
	marginT        = 40.0
	marginB        = 50.0
	gap            = 80.0
	legendRow      = 16.0
	memTargetKiB   = 2 // issue 9: an idle plain connection, 15,000 open, 3 s after the last connect
)

// pathColors are the paths' colours, in the order they appear.
var pathColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"}

// line is one series of a panel.
type line struct {
	name  string
	color string
	dash  string // stroke-dasharray, "" for solid
	xs    []int
	ys    []float64
}

func svg(w io.Writer, pts []point) {
	var ios []string
	for _, p := range pts {
		if !slices.Contains(ios, p.io) {
			ios = append(ios, p.io)
		}
	}
	idleAt := first(pts, func(p point) float64 { return p.idleAt })
	hold := first(pts, func(p point) float64 { return p.hold })
	var mem, cpu []line
	collect := func(io string, f func(point) float64) (xs []int, ys []float64) {
		for _, p := range pts {
			if p.io == io && f(p) > 0 {
				xs, ys = append(xs, p.conns), append(ys, f(p))
			}
		}
		return xs, ys
	}
	for i, io := range ios {
		color := pathColors[i%len(pathColors)]
		if xs, ys := collect(io, func(p point) float64 { return p.atKiB }); len(xs) > 0 {
			mem = append(mem, line{fmt.Sprintf("%s, %g s after the last connect", pathName(io), idleAt), color, "", xs, ys})
		}
		if xs, ys := collect(io, func(p point) float64 { return p.holdKiB }); len(xs) > 0 {
			mem = append(mem, line{fmt.Sprintf("%s, after a %g s hold", pathName(io), hold), color, "6,4", xs, ys})
		}
		if xs, ys := collect(io, func(p point) float64 { return p.cpuUs }); len(xs) > 0 {
			cpu = append(cpu, line{pathName(io) + ", 64 phones x 8 in flight, 1 KiB", color, "", xs, ys})
		}
	}
	rows := max(len(mem), len(cpu), 1)
	width := marginL + 2*panelW + gap + 20
	height := marginT + panelH + marginB + float64(rows+1)*legendRow
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	minC, maxC := pts[0].conns, pts[0].conns
	for _, p := range pts {
		minC, maxC = min(minC, p.conns), max(maxC, p.conns)
	}
	panel(w, marginL, marginT, "Relay RSS per idle connection (KiB, log)", true, memTargetKiB, minC, maxC, mem)
	panel(w, marginL+panelW+gap, marginT, "Relay CPU per round trip with N open (µs)", false, 0, minC, maxC, cpu)
	fmt.Fprintln(w, "</svg>")
}

func panel(w io.Writer, x0, y0 float64, title string, logY bool, ref float64, minC, maxC int, ls []line) {
	minX, maxX := math.Log10(float64(max(1, minC))), math.Log10(float64(max(2, maxC)))
	if maxX-minX < 1 {
		maxX = minX + 1
	}
	maxY, minY := 0.0, math.Inf(1)
	for _, l := range ls {
		for _, v := range l.ys {
			maxY, minY = max(maxY, v), min(minY, v)
		}
	}
	if ref > 0 {
		minY = min(minY, ref)
	}
	if math.IsInf(minY, 1) {
		minY = 1
	}
	maxY = niceCeil(max(maxY, ref))
	px := func(c int) float64 { return x0 + (math.Log10(float64(max(1, c)))-minX)/(maxX-minX)*panelW }
	py := func(v float64) float64 { return y0 + panelH - v/maxY*panelH }
	var ticks []float64
	for k := 0; k <= 4; k++ {
		ticks = append(ticks, maxY*float64(k)/4)
	}
	if logY {
		lo, hi := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
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
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-dasharray="2,3"/>`+"\n", x0, py(ref), x0+panelW, py(ref))
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f" fill="#666" text-anchor="end">target %s KiB</text>`+"\n", x0+panelW-4, py(ref)-4, num(ref))
	}
	for i, l := range ls {
		dash := ""
		if l.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, l.dash)
		}
		var b strings.Builder
		for j := range l.xs {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", px(l.xs[j]), py(l.ys[j]))
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", b.String(), l.color, dash)
		for j := range l.xs {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(l.xs[j]), py(l.ys[j]), l.color)
		}
		ly := y0 + panelH + marginB + float64(i)*legendRow // legend
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x0, ly-4, x0+30, ly-4, l.color, dash)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x0+36, ly, esc(l.name))
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
