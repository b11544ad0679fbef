package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Modes.
const (
	ModeRT     = "rt"     // echo binaries, phones keeping frames in flight
	ModeIdle   = "idle"   // hold connections open, measure memory
	ModeFanout = "fanout" // one binary addressing many phones
	ModeChurn  = "churn"  // connect, handshake, disconnect at a rate
	ModeStall  = "stall"  // phones that never read, a binary sending to them
	ModeChat   = "chat"   // phones sending a frame now and then, long pauses between
)

// Chat mode's default pauses.
const (
	DefaultPauseMin = 5 * time.Second
	DefaultPauseMax = 90 * time.Second
)

// Config describes one run. Zero fields take the mode's defaults
// (WithDefaults).
type Config struct {
	Mode string
	URL  string // ws:// or wss:// base URL of the relay

	// BinaryURL and PhoneURL, when set, are where binaries and phones
	// connect instead of URL: two nodes of a relay cluster, so that every
	// phone reaches its binary across nodes.
	BinaryURL string
	PhoneURL  string

	Binaries int           // binary connections
	Phones   int           // phone connections, spread round-robin over binaries
	Window   int           // frames in flight per phone (rt, fanout)
	Size     int           // phone frame size in bytes
	Duration time.Duration // measured time (rt, fanout, churn, stall, chat)
	Warmup   time.Duration // unmeasured time before it (rt, fanout)
	Hold     time.Duration // idle: how long connections are held before memory is read
	IdleAt   time.Duration // idle: also read memory this long after the last connect (0: no; less than Hold)

	Rate        float64 // churn: target operations per second (0: as fast as Concurrency allows)
	Concurrency int     // parallel dials while connecting; churn workers

	ProbePhones   int           // idle: phones that measure round trips after the hold
	ProbeDuration time.Duration // idle: how long they do

	// chat: each phone is silent for a random pause in [PauseMin, PauseMax]
	// before each frame it sends.
	PauseMin time.Duration
	PauseMax time.Duration

	StallRecvBuf    int // stall: phones' SO_RCVBUF
	PhoneQueueBytes int // stall: the relay's --phone-queue-bytes, for the budget comparison

	SourceIPs      []net.IP // local addresses to bind, round-robin
	ServerIDPrefix string   // server-ids are <prefix>-<n>; default random
	RelayPIDs      []int    // relay processes on this machine (every node, and NATS), for CPU and memory summed

	CACert             string // wss: PEM file of a CA (or self-signed certificate) to trust
	InsecureSkipVerify bool   // wss: do not verify the relay's certificate

	ConnectTimeout time.Duration // one dial, TLS and upgrade
	DrainTimeout   time.Duration // how long outstanding frames may take at the end
	AllowRemote    bool          // permit a relay that is not on a loopback address

	Progress         io.Writer     // live progress (nil: none)
	ProgressTTY      bool          // rewrite one line instead of printing lines
	ProgressInterval time.Duration // default 1 s on a terminal, 5 s otherwise
}

