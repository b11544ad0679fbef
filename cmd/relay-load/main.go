// Command relay-load is a load generator that speaks the pyrycode relay
// protocol against any relay URL, so relays can be compared on the same
// hardware. See docs/performance.md.
//
//	go run ./cmd/relay-load --url ws://127.0.0.1:8080                 # rt: 4 echo binaries, 64 phones, 8 in flight, 1 KiB
//	go run ./cmd/relay-load --mode idle --conns 15000 --relay-pid PID # memory per idle connection
//	go run ./cmd/relay-load --mode fanout --phones 16                 # one binary addressing 16 phones
//	go run ./cmd/relay-load --mode churn --rate 1000                  # connect, handshake, disconnect
//	go run ./cmd/relay-load --mode stall --phones 1000 --relay-pid PID --phone-queue-bytes 262144
//	go run ./cmd/relay-load --mode chat                               # 100 phones, a frame every 5–90 s, for 3 minutes
//	go run ./cmd/relay-load --binary-url ws://127.0.0.1:8080 --phone-url ws://127.0.0.1:8081 --relay-pid A,B,NATS  # across two nodes of a cluster
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/pyrycode/pyrycode-relay/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const usage = `relay-load: load generator for pyrycode relays

Modes (--mode):
  rt      E echo binaries (--binaries, default 4), P phones (--phones, 64), each
          keeping W frames (--window, 8) of S bytes (--size, 1024) in flight:
          round trips per second, latency, relay CPU per round trip
  idle    hold binaries and phones open (--conns N, or --binaries/--phones),
          wait --hold, read the relay's memory per connection, then time
          round trips on --probe-phones phones
  fanout  one binary (--binaries 1) sending to P phones (--phones 16), each
          with W (--window 64) unacknowledged frames: frames per second
  churn   phones connect, send one frame through an echo binary, and close,
          at --rate per second (0: as fast as --concurrency allows)
  stall   P phones (--phones 1000) that never read, and a binary sending to
          all of them: the relay's memory against its queue budgets
  chat    traffic like people's: P phones (--phones 100), one echo binary each
          (--binaries), each phone silent for a random pause between
          --pause-min and --pause-max (5s-90s, mostly longer than a relay's
          heartbeat) before each frame, for --duration (3m): every frame must
          come back and no connection drop; round-trip latency

A connection that lies idle past a heartbeat ping is what idle holds and chat
pauses test: make them longer than the relay's --heartbeat-interval plus its
--write-timeout (40s at the relay's defaults). The report says how many pings
the relay sent; none means the run was too short to test that.

Every frame carries a sequence number checked at the other end: lost,
duplicated or reordered frames, and connections the relay dropped, are
reported and make the exit status 1.
With --relay-pid (relay on this machine) the relay's CPU and memory are read
from /proc. The target must be a loopback address unless --allow-remote.

Cluster mode: --binary-url and --phone-url (each defaulting to --url) put
the binaries on one node and the phones on another, in every mode, so every
frame crosses NATS. --relay-pid takes several pids (comma-separated or
repeated: every node and the NATS server) and reports their CPU and memory
summed, and each one's.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	fs := flag.NewFlagSet("relay-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var c loadgen.Config
	var conns int
	var sourceIPs string
	var asJSON, quiet bool
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:8080", "relay base URL (ws:// or wss://); /v1/server and /v1/client are appended")
	fs.StringVar(&c.BinaryURL, "binary-url", "", "base URL the binaries connect to (default --url): one node of a cluster")
	fs.StringVar(&c.PhoneURL, "phone-url", "", "base URL the phones connect to (default --url): another node of the cluster")
	fs.StringVar(&c.Mode, "mode", loadgen.ModeRT, "rt, idle, fanout, churn, stall or chat")
	fs.IntVar(&c.Binaries, "binaries", 0, "binary connections (default per mode: rt 4, idle conns/2, fanout 1, churn 32, stall 1, chat one per phone)")
	fs.IntVar(&c.Phones, "phones", 0, "phone connections, spread round-robin over the binaries (default per mode: rt 64, idle conns/2, fanout 16, stall 1000, chat 100)")
	fs.IntVar(&conns, "conns", 0, "idle: total connections, half binaries and half phones")
	fs.IntVar(&c.Window, "window", 0, "frames in flight per phone (default rt 8, fanout 64)")
	fs.IntVar(&c.Size, "size", 0, "phone frame size in bytes (default 1024; stall 4096)")
	fs.DurationVar(&c.Duration, "duration", 0, "measured time (default 10s; chat 3m)")
	fs.DurationVar(&c.Warmup, "warmup", 0, "unmeasured traffic before it (rt, fanout; default 2s)")
	fs.DurationVar(&c.Hold, "hold", 0, "idle: how long to hold the connections before reading memory (default 5s; longer than the relay's heartbeat interval plus write timeout to test idle connections past a ping)")
	fs.DurationVar(&c.IdleAt, "idle-at", 0, "idle: also read the relay's memory this long after the last connect (shorter than --hold), before any idle trim or heartbeat")
	fs.Float64Var(&c.Rate, "rate", 0, "churn: target cycles per second (default 500; negative: unlimited)")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "parallel dials; churn workers (default 64; churn 32)")
	fs.IntVar(&c.ProbePhones, "probe-phones", 0, "idle: phones that time round trips after the hold (default 4; negative: none, the connections just stay open for --probe-duration)")
	fs.DurationVar(&c.ProbeDuration, "probe-duration", 0, "idle: how long they do (default 2s)")
	fs.DurationVar(&c.PauseMin, "pause-min", 0, "chat: shortest pause before a phone's frame (default 5s, or --pause-max if shorter)")
	fs.DurationVar(&c.PauseMax, "pause-max", 0, "chat: longest pause before a phone's frame (default 90s, or --pause-min if longer)")
	fs.IntVar(&c.PhoneQueueBytes, "phone-queue-bytes", 0, "stall: the relay's --phone-queue-bytes, to compare its memory with (default 4194304)")
	fs.IntVar(&c.StallRecvBuf, "stall-rcvbuf", 0, "stall: the stalled phones' SO_RCVBUF in bytes (default 4096)")
	fs.StringVar(&sourceIPs, "source-ips", "", "local addresses to bind, round-robin, e.g. 127.0.0.2-127.0.0.50,127.0.1.1")
	fs.StringVar(&c.ServerIDPrefix, "server-id-prefix", "", "server-ids are PREFIX-N (default load-<random>)")
	fs.Var((*pidList)(&c.RelayPIDs), "relay-pid", "pid of the relay on this machine: report its CPU and memory; several (comma-separated or repeated: every cluster node and NATS) are summed")
	fs.StringVar(&c.CACert, "ca-cert", "", "wss: PEM certificate to trust (e.g. the relay's self-signed --tls-cert)")
	fs.BoolVar(&c.InsecureSkipVerify, "insecure-skip-verify", false, "wss: do not verify the relay's certificate")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 0, "limit for one connect, TLS and upgrade (default 10s)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 0, "how long outstanding frames may take at the end (default 5s)")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a relay that is not on a loopback address")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fs.BoolVar(&quiet, "quiet", false, "no progress line")
	fs.DurationVar(&c.ProgressInterval, "progress-interval", 0, "progress line period (default 1s on a terminal, else 5s)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay-load: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if conns > 0 {
		if c.Binaries == 0 {
			c.Binaries = max(1, conns/2)
		}
		if c.Phones == 0 {
			c.Phones = conns - c.Binaries
		}
	}
	if c.Rate < 0 {
		c.Rate = -1 // WithDefaults turns it into "unlimited"
	}
	if c.PauseMin < 0 || c.PauseMax < 0 || (c.PauseMax > 0 && c.PauseMin > c.PauseMax) {
		fmt.Fprintf(stderr, "relay-load: want 0 < --pause-min <= --pause-max, got %v and %v\n", c.PauseMin, c.PauseMax)
		return 2
	}
	if sourceIPs == "" && loopbackV4(c.URL) && (c.BinaryURL == "" || loopbackV4(c.BinaryURL)) && (c.PhoneURL == "" || loopbackV4(c.PhoneURL)) {
		// A relay's per-IP limits (20 upgrades in a burst by default) would
		// refuse most of a run from one address; on Linux all of 127/8
		// reaches the loopback relay, so spread over about a thousand.
		sourceIPs = defaultSourceIPs
	}
	if sourceIPs != "" {
		ips, err := loadgen.ParseSourceIPs(sourceIPs)
		if err != nil {
			fmt.Fprintf(stderr, "relay-load: --source-ips: %v\n", err)
			return 2
		}
		c.SourceIPs = ips
	}
	if !quiet {
		c.Progress, c.ProgressTTY = stderr, tty
	}
	res, err := loadgen.Run(ctx, c)
	if err != nil {
		fmt.Fprintf(stderr, "relay-load: %v\n", err)
		return 1
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "relay-load: %v\n", err)
			return 1
		}
	} else {
		res.WriteText(stdout)
	}
	if !res.OK {
		return 1
	}
	return 0
}

// defaultSourceIPs is used against a relay on 127/8 when --source-ips is
// not given: 1,020 addresses, so 15,000 connections stay under 20 per address.
const defaultSourceIPs = "127.0.1.1-127.0.4.254"

// loopbackV4 reports whether rawURL's host is an IPv4 loopback literal.
func loopbackV4(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// pidList is --relay-pid: pids, comma-separated or in repeated flags.
type pidList []int

func (l *pidList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func (l *pidList) Set(v string) error {
	for f := range strings.SplitSeq(v, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		*l = append(*l, p)
	}
	return nil
}
