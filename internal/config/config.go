// Package config turns the relay's command line into one validated Config.
// Every field has a documented default; Parse rejects any bad value with a
// one-line error, so the program can exit with status 2 before it listens
// on anything.
//
// The relay reads no environment variables yet; when secrets arrive (push
// credentials) they are read here and nowhere else.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"
)

// ErrHelp is returned by Parse when -h or --help was asked for; usage has
// been printed.
var ErrHelp = flag.ErrHelp

// Config is everything an operator can set.
type Config struct {
	// Serving mode: exactly one of Domain, TLSCert/TLSKey, InsecureListen.
	Domain         string // Let's Encrypt autocert for this name
	HTTPSListen    string // WSS listener for Domain or TLSCert (":443")
	HTTPListen     string // ACME http-01 listener for Domain (":80")
	CertCache      string // autocert cache directory ("~/.pyrycode-relay/certs")
	ACMEEmail      string // contact address given to the CA (none)
	ACMEDirectory  string // ACME directory URL (Let's Encrypt production)
	TLSCert        string // PEM certificate chain served instead of autocert
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

	LogLevel    slog.Level // "info"
	LogFormat   string     // "json" or "text" ("json")
	ShowVersion bool       // print the version and exit
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
		LogLevel:          slog.LevelInfo,
		LogFormat:         "json",
	}
}

// maxFrameLimit caps --max-frame-bytes: one message is held in memory whole.
const maxFrameLimit = 64 << 20

// Parse reads args (without the program name) on top of Default and
// validates the result. Usage and flag errors go to out.
func Parse(args []string, out io.Writer) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("pyrycode-relay", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Domain, "domain", c.Domain, "serve WSS for this domain with a Let's Encrypt certificate (autocert)")
	fs.StringVar(&c.HTTPSListen, "https-listen", c.HTTPSListen, "WSS listen address for --domain or --tls-cert")
	fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "ACME http-01 challenge listen address for --domain")
	fs.StringVar(&c.CertCache, "cert-cache", c.CertCache, "directory for autocert certificates (forced to 0700)")
	fs.StringVar(&c.ACMEEmail, "acme-email", c.ACMEEmail, "contact email given to the ACME CA (optional)")
	fs.StringVar(&c.ACMEDirectory, "acme-directory", c.ACMEDirectory, "ACME directory URL (default: Let's Encrypt production)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate chain to serve instead of autocert (reloaded when it changes)")
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
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json or text")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
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
	return c, c.Validate()
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
	case c.PhoneQueueBytes < c.MaxFrameBytes:
		return fmt.Errorf("--phone-queue-bytes (%d) must be at least --max-frame-bytes (%d)", c.PhoneQueueBytes, c.MaxFrameBytes)
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format: %q is not json or text", c.LogFormat)
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
