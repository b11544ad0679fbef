// Package config turns the relay's command line into one validated Config.
// Every field has a documented default; Parse rejects any bad value with a
// one-line error, so the program can exit with status 2 before it listens
// on anything.
//
// Environment variables are read here and nowhere else; Environment lists
// every one of them. Flags carry everything an operator tunes; the
// environment carries only secrets and deployment switches.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// ErrHelp is returned by Parse when -h or --help was asked for; usage has
// been printed.
var ErrHelp = flag.ErrHelp

// Config is everything an operator can set.
type Config struct {
	// Serving mode: exactly one of Domain, TLSCert/TLSKey, InsecureListen.
	Domain         string // Let's Encrypt (ACME) certificate for this name
	HTTPSListen    string // WSS listener for Domain or TLSCert (":443")
	HTTPListen     string // ACME http-01 listener for Domain (":80")
	CertCache      string // ACME account and certificate cache ("~/.pyrycode-relay/certs")
	ACMEEmail      string // contact address given to the CA (none)
	ACMEDirectory  string // ACME directory URL (Let's Encrypt production)
	ACMECACert     string // PEM CA certificates trusted for ACMEDirectory's HTTPS (system roots)
	TLSCert        string // PEM certificate chain served instead of ACME
	TLSKey         string // PEM private key for TLSCert
	InsecureListen string // plain HTTP/WS listener for use behind a TLS proxy

	Grace             time.Duration // id kept after its binary leaves (30s)
	ProbeTimeout      time.Duration // conflict probe wait (10s)
	HeartbeatInterval time.Duration // ping period (30s)
	HeartbeatTimeout  time.Duration // pong deadline (30s)
	MessageTimeout    time.Duration // one message must arrive within (30s)
	WriteTimeout      time.Duration // one write must finish within (10s)
	HeaderTimeout     time.Duration // HTTP header (and TLS handshake) read limit (5s)
	DrainTimeout      time.Duration // shutdown wait (10s)
	MaxFrameBytes     int           // largest message read (262144)
	MaxPhones         int           // phones per server-id (16)
	PhoneQueueBytes   int           // per-phone queue budget (4194304)

	MetricsListen string // Prometheus and status page listener ("127.0.0.1:9090"); empty disables
	MetricsPublic bool   // allow a metrics address that is not loopback

	UpgradeRate    float64        // per-IP upgrades per second (0.2)
	UpgradeBurst   int            // per-IP upgrade burst (20)
	MaxConnsPerIP  int            // live connections per client IP (256)
	MaxConns       int            // live connections in all (100000)
	MaxQueuedBytes int64          // bytes queued for all phones together (1 GiB)
	TrustedProxies []netip.Prefix // peers whose X-Forwarded-For / PROXY header is believed (none)
	ProxyProtocol  bool           // accept PROXY protocol v1/v2 from trusted proxies

	FCMCredentials  []byte        // service-account JSON, from PYRYCODE_RELAY_FCM_CREDENTIALS; nil = FCM off
	FCMProject      string        // overrides the key's project_id
	FCMBaseURL      string        // FCM API base ("https://fcm.googleapis.com")
	APNsKey         []byte        // .p8 PEM, from PYRYCODE_RELAY_APNS_KEY; nil = APNs off
	APNsKeyID       string        // key id of APNsKey
	APNsTeamID      string        // Apple team id
	APNsTopic       string        // the app's bundle id
	APNsBaseURL     string        // APNs base ("https://api.push.apple.com")
	PushBurst       int           // wakes per server-id in a burst (6)
	PushRefill      time.Duration // one more wake per server-id every (10s)
	PushMaxInFlight int           // push sends in flight relay-wide (32)

	Production bool // PYRYCODE_RELAY_PRODUCTION=1: refuse risky set-ups

	NATSURL      string // comma-separated NATS URLs; non-empty turns cluster mode on (flag, else PYRYCODE_RELAY_NATS_URL)
	NATSCreds    string // NATS credentials file (JWT + NKey seed)
	NATSCA       string // CA file trusted for TLS to NATS
	NATSCert     string // client certificate for TLS to NATS
	NATSKey      string // client key for NATS TLS
	ClusterName  string // prefix of every subject and bucket ("pyrycode-relay")
	NATSReplicas int    // JetStream replicas of the ownership bucket when created (1)
	NodeID       string // this relay's node id (random per process)

	LogLevel    slog.Level // "info"
	LogFormat   string     // "json" or "text" ("json")
	IO          string     // "loop" (event loops; default on Linux) or "goroutine" (one per connection; default elsewhere)
	Loops       int        // --io loop: how many event loops; 0 = GOMAXPROCS-1, at least 1
	ShowVersion bool       // print the version and exit
}

