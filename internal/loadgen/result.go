package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is what one run measured. It is also the --json output.
type Result struct {
	Mode string `json:"mode"`
	URL  string `json:"url,omitempty"`
	// BinaryURL and PhoneURL are set instead of URL when binaries and
	// phones connected to different relays (nodes of one cluster).
	BinaryURL string    `json:"binary_url,omitempty"`
	PhoneURL  string    `json:"phone_url,omitempty"`
	Started   time.Time `json:"started"`
	Params    Params    `json:"params"`

	Connections ConnStats `json:"connections"`

	// Ops counts what the mode measures in the measured window: round trips
	// (rt, idle probe, chat), frames delivered to phones (fanout), connect +
	// handshake + disconnect cycles (churn), frames the binary sent (stall).
	OpUnit    string  `json:"op_unit"`
	Ops       uint64  `json:"ops"`
	Seconds   float64 `json:"seconds"` // length of the measured window
	OpsPerSec float64 `json:"ops_per_s"`

	Latency        Latency `json:"latency"`         // per op (round trip, frame, cycle)
	ConnectLatency Latency `json:"connect_latency"` // TCP (+TLS) + upgrade
	Frames         Frames  `json:"frames"`

	// Pings counts the heartbeat pings the relay sent to the tool's
	// connections (all answered). None in an idle or chat run means it was
	// shorter than the relay's heartbeat interval, so it never tested a
	// connection that lay idle past a ping.
	Pings uint64 `json:"pings_received"`

	Errors       map[string]int64  `json:"errors"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	CloseNotices map[string]int64  `json:"close_notices,omitempty"`

	Relay *RelayStats `json:"relay,omitempty"`
	Tool  ToolStats   `json:"tool"`
	Stall *StallStats `json:"stall,omitempty"`
	Chat  *ChatStats  `json:"chat,omitempty"`

	// OK: no frame lost, duplicated, reordered or corrupted, no errors, and
	// no connection dropped.
	OK bool `json:"ok"`
}

// Params echoes the run's configuration.
type Params struct {
	Binaries    int     `json:"binaries"`
	Phones      int     `json:"phones"`
	Window      int     `json:"window,omitempty"`
	Size        int     `json:"frame_bytes"`
	Duration    float64 `json:"duration_s"`
	Warmup      float64 `json:"warmup_s,omitempty"`
	Hold        float64 `json:"hold_s,omitempty"`
	Rate        float64 `json:"target_rate,omitempty"`
	PauseMin    float64 `json:"pause_min_s,omitempty"`
	PauseMax    float64 `json:"pause_max_s,omitempty"`
	Concurrency int     `json:"concurrency"`
	SourceIPs   int     `json:"source_ips"`
	TLS         bool    `json:"tls"`
}

// ConnStats counts connections.
type ConnStats struct {
	Binaries int   `json:"binaries"` // connected and registered
	Phones   int   `json:"phones"`
	Failed   int64 `json:"failed"` // dials that failed
	Retries  int64 `json:"retries,omitempty"`
	// Dropped counts connections that ended before the tool closed them
	// (closed by the relay, reset, EOF): each is also an error.
	Dropped int64 `json:"dropped"`
}

// Frames is the end-to-end sequence check.
type Frames struct {
	Sent       uint64 `json:"sent"`
	Received   uint64 `json:"received"` // distinct frames that arrived
	Lost       uint64 `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	Reordered  uint64 `json:"reordered"`
	Corrupt    uint64 `json:"corrupt"`
}