// WithDefaults fills the zero fields of c with the mode's defaults.
func (c Config) WithDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeRT
	}
	if c.URL == "" {
		c.URL = "ws://127.0.0.1:8080"
	}
	if c.BinaryURL == "" {
		c.BinaryURL = c.URL
	}
	if c.PhoneURL == "" {
		c.PhoneURL = c.URL
	}
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	switch c.Mode {
	case ModeRT:
		set(&c.Binaries, 4)
		set(&c.Phones, 64)
		set(&c.Window, 8)
	case ModeIdle:
		set(&c.Binaries, 500)
		set(&c.Phones, c.Binaries)
		set(&c.ProbePhones, min(4, c.Phones))
		dur(&c.ProbeDuration, 2*time.Second)
	case ModeFanout:
		set(&c.Binaries, 1)
		set(&c.Phones, 16)
		set(&c.Window, 64)
	case ModeChurn:
		set(&c.Concurrency, 32)
		set(&c.Binaries, c.Concurrency) // few phones per id at once, far from the per-id cap
		if c.Rate == 0 {
			c.Rate = 500
		}
	case ModeStall:
		set(&c.Binaries, 1)
		set(&c.Phones, 1000)
		set(&c.Size, 4096)
		set(&c.StallRecvBuf, 4096)
		set(&c.PhoneQueueBytes, 4<<20)
	case ModeChat:
		// One phone per binary, as for most people, so both of the relay's
		// legs lie idle for the whole pause.
		set(&c.Phones, 100)
		set(&c.Binaries, c.Phones)
		// Pauses mostly longer than a heartbeat (30 s) plus the write
		// timeout (10 s) of a relay at its defaults; a given bound keeps the
		// other inside it.
		switch {
		case c.PauseMin == 0 && c.PauseMax == 0:
			c.PauseMin, c.PauseMax = DefaultPauseMin, DefaultPauseMax
		case c.PauseMin == 0:
			c.PauseMin = min(DefaultPauseMin, c.PauseMax)
		case c.PauseMax == 0:
			c.PauseMax = max(DefaultPauseMax, c.PauseMin)
		}
		dur(&c.Duration, 3*time.Minute)
	}
	if c.Rate < 0 {
		c.Rate = 0
	}
	set(&c.Size, 1024)
	set(&c.Concurrency, 64)
	dur(&c.Duration, 10*time.Second)
	dur(&c.Warmup, 2*time.Second)
	dur(&c.Hold, 5*time.Second)
	dur(&c.ConnectTimeout, 10*time.Second)
	dur(&c.DrainTimeout, 5*time.Second)
	if c.Progress != nil && c.ProgressInterval == 0 {
		c.ProgressInterval = 5 * time.Second
		if c.ProgressTTY {
			c.ProgressInterval = time.Second
		}
	}
	return c
}

// target is the parsed relay URL.
type target struct {
	addr    string // host:port to dial
	host    string // Host header
	prefix  string // path prefix before /v1/...
	tls     *tls.Config
	display string
}

// target parses raw, the URL given as flag (for messages).
func (c *Config) target(flag, raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	t := &target{host: u.Host, prefix: strings.TrimSuffix(u.Path, "/"), display: u.Redacted()}
	port := u.Port()
	switch u.Scheme {
	case "ws", "http":
		if port == "" {
			port = "80"
		}
	case "wss", "https":
		if port == "" {
			port = "443"
		}
		t.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
		if c.CACert != "" {
			pem, err := os.ReadFile(c.CACert)
			if err != nil {
				return nil, fmt.Errorf("--ca-cert: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca-cert %s: no PEM certificate found", c.CACert)
			}
			t.tls.RootCAs = pool
		}
	default:
		return nil, fmt.Errorf("%s: scheme must be ws or wss, got %q", flag, u.Scheme)
	}
	for _, p := range []string{"/v1/server", "/v1/client"} {
		t.prefix = strings.TrimSuffix(t.prefix, p)
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if !c.AllowRemote {
		ips, err := net.LookupIP(u.Hostname())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		for _, ip := range ips {
			if !ip.IsLoopback() {
				return nil, fmt.Errorf("%s: %s is not a loopback address; pass --allow-remote to load a relay on another machine", flag, u.Hostname())
			}
		}
	}
	return t, nil
}

// ParseSourceIPs parses a comma-separated list of addresses and ranges such
// as "127.0.0.2-127.0.0.50,127.0.1.1". At most 65536 addresses.
func ParseSourceIPs(s string) ([]net.IP, error) {
	var out []net.IP
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(strings.TrimSpace(lo)).To4()
		if a == nil {
			if ip := net.ParseIP(part); ip != nil && !isRange {
				out = append(out, ip)
				continue
			}
			return nil, fmt.Errorf("bad source address %q", part)
		}
		b := a
		if isRange {
			b = net.ParseIP(strings.TrimSpace(hi)).To4()
			if b == nil {
				return nil, fmt.Errorf("bad source address range %q", part)
			}
		}
		x, y := binary.BigEndian.Uint32(a), binary.BigEndian.Uint32(b)
		if y < x {
			return nil, fmt.Errorf("source address range %q is backwards", part)
		}
		if uint64(len(out))+uint64(y-x)+1 > 1<<16 {
			return nil, errors.New("more than 65536 source addresses")
		}
		for v := x; ; v++ {
			ip := make(net.IP, 4)
			binary.BigEndian.PutUint32(ip, v)
			out = append(out, ip)
			if v == y {
				break
			}
		}
	}
	return out, nil
}