// EnvVar describes one environment variable the relay reads.
type EnvVar struct {
	Name   string
	Secret bool // its value is never echoed, logged or printed
	Doc    string
}

// Environment variable names.
const (
	EnvProduction     = "PYRYCODE_RELAY_PRODUCTION"
	EnvFCMCredentials = "PYRYCODE_RELAY_FCM_CREDENTIALS"
	EnvAPNsKey        = "PYRYCODE_RELAY_APNS_KEY"
	EnvNATSURL        = "PYRYCODE_RELAY_NATS_URL"
)

// Environment is every environment variable the relay reads.
var Environment = []EnvVar{
	{EnvProduction, false, "1 turns on production checks: no --insecure-listen without --trusted-proxies, never as root"},
	{EnvFCMCredentials, true, "Google service-account key (JSON) for FCM push wakes; unset turns FCM off"},
	{EnvAPNsKey, true, "APNs auth key (.p8, PEM) for iOS push wakes; unset turns APNs off"},
	{EnvNATSURL, true, "NATS server URLs, as --nats-url, for URLs that carry credentials (the flag wins)"},
}

// Env is what Parse needs from the process besides its arguments.
type Env struct {
	Getenv func(string) string
	Euid   int // effective user id (0 is root)
}

// Default returns the contract's defaults.
func Default() Config {
	return Config{
		HTTPSListen:       ":443",
		HTTPListen:        ":80",
		CertCache:         "~/.pyrycode-relay/certs",
		Grace:             30 * time.Second,
		ProbeTimeout:      10 * time.Second,
		HeartbeatInterval: 30 * time.Second,
		HeartbeatTimeout:  30 * time.Second,
		MessageTimeout:    30 * time.Second,
		WriteTimeout:      10 * time.Second,
		HeaderTimeout:     5 * time.Second,
		DrainTimeout:      10 * time.Second,
		MaxFrameBytes:     256 << 10,
		MaxPhones:         16,
		PhoneQueueBytes:   4 << 20,
		MetricsListen:     "127.0.0.1:9090",
		UpgradeRate:       0.2,
		UpgradeBurst:      20,
		MaxConnsPerIP:     256,
		MaxConns:          100000,
		MaxQueuedBytes:    1 << 30,
		FCMBaseURL:        "https://fcm.googleapis.com",
		APNsBaseURL:       "https://api.push.apple.com",
		PushBurst:         6,
		PushRefill:        10 * time.Second,
		PushMaxInFlight:   32,
		LogLevel:          slog.LevelInfo,
		LogFormat:         "json",
		ClusterName:       "pyrycode-relay",
		NATSReplicas:      1,
		IO:                defaultIO,
	}
}

// defaultIO is the connection I/O path: event loops where they exist.
var defaultIO = func() string {
	if runtime.GOOS == "linux" {
		return "loop"
	}
	return "goroutine"
}()

// maxFrameLimit caps --max-frame-bytes: one message is held in memory whole.
const maxFrameLimit = 64 << 20