// RelayStats is what /proc said about the relay process (--relay-pid);
// with several (the nodes of a cluster and its NATS server), their sums.
type RelayStats struct {
	PID            int         `json:"pid"`               // the first
	Procs          []ProcStats `json:"procs,omitempty"`   // each, when there are several
	CPUSeconds     float64     `json:"cpu_s"`             // user+system during the measured window
	CPUPerOpUs     float64     `json:"cpu_us_per_op"`     // CPUSeconds / Ops
	CPUSecPer100k  float64     `json:"cpu_s_per_100k_op"` // CPUSeconds per 100,000 ops
	RSSBefore      int64       `json:"rss_before_bytes"`  // before the tool connected
	RSSAfter       int64       `json:"rss_after_bytes"`   // with every connection open (idle: after the hold)
	RSSPeak        int64       `json:"rss_peak_bytes"`    // highest sample while running
	Conns          int         `json:"conns"`             // connections RSSPerConn divides by
	RSSPerConn     float64     `json:"rss_per_conn_bytes"`
	CPUUtilisation float64     `json:"cpu_utilisation"`      // CPU seconds per wall second in the window
	HoldCPUSeconds float64     `json:"hold_cpu_s,omitempty"` // idle: CPU while the connections were held
	// idle with --idle-at: memory that long after the last connect (before
	// any trim or heartbeat), and per connection.
	IdleAt           float64 `json:"idle_at_s,omitempty"`
	RSSIdleAt        int64   `json:"rss_idle_at_bytes,omitempty"`
	RSSPerConnIdleAt float64 `json:"rss_per_conn_idle_at_bytes,omitempty"`
	// idle with --idle-at: CPU from that reading to the end of the hold,
	// when the connect burst and what it left behind (its garbage, the
	// kernel's work on its sockets) are over, and the seconds it spans.
	SettledCPUSeconds float64 `json:"settled_cpu_s,omitempty"`
	Settled           float64 `json:"settled_s,omitempty"`
}

// ProcStats is one of several relay processes: the memory of this one
// alone (idle: after the hold) and its CPU in the measured window.
type ProcStats struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_s"`
	RSSBefore  int64   `json:"rss_before_bytes"`
	RSSAfter   int64   `json:"rss_after_bytes"`
}

// ToolStats is the load tool's own cost, to show it was not the bottleneck.
type ToolStats struct {
	CPUSeconds float64 `json:"cpu_s"`
	CPUs       int     `json:"cpus"`
	GoVersion  string  `json:"go_version"`
}

// StallStats is the stall mode's memory check.
type StallStats struct {
	PhoneQueueBytes int64 `json:"phone_queue_bytes"`
	BudgetSum       int64 `json:"budget_sum_bytes"`      // phones × phone_queue_bytes
	RSSGrowth       int64 `json:"rss_peak_growth_bytes"` // peak RSS − RSS before sending
	PhonesClosed    int64 `json:"phones_closed"`         // close notices received
	Bounded         bool  `json:"bounded"`               // RSSGrowth < BudgetSum
	RSSAfterClose   int64 `json:"rss_after_bytes"`       // once the flood stopped
}

