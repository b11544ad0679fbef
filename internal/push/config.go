package push

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Environment variables that hold push secrets. The caller reads them (the
// relay reads its environment in one place) and passes the values in
// Config.
const (
	// EnvFCMCredentials holds a Google service-account key (JSON). Unset
	// or empty: FCM is off.
	EnvFCMCredentials = "PYRYCODE_RELAY_FCM_CREDENTIALS"
	// EnvAPNsKey holds an APNs authentication key (the .p8 file, PEM).
	// Unset or empty: APNs is off.
	EnvAPNsKey = "PYRYCODE_RELAY_APNS_KEY"
)

// Defaults for the zero values of Config.
const (
	DefaultFCMBaseURL  = "https://fcm.googleapis.com"
	DefaultAPNsBaseURL = "https://api.push.apple.com"
	// SandboxAPNsBaseURL is APNs' development environment, for builds
	// signed with a development provisioning profile.
	SandboxAPNsBaseURL = "https://api.sandbox.push.apple.com"
	DefaultBurst       = 6
	DefaultRefill      = 10 * time.Second
	DefaultMaxInFlight = 32
	DefaultTimeout     = 10 * time.Second

	// defaultTokenURI is used when a service-account key has no token_uri.
	defaultTokenURI = "https://oauth2.googleapis.com/token"
)

// Upper bounds that keep the limiter's arithmetic far from overflow.
const (
	maxBurst       = 10000
	maxRefill      = 24 * time.Hour
	maxInFlightCap = 10000
	maxTimeout     = 5 * time.Minute
)

// Names of the flags the relay maps onto Config, used in error messages.
const (
	flagFCMProject  = "--fcm-project"
	flagFCMBaseURL  = "--fcm-base-url"
	flagAPNsKeyID   = "--apns-key-id"
	flagAPNsTeamID  = "--apns-team-id"
	flagAPNsTopic   = "--apns-topic"
	flagAPNsBaseURL = "--apns-base-url"
	flagBurst       = "--push-burst"
	flagRefill      = "--push-refill"
	flagMaxInFlight = "--push-max-in-flight"
	fieldTimeout    = "push timeout"
)

// Config configures a Sender. The zero value is valid: both platforms off,
// every limit at its default. A Config is read by New and never modified.
type Config struct {
	// FCMCredentials is the Google service-account key (JSON) from
	// EnvFCMCredentials. Nil or empty: FCM is off.
	FCMCredentials []byte
	// FCMProject overrides the key's project_id (--fcm-project). Empty:
	// the key's project_id.
	FCMProject string
	// FCMBaseURL is where FCM requests go (--fcm-base-url). Empty:
	// DefaultFCMBaseURL. It must be https, or http on a loopback host
	// (for tests).
	FCMBaseURL string

	// APNsKey is the APNs authentication key (PEM .p8) from EnvAPNsKey.
	// Nil or empty: APNs is off. Literal "\n" sequences (a key squeezed
	// onto one line) are accepted in place of newlines.
	APNsKey []byte
	// APNsKeyID is the key's id (--apns-key-id), APNsTeamID the developer
	// team id (--apns-team-id) and APNsTopic the app's bundle id
	// (--apns-topic). All three are required with APNsKey and refused
	// without it.
	APNsKeyID, APNsTeamID, APNsTopic string
	// APNsBaseURL is where APNs requests go (--apns-base-url). Empty:
	// DefaultAPNsBaseURL. It must be https, or http on a loopback host (then
	// spoken as HTTP/2 without TLS).
	APNsBaseURL string

	// Burst is the size of each server-id's token bucket (--push-burst).
	// Zero: DefaultBurst.
	Burst int
	// Refill is the time one token takes to come back (--push-refill).
	// Zero: DefaultRefill.
	Refill time.Duration
	// MaxInFlight caps sends in flight relay-wide (--push-max-in-flight).
	// Zero: DefaultMaxInFlight.
	MaxInFlight int
	// Timeout bounds one wake's network work, access-token fetch included.
	// Zero: DefaultTimeout.
	Timeout time.Duration

	// Transport carries every request. Nil: dedicated transports (HTTP/1.1
	// or HTTP/2 for FCM and OAuth, HTTP/2 only for APNs, no proxy). An
	// injected transport must speak HTTP/2 to APNs.
	Transport http.RoundTripper
	// Log receives the sender's events. Nil: discarded.
	Log *slog.Logger
	// Now is the clock for token buckets, JWT iat and token lifetimes.
	// Nil: time.Now.
	Now func() time.Time
}

// Validate reports whether c can make a Sender, parsing the credentials.
// The error wraps ErrConfig, is one line, names the environment variable
// or flag at fault, and contains no secret material.
func (c Config) Validate() error {
	_, err := c.parse()
	return err
}

// settings is a validated Config with defaults applied and keys parsed.
type settings struct {
	fcm         *fcmSettings  // nil: FCM off
	apns        *apnsSettings // nil: APNs off
	burst       int
	refill      time.Duration
	maxInFlight int
	timeout     time.Duration
}

type fcmSettings struct {
	clientEmail string
	keyID       string // private_key_id, may be empty
	key         *rsa.PrivateKey
	tokenURL    string
	sendURL     string
	project     string
}

type apnsSettings struct {
	key     *ecdsa.PrivateKey
	keyID   string
	teamID  string
	topic   string
	baseURL string // without a trailing slash
}

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

func (c Config) parse() (settings, error) {
	s := settings{
		burst:       orDefault(c.Burst, DefaultBurst),
		refill:      orDefault(c.Refill, DefaultRefill),
		maxInFlight: orDefault(c.MaxInFlight, DefaultMaxInFlight),
		timeout:     orDefault(c.Timeout, DefaultTimeout),
	}
	switch {
	case s.burst < 0 || s.burst > maxBurst:
		return s, configErr("%s must be between 1 and %d", flagBurst, maxBurst)
	case s.refill < 0 || s.refill > maxRefill:
		return s, configErr("%s must be between 1ns and %s", flagRefill, maxRefill)
	case s.maxInFlight < 0 || s.maxInFlight > maxInFlightCap:
		return s, configErr("%s must be between 1 and %d", flagMaxInFlight, maxInFlightCap)
	case s.timeout < 0 || s.timeout > maxTimeout:
		return s, configErr("%s must be between 1ns and %s", fieldTimeout, maxTimeout)
	}
	var err error
	if s.fcm, err = c.parseFCM(); err != nil {
		return s, err
	}
	if s.apns, err = c.parseAPNs(); err != nil {
		return s, err
	}
	return s, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// serviceAccount is the part of a Google service-account key we use.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

func (c Config) parseFCM() (*fcmSettings, error) {
	if len(c.FCMCredentials) == 0 {
		if c.FCMProject != "" {
			return nil, configErr("%s is set but %s is not", flagFCMProject, EnvFCMCredentials)
		}
		return nil, nil
	}
	// Decoding errors are not wrapped: a syntax error quotes the input.
	var sa serviceAccount
	if json.Unmarshal(c.FCMCredentials, &sa) != nil {
		return nil, configErr("%s is not a service-account key (JSON object with string fields)", EnvFCMCredentials)
	}
	if sa.Type != "" && sa.Type != "service_account" {
		return nil, configErr("%s: type is not \"service_account\"", EnvFCMCredentials)
	}
	if sa.ClientEmail == "" {
		return nil, configErr("%s: client_email is missing", EnvFCMCredentials)
	}
	if !headerSafe(sa.PrivateKeyID) {
		return nil, configErr("%s: private_key_id has invalid characters", EnvFCMCredentials)
	}
	key, err := parseRSAKey(sa.PrivateKey)
	if err != nil {
		return nil, configErr("%s: private_key %v", EnvFCMCredentials, err)
	}
	tokenURI := sa.TokenURI
	if tokenURI == "" {
		tokenURI = defaultTokenURI
	}
	tokenURL, err := checkURL(tokenURI)
	if err != nil {
		return nil, configErr("%s: token_uri %v", EnvFCMCredentials, err)
	}
	project, from := sa.ProjectID, EnvFCMCredentials+" project_id"
	if c.FCMProject != "" {
		project, from = c.FCMProject, flagFCMProject
	}
	if project == "" {
		return nil, configErr("%s has no project_id and %s is not set", EnvFCMCredentials, flagFCMProject)
	}
	if !validProject(project) {
		return nil, configErr("%s is not a valid project id", from)
	}
	base := c.FCMBaseURL
	if base == "" {
		base = DefaultFCMBaseURL
	}
	baseURL, err := checkURL(base)
	if err != nil {
		return nil, configErr("%s %v", flagFCMBaseURL, err)
	}
	return &fcmSettings{
		clientEmail: sa.ClientEmail,
		keyID:       sa.PrivateKeyID,
		key:         key,
		tokenURL:    tokenURL,
		sendURL:     baseURL + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		project:     project,
	}, nil
}

func (c Config) parseAPNs() (*apnsSettings, error) {
	if len(c.APNsKey) == 0 {
		for _, f := range []struct{ name, val string }{
			{flagAPNsKeyID, c.APNsKeyID}, {flagAPNsTeamID, c.APNsTeamID}, {flagAPNsTopic, c.APNsTopic},
		} {
			if f.val != "" {
				return nil, configErr("%s is set but %s is not", f.name, EnvAPNsKey)
			}
		}
		return nil, nil
	}
	key, err := parseECKey(c.APNsKey)
	if err != nil {
		return nil, configErr("%s %v", EnvAPNsKey, err)
	}
	for _, f := range []struct{ name, val string }{
		{flagAPNsKeyID, c.APNsKeyID}, {flagAPNsTeamID, c.APNsTeamID},
	} {
		if f.val == "" {
			return nil, configErr("%s is required when %s is set", f.name, EnvAPNsKey)
		}
		if !alnum(f.val) {
			return nil, configErr("%s must be letters and digits only", f.name)
		}
	}
	if c.APNsTopic == "" {
		return nil, configErr("%s is required when %s is set", flagAPNsTopic, EnvAPNsKey)
	}
	if !headerSafe(c.APNsTopic) {
		return nil, configErr("%s has invalid characters", flagAPNsTopic)
	}
	base := c.APNsBaseURL
	if base == "" {
		base = DefaultAPNsBaseURL
	}
	baseURL, err := checkURL(base)
	if err != nil {
		return nil, configErr("%s %v", flagAPNsBaseURL, err)
	}
	return &apnsSettings{key: key, keyID: c.APNsKeyID, teamID: c.APNsTeamID, topic: c.APNsTopic, baseURL: baseURL}, nil
}

// checkURL accepts an absolute https URL, or http on a loopback host (for
// tests), with no user info, query or fragment, and returns it without a
// trailing slash.
func checkURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return "", errorString("is not an absolute URL without query")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return "", errorString("must use https (http only on a loopback host)")
		}
	default:
		return "", errorString("must use https")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validProject accepts Google project ids, including the legacy
// "domain:project" form.
func validProject(s string) bool {
	if len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != '.' && c != ':' && c != '_' {
			return false
		}
	}
	return true
}

func alnum(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// headerSafe reports whether s is short visible ASCII without spaces,
// safe in an HTTP header value or a JWT field.
func headerSafe(s string) bool { return visibleASCII(s, 256) }

// visibleASCII reports whether s is at most max bytes of visible ASCII
// (no spaces or control characters).
func visibleASCII(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