// Parse reads args (without the program name) and the environment on top of
// Default and validates the result. Usage and flag errors go to out.
func Parse(args []string, env Env, out io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("pyrycode-relay", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned as one line; usage only on -h
	fs.StringVar(&c.Domain, "domain", c.Domain, "serve WSS for this domain with a Let's Encrypt (ACME) certificate")
	fs.StringVar(&c.HTTPSListen, "https-listen", c.HTTPSListen, "WSS listen address for --domain or --tls-cert")
	fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "ACME http-01 challenge listen address for --domain")
	fs.StringVar(&c.CertCache, "cert-cache", c.CertCache, "directory for the ACME account key and certificate (forced to 0700)")
	fs.StringVar(&c.ACMEEmail, "acme-email", c.ACMEEmail, "contact email given to the ACME CA (optional)")
	fs.StringVar(&c.ACMEDirectory, "acme-directory", c.ACMEDirectory, "ACME directory URL (default: Let's Encrypt production)")
	fs.StringVar(&c.ACMECACert, "acme-ca-cert", c.ACMECACert, "PEM CA certificates to trust for --acme-directory's HTTPS instead of the system roots (private or test CA)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate chain to serve instead of an ACME certificate (reloaded when it changes)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key for --tls-cert")
	fs.StringVar(&c.InsecureListen, "insecure-listen", c.InsecureListen, "serve plain HTTP/WS on this address (behind a TLS proxy, or locally)")
	fs.DurationVar(&c.Grace, "grace", c.Grace, "how long a server-id is kept after its binary disconnects")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", c.ProbeTimeout, "how long a conflicting claim waits for the incumbent's pong")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "ping every connection this often")
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", c.HeartbeatTimeout, "close a connection whose pong is this late")
	fs.DurationVar(&c.MessageTimeout, "message-timeout", c.MessageTimeout, "one message must finish arriving within this of its first byte")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "one write must finish within this")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", c.HeaderTimeout, "HTTP header and TLS handshake read limit")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "on SIGTERM/SIGINT, wait this long for connections to close")
	fs.IntVar(&c.MaxFrameBytes, "max-frame-bytes", c.MaxFrameBytes, "largest message accepted; larger closes with 1009")
	fs.IntVar(&c.MaxPhones, "max-phones-per-server", c.MaxPhones, "phones per server-id; the next one is closed with 4429")
	fs.IntVar(&c.PhoneQueueBytes, "phone-queue-bytes", c.PhoneQueueBytes, "per-phone send queue budget; overflow closes that phone")
	fs.StringVar(&c.MetricsListen, "metrics-listen", c.MetricsListen, "Prometheus /metrics and status page listener; empty disables")
	fs.BoolVar(&c.MetricsPublic, "metrics-public", false, "allow --metrics-listen on an address that is not loopback")
	fs.Float64Var(&c.UpgradeRate, "upgrade-rate", c.UpgradeRate, "per-IP WebSocket upgrades per second (token bucket refill)")
	fs.IntVar(&c.UpgradeBurst, "upgrade-burst", c.UpgradeBurst, "per-IP WebSocket upgrade burst")
	fs.IntVar(&c.MaxConnsPerIP, "max-connections-per-ip", c.MaxConnsPerIP, "live connections per client IP; more get HTTP 429")
	fs.IntVar(&c.MaxConns, "max-connections", c.MaxConns, "live connections in all; more get HTTP 503")
	fs.Int64Var(&c.MaxQueuedBytes, "max-queued-bytes", c.MaxQueuedBytes, "bytes queued for all phones together; over it the largest backlog is closed")
	proxies := fs.String("trusted-proxies", "", "comma-separated CIDRs or IPs whose X-Forwarded-For (and PROXY header) is believed")
	fs.BoolVar(&c.ProxyProtocol, "proxy-protocol", false, "accept PROXY protocol v1/v2 headers from --trusted-proxies peers")
	fs.StringVar(&c.FCMProject, "fcm-project", c.FCMProject, "FCM project id (default: the service-account key's project_id)")
	fs.StringVar(&c.FCMBaseURL, "fcm-base-url", c.FCMBaseURL, "FCM API base URL")
	fs.StringVar(&c.APNsKeyID, "apns-key-id", c.APNsKeyID, "APNs auth key id")
	fs.StringVar(&c.APNsTeamID, "apns-team-id", c.APNsTeamID, "Apple developer team id")
	fs.StringVar(&c.APNsTopic, "apns-topic", c.APNsTopic, "APNs topic: the app's bundle id")
	fs.StringVar(&c.APNsBaseURL, "apns-base-url", c.APNsBaseURL, "APNs base URL (sandbox: https://api.sandbox.push.apple.com)")
	fs.IntVar(&c.PushBurst, "push-burst", c.PushBurst, "push wakes per server-id in a burst")
	fs.DurationVar(&c.PushRefill, "push-refill", c.PushRefill, "one more push wake per server-id every")
	fs.IntVar(&c.PushMaxInFlight, "push-max-in-flight", c.PushMaxInFlight, "push sends in flight relay-wide")
	fs.StringVar(&c.NATSURL, "nats-url", "", "comma-separated NATS server URLs; turns cluster mode on (or "+EnvNATSURL+")")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
	fs.StringVar(&c.NATSCA, "nats-ca", "", "CA certificates (PEM) to trust for TLS to NATS")
	fs.StringVar(&c.NATSCert, "nats-cert", "", "client certificate (PEM) for TLS to NATS")
	fs.StringVar(&c.NATSKey, "nats-key", "", "client key (PEM) for --nats-cert")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "cluster name: prefix of every NATS subject and bucket")
	fs.IntVar(&c.NATSReplicas, "nats-replicas", c.NATSReplicas, "JetStream replicas of the ownership bucket when a relay creates it (1 to 5)")
	fs.StringVar(&c.NodeID, "node-id", "", "this relay's node id in the cluster (default: random per process)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json or text")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.StringVar(&c.IO, "io", c.IO, "connection I/O: loop (connections on event loops, Linux only) or goroutine (a goroutine per connection)")
	fs.IntVar(&c.Loops, "loops", 0, "--io loop: number of event loops (0: one per core the Go runtime uses but one, at least one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
		}
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil || !oneOf(strings.ToLower(*level), "debug", "info", "warn", "error") {
		return c, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", *level)
	}
	if c.ShowVersion {
		return c, nil
	}
	if *proxies != "" {
		p, err := ParsePrefixes(*proxies)
		if err != nil {
			return c, fmt.Errorf("--trusted-proxies: %v", err)
		}
		c.TrustedProxies = p
	}
	if err := c.readEnv(env); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// readEnv reads and checks every variable in Environment. Errors name the