// ChatStats is what the chat mode's phones did.
type ChatStats struct {
	LongestPause float64 `json:"longest_pause_s"` // longest silence before a frame a phone sent
	// AfterPing counts frames sent after a silence in which the relay pinged
	// the sending phone: the relay's last write on that connection was a
	// heartbeat, the case that lost frames before the fix for stale write
	// deadlines.
	AfterPing    uint64 `json:"frames_after_ping"`
	SilentPhones int    `json:"silent_phones"` // phones whose first pause outlasted the run
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// WriteText writes a human-readable report.
func (r *Result) WriteText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	if r.URL != "" {
		p("relay-load %s against %s\n", r.Mode, r.URL)
	} else {
		p("relay-load %s: binaries on %s, phones on %s\n", r.Mode, r.BinaryURL, r.PhoneURL)
	}
	p("  connections  %d binaries, %d phones (%d failed dials", r.Connections.Binaries, r.Connections.Phones, r.Connections.Failed)
	if r.Connections.Retries > 0 {
		p(", %d retried", r.Connections.Retries)
	}
	if r.Connections.Dropped > 0 {
		p(", %d DROPPED", r.Connections.Dropped)
	}
	p(")\n")
	if r.Ops > 0 || r.Mode != ModeIdle {
		p("  throughput   %d %ss in %.2fs = %.0f/s\n", r.Ops, strings.ReplaceAll(r.OpUnit, "_", " "), r.Seconds, r.OpsPerSec)
	}
	lat := func(name string, l Latency) {
		if l.Count == 0 {
			return
		}
		p("  %-12s p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms (n=%d)\n", name, l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
	}
	lat("latency", r.Latency)
	lat("connect", r.ConnectLatency)
	f := r.Frames
	if f.Sent > 0 {
		p("  frames       sent %d, received %d, lost %d, duplicated %d, reordered %d, corrupt %d\n",
			f.Sent, f.Received, f.Lost, f.Duplicated, f.Reordered, f.Corrupt)
	}
	if rs := r.Relay; rs != nil {
		if len(rs.Procs) > 1 {
			pids := make([]string, len(rs.Procs))
			for i, ps := range rs.Procs {
				pids[i] = strconv.Itoa(ps.PID)
			}
			p("  relay pids %s together: cpu %.2fs (%.0f%% of one core)", strings.Join(pids, "+"), rs.CPUSeconds, 100*rs.CPUUtilisation)
		} else {
			p("  relay pid %d: cpu %.2fs (%.0f%% of one core)", rs.PID, rs.CPUSeconds, 100*rs.CPUUtilisation)
		}
		if r.Ops > 0 {
			p(", %.1f µs per %s, %.2f s per 100k", rs.CPUPerOpUs, strings.ReplaceAll(r.OpUnit, "_", " "), rs.CPUSecPer100k)
		}
		p("\n")
		p("               rss %.1f MiB before, %.1f MiB after, %.1f MiB peak", mib(rs.RSSBefore), mib(rs.RSSAfter), mib(rs.RSSPeak))
		if rs.Conns > 0 {
			p(", %.2f KiB per connection (%d)", rs.RSSPerConn/1024, rs.Conns)
		}
		if rs.IdleAt > 0 {
			p("\n               rss %.1f MiB %gs after the last connect, %.2f KiB per connection", mib(rs.RSSIdleAt), rs.IdleAt, rs.RSSPerConnIdleAt/1024)
		}
		if rs.Settled > 0 {
			p("\n               cpu %.2fs from then to the end of the hold (%.2f%% of one core)", rs.SettledCPUSeconds, 100*rs.SettledCPUSeconds/rs.Settled)
		}
		p("\n")
		for _, ps := range rs.Procs {
			p("               pid %d: cpu %.2fs, rss %.1f MiB before, %.1f MiB after\n", ps.PID, ps.CPUSeconds, mib(ps.RSSBefore), mib(ps.RSSAfter))
		}
	}
	if c := r.Chat; c != nil {
		p("  pauses       %.3g–%.3g s before each frame, longest %.3g s; %d frames sent after a ping; %d phones sent nothing\n",
			r.Params.PauseMin, r.Params.PauseMax, c.LongestPause, c.AfterPing, c.SilentPhones)
	}
	switch {
	case r.Pings > 0:
		p("  heartbeats   %d pings from the relay, all answered\n", r.Pings)
	case r.Mode == ModeIdle || r.Mode == ModeChat:
		p("  heartbeats   no ping arrived: the run was shorter than the relay's heartbeat interval, so no\n")
		p("               connection was tested past a ping (hold or pause longer than --heartbeat-interval)\n")
	}
	if s := r.Stall; s != nil {
		p("  stall        %d phones closed by the relay; rss grew %.1f MiB at peak vs budgets %.1f MiB (%d × %d B): bounded=%v; %.1f MiB after\n",
			s.PhonesClosed, mib(s.RSSGrowth), mib(s.BudgetSum), r.Connections.Phones, s.PhoneQueueBytes, s.Bounded, mib(s.RSSAfterClose))
	}
	p("  tool cpu     %.2fs (%d CPUs, %s)\n", r.Tool.CPUSeconds, r.Tool.CPUs, r.Tool.GoVersion)
	if len(r.CloseNotices) > 0 {
		p("  notices      %s\n", fmtCounts(r.CloseNotices))
	}
	if len(r.Errors) == 0 {
		p("  errors       none\n")
	} else {
		p("  errors       %s\n", fmtCounts(r.Errors))
		for k, v := range r.ErrorSamples {
			p("               e.g. %s: %s\n", k, v)
		}
	}
	if r.OK {
		p("  result       OK\n")
	} else {
		p("  result       FAILED (errors, dropped connections, or frames lost, duplicated, reordered or corrupt)\n")
	}
}

func fmtCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s ×%d", k, m[k])
	}
	return b.String()
}