// variable and never include its value.
func (c *Config) readEnv(env Env) error {
	get := env.Getenv
	if get == nil {
		get = func(string) string { return "" }
	}
	switch v := strings.ToLower(strings.TrimSpace(get(EnvProduction))); v {
	case "", "0", "false", "no":
	case "1", "true", "yes":
		c.Production = true
	default:
		return fmt.Errorf("%s: must be 1 or 0 (or true/false)", EnvProduction)
	}
	if v := get(EnvFCMCredentials); v != "" {
		c.FCMCredentials = []byte(v)
	}
	if v := get(EnvAPNsKey); v != "" {
		c.APNsKey = []byte(v)
	}
	if v := strings.TrimSpace(get(EnvNATSURL)); v != "" && c.NATSURL == "" {
		c.NATSURL = v
	}
	if c.Production {
		if c.InsecureListen != "" && len(c.TrustedProxies) == 0 {
			return fmt.Errorf("%s=1: --insecure-listen needs --trusted-proxies (plain HTTP only behind a TLS proxy)", EnvProduction)
		}
		if env.Euid == 0 {
			return fmt.Errorf("%s=1: refusing to run as root; grant CAP_NET_BIND_SERVICE to bind ports below 1024", EnvProduction)
		}
	}
	return nil
}

// ParsePrefixes parses a comma-separated list of CIDR prefixes or bare IP
// addresses (taken as single-address prefixes).
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR prefix", part)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(out) == 0 {
		return nil, errors.New("no prefixes given")
	}
	return out, nil
}

func oneOf(s string, set ...string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Validate checks c as a whole and returns the first problem as one line.
func (c *Config) Validate() error {
	modes := 0
	for _, set := range []bool{c.Domain != "", c.TLSCert != "" || c.TLSKey != "", c.InsecureListen != ""} {
		if set {
			modes++
		}
	}
	switch {
	case modes == 0:
		return errors.New("one of --domain, --tls-cert/--tls-key or --insecure-listen is required")
	case modes > 1:
		return errors.New("--domain, --tls-cert/--tls-key and --insecure-listen are mutually exclusive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key must be given together")
	}
	if c.Domain != "" {
		if err := checkDomain(c.Domain); err != nil {
			return err
		}
		if c.CertCache == "" {
			return errors.New("--cert-cache must not be empty")
		}
		if err := checkAddr("--http-listen", c.HTTPListen); err != nil {
			return err
		}
	} else if c.ACMECACert != "" {
		return errors.New("--acme-ca-cert needs --domain")
	}
	if c.Domain != "" || c.TLSCert != "" {
		if err := checkAddr("--https-listen", c.HTTPSListen); err != nil {
			return err
		}
	}
	if c.InsecureListen != "" {
		if err := checkAddr("--insecure-listen", c.InsecureListen); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"--grace", c.Grace, 0},
		{"--probe-timeout", c.ProbeTimeout, time.Millisecond},
		{"--heartbeat-interval", c.HeartbeatInterval, time.Millisecond},
		{"--heartbeat-timeout", c.HeartbeatTimeout, time.Millisecond},
		{"--message-timeout", c.MessageTimeout, time.Millisecond},
		{"--write-timeout", c.WriteTimeout, time.Millisecond},
		{"--header-timeout", c.HeaderTimeout, time.Millisecond},
		{"--drain-timeout", c.DrainTimeout, 0},
	} {
		if d.v < d.min {
			if d.min == 0 {
				return fmt.Errorf("%s must not be negative (got %s)", d.name, d.v)
			}
			return fmt.Errorf("%s must be at least %s (got %s)", d.name, d.min, d.v)
		}
	}
	switch {
	case c.MaxFrameBytes < 1 || c.MaxFrameBytes > maxFrameLimit:
		return fmt.Errorf("--max-frame-bytes must be between 1 and %d (got %d)", maxFrameLimit, c.MaxFrameBytes)
	case c.MaxPhones < 1:
		return fmt.Errorf("--max-phones-per-server must be at least 1 (got %d)", c.MaxPhones)
	case c.PhoneQueueBytes < 2*c.MaxFrameBytes+4096:
		// A queued frame is charged for the whole buffer holding it, which
		// can be up to twice its size; the largest frame must always fit.
		return fmt.Errorf("--phone-queue-bytes (%d) must be at least twice --max-frame-bytes plus 4096 (%d)", c.PhoneQueueBytes, 2*c.MaxFrameBytes+4096)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format: %q is not json or text", c.LogFormat)
	case c.IO != "loop" && c.IO != "goroutine":
		return fmt.Errorf("--io: %q is not loop or goroutine", c.IO)
	case c.IO == "loop" && runtime.GOOS != "linux":
		return fmt.Errorf("--io loop: event loops are only available on Linux")
	case c.Loops < 0 || c.Loops > 1024:
		return fmt.Errorf("--loops must be between 0 (the default: cores but one) and 1024 (got %d)", c.Loops)
	case c.Loops != 0 && c.IO != "loop":
		return fmt.Errorf("--loops is for --io loop (got --io %s)", c.IO)
	case !(c.UpgradeRate > 0) || c.UpgradeRate > 1e6:
		return fmt.Errorf("--upgrade-rate must be above 0 and at most 1000000 (got %v)", c.UpgradeRate)
	case c.UpgradeBurst < 1:
		return fmt.Errorf("--upgrade-burst must be at least 1 (got %d)", c.UpgradeBurst)
	case c.MaxConnsPerIP < 1:
		return fmt.Errorf("--max-connections-per-ip must be at least 1 (got %d)", c.MaxConnsPerIP)
	case c.MaxConns < 1:
		return fmt.Errorf("--max-connections must be at least 1 (got %d)", c.MaxConns)
	case c.MaxQueuedBytes < int64(c.PhoneQueueBytes):
		return fmt.Errorf("--max-queued-bytes (%d) must be at least --phone-queue-bytes (%d)", c.MaxQueuedBytes, c.PhoneQueueBytes)
	case c.ProxyProtocol && len(c.TrustedProxies) == 0:
		return errors.New("--proxy-protocol needs --trusted-proxies")
	case c.PushBurst < 1:
		return fmt.Errorf("--push-burst must be at least 1 (got %d)", c.PushBurst)
	case c.PushRefill <= 0:
		return fmt.Errorf("--push-refill must be above 0 (got %s)", c.PushRefill)
	case c.PushMaxInFlight < 1:
		return fmt.Errorf("--push-max-in-flight must be at least 1 (got %d)", c.PushMaxInFlight)
	}
	if c.MetricsListen != "" {
		if err := checkAddr("--metrics-listen", c.MetricsListen); err != nil {
			return err
		}
	}
	return c.validateCluster()
}

// validateCluster checks the cluster flags. Errors never echo a URL, which
// may carry credentials.
func (c *Config) validateCluster() error {
	if c.NATSURL == "" {
		for _, f := range []struct{ name, v string }{
			{"--nats-creds", c.NATSCreds}, {"--nats-ca", c.NATSCA}, {"--nats-cert", c.NATSCert},
			{"--nats-key", c.NATSKey}, {"--node-id", c.NodeID},
		} {
			if f.v != "" {
				return fmt.Errorf("%s needs --nats-url (or %s)", f.name, EnvNATSURL)
			}
		}
		return nil
	}
	for i, u := range strings.Split(c.NATSURL, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || !oneOf(p.Scheme, "nats", "tls", "ws", "wss") {
			return fmt.Errorf("--nats-url: URL %d is not a nats://, tls://, ws:// or wss:// URL with a host", i+1)
		}
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		return fmt.Errorf("--nats-replicas must be between 1 and 5 (got %d)", c.NATSReplicas)
	}
	if (c.NATSCert == "") != (c.NATSKey == "") {
		return errors.New("--nats-cert and --nats-key must be given together")
	}
	if !wire.ValidServerID(c.ClusterName) {
		return fmt.Errorf("--cluster-name: %q is not a valid name (letters, digits, '.', '_', ':', '-'; at most 128)", c.ClusterName)
	}
	if c.NodeID != "" && (!wire.ValidServerID(c.NodeID) || len(c.NodeID) > 64) {
		return fmt.Errorf("--node-id: %q is not a valid id (letters, digits, '.', '_', ':', '-'; at most 64)", c.NodeID)
	}
	return nil
}

func checkAddr(name, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port", name, addr)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%s: bad host in %q", name, addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%s: bad port in %q", name, addr)
	}
	return nil
}

func checkDomain(d string) error {
	if len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || !strings.Contains(d, ".") ||
		net.ParseIP(d) != nil {
		return fmt.Errorf("--domain: %q is not a DNS name", d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("--domain: %q is not a DNS name", d)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("--domain: %q is not a DNS name", d)
			}
		}
	}
	return nil
}
