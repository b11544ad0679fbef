package push

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

// secretMark stands in for secret material in malformed credentials; it
// must never appear in an error.
const secretMark = "SECRETb64Zm9vYmFyYmF6cXV4"

// validConfig is a complete configuration that needs no network.
func validConfig() Config {
	return Config{
		FCMCredentials: serviceAccountJSON("https://oauth2.googleapis.com/token", testProject),
		APNsKey:        []byte(pkcs8PEM(testECKey())),
		APNsKeyID:      testAPNsKeyID,
		APNsTeamID:     testTeamID,
		APNsTopic:      testTopic,
	}
}

// withKey returns validConfig's FCM credentials with field set to v
// (deleted when v is nil).
func withKey(field string, v any) []byte {
	var m map[string]any
	json.Unmarshal(validConfig().FCMCredentials, &m)
	if v == nil {
		delete(m, field)
	} else {
		m[field] = v
	}
	b, _ := json.Marshal(m)
	return b
}

func TestValidateErrors(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ecDER, _ := x509.MarshalECPrivateKey(testECKey())
	garbagePEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte(secretMark)}))
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ecDER}))
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		names []string // what the error must name
	}{
		{"creds not JSON", func(c *Config) { c.FCMCredentials = []byte(`{"private_key":"` + secretMark) }, []string{EnvFCMCredentials}},
		{"creds JSON array", func(c *Config) { c.FCMCredentials = []byte(`["` + secretMark + `"]`) }, []string{EnvFCMCredentials}},
		{"creds wrong field type", func(c *Config) { c.FCMCredentials = withKey("private_key", 12345) }, []string{EnvFCMCredentials}},
		{"creds user type", func(c *Config) { c.FCMCredentials = withKey("type", "authorized_user") }, []string{EnvFCMCredentials, "type"}},
		{"creds no client_email", func(c *Config) { c.FCMCredentials = withKey("client_email", nil) }, []string{EnvFCMCredentials, "client_email"}},
		{"creds no private_key", func(c *Config) { c.FCMCredentials = withKey("private_key", nil) }, []string{EnvFCMCredentials, "private_key"}},
		{"creds key not PEM", func(c *Config) { c.FCMCredentials = withKey("private_key", secretMark) }, []string{EnvFCMCredentials, "private_key"}},
		{"creds key bad DER", func(c *Config) { c.FCMCredentials = withKey("private_key", garbagePEM) }, []string{EnvFCMCredentials, "private_key"}},
		{"creds key is EC", func(c *Config) { c.FCMCredentials = withKey("private_key", pkcs8PEM(testECKey())) }, []string{EnvFCMCredentials, "RSA"}},
		{"creds key is a certificate", func(c *Config) { c.FCMCredentials = withKey("private_key", certPEM) }, []string{EnvFCMCredentials, "private_key"}},
		{"creds key id with newline", func(c *Config) { c.FCMCredentials = withKey("private_key_id", "a\nb") }, []string{EnvFCMCredentials, "private_key_id"}},
		{"token_uri http", func(c *Config) { c.FCMCredentials = withKey("token_uri", "http://oauth2.example.com/token") }, []string{EnvFCMCredentials, "token_uri", "https"}},
		{"token_uri relative", func(c *Config) { c.FCMCredentials = withKey("token_uri", "/token") }, []string{EnvFCMCredentials, "token_uri"}},
		{"no project", func(c *Config) { c.FCMCredentials = withKey("project_id", nil) }, []string{EnvFCMCredentials, "--fcm-project"}},
		{"bad project flag", func(c *Config) { c.FCMProject = "a/b" }, []string{"--fcm-project"}},
		{"bad project in key", func(c *Config) { c.FCMCredentials = withKey("project_id", "a b") }, []string{EnvFCMCredentials, "project_id"}},
		{"fcm base url http", func(c *Config) { c.FCMBaseURL = "http://fcm.example.com" }, []string{"--fcm-base-url"}},
		{"fcm base url query", func(c *Config) { c.FCMBaseURL = "https://fcm.example.com/?x=1" }, []string{"--fcm-base-url"}},
		{"fcm base url userinfo", func(c *Config) { c.FCMBaseURL = "https://u:p@fcm.example.com" }, []string{"--fcm-base-url"}},
		{"project without creds", func(c *Config) { c.FCMCredentials = nil; c.FCMProject = "p" }, []string{"--fcm-project", EnvFCMCredentials}},

		{"apns key garbage", func(c *Config) { c.APNsKey = []byte(secretMark) }, []string{EnvAPNsKey}},
		{"apns key bad DER", func(c *Config) { c.APNsKey = []byte(garbagePEM) }, []string{EnvAPNsKey}},
		{"apns key RSA", func(c *Config) { c.APNsKey = []byte(pkcs8PEM(testRSAKey())) }, []string{EnvAPNsKey, "P-256"}},
		{"apns key P-384", func(c *Config) { c.APNsKey = []byte(pkcs8PEM(p384)) }, []string{EnvAPNsKey, "P-256"}},
		{"apns no key id", func(c *Config) { c.APNsKeyID = "" }, []string{"--apns-key-id", EnvAPNsKey}},
		{"apns no team id", func(c *Config) { c.APNsTeamID = "" }, []string{"--apns-team-id", EnvAPNsKey}},
		{"apns no topic", func(c *Config) { c.APNsTopic = "" }, []string{"--apns-topic", EnvAPNsKey}},
		{"apns bad key id", func(c *Config) { c.APNsKeyID = "AB/12" }, []string{"--apns-key-id"}},
		{"apns bad team id", func(c *Config) { c.APNsTeamID = "TEAM 1" }, []string{"--apns-team-id"}},
		{"apns bad topic", func(c *Config) { c.APNsTopic = "dev.app\r\nx: y" }, []string{"--apns-topic"}},
		{"apns key id without key", func(c *Config) { c.APNsKey = nil; c.APNsTeamID, c.APNsTopic = "", "" }, []string{"--apns-key-id", EnvAPNsKey}},
		{"apns topic without key", func(c *Config) { c.APNsKey = nil; c.APNsKeyID, c.APNsTeamID = "", "" }, []string{"--apns-topic", EnvAPNsKey}},
		{"apns base url http", func(c *Config) { c.APNsBaseURL = "http://api.push.apple.com" }, []string{"--apns-base-url"}},
		{"apns base url no host", func(c *Config) { c.APNsBaseURL = "https://" }, []string{"--apns-base-url"}},

		{"burst negative", func(c *Config) { c.Burst = -1 }, []string{"--push-burst"}},
		{"burst huge", func(c *Config) { c.Burst = 1 << 20 }, []string{"--push-burst"}},
		{"refill negative", func(c *Config) { c.Refill = -time.Second }, []string{"--push-refill"}},
		{"refill huge", func(c *Config) { c.Refill = 48 * time.Hour }, []string{"--push-refill"}},
		{"in flight negative", func(c *Config) { c.MaxInFlight = -1 }, []string{"--push-max-in-flight"}},
		{"timeout negative", func(c *Config) { c.Timeout = -1 }, []string{"timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			msg := err.Error()
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%q does not wrap ErrConfig", msg)
			}
			for _, n := range tc.names {
				if !strings.Contains(msg, n) {
					t.Errorf("%q does not name %s", msg, n)
				}
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("%q is not one line", msg)
			}
			secrets := []string{secretMark, "12345", "authorized_user"}
			secrets = append(secrets, keyLines(pkcs8PEM(testRSAKey()))...)
			secrets = append(secrets, keyLines(pkcs8PEM(testECKey()))...)
			for _, s := range secrets {
				if strings.Contains(msg, s) {
					t.Errorf("%q echoes secret material", msg)
				}
			}
			if s, err := New(c); s != nil || err == nil || err.Error() != msg {
				t.Errorf("New = %v, %v; want nil and the Validate error", s, err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	oneLine := strings.ReplaceAll(pkcs8PEM(testECKey()), "\n", `\n`)
	sec1DER, _ := x509.MarshalECPrivateKey(testECKey())
	sec1 := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER}))
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testRSAKey())}))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"zero value", func(c *Config) { *c = Config{} }},
		{"both platforms", func(c *Config) {}},
		{"fcm only", func(c *Config) { c.APNsKey, c.APNsKeyID, c.APNsTeamID, c.APNsTopic = nil, "", "", "" }},
		{"apns only", func(c *Config) { c.FCMCredentials = nil }},
		{"empty creds mean off", func(c *Config) { c.FCMCredentials = []byte{} }},
		{"apns key on one line", func(c *Config) { c.APNsKey = []byte(oneLine) }},
		{"apns SEC1 key", func(c *Config) { c.APNsKey = []byte(sec1) }},
		{"fcm PKCS1 key", func(c *Config) { c.FCMCredentials = withKey("private_key", pkcs1) }},
		{"no token_uri", func(c *Config) { c.FCMCredentials = withKey("token_uri", nil) }},
		{"no type", func(c *Config) { c.FCMCredentials = withKey("type", nil) }},
		{"project from flag only", func(c *Config) {
			c.FCMCredentials = withKey("project_id", nil)
			c.FCMProject = "flag-project"
		}},
		{"legacy project id", func(c *Config) { c.FCMProject = "example.com:my-project" }},
		{"loopback http", func(c *Config) {
			c.FCMBaseURL = "http://127.0.0.1:8080/"
			c.APNsBaseURL = "http://localhost:9"
			c.FCMCredentials = withKey("token_uri", "http://[::1]:1234/token")
		}},
		{"sandbox", func(c *Config) { c.APNsBaseURL = SandboxAPNsBaseURL }},
		{"limits", func(c *Config) { c.Burst, c.Refill, c.MaxInFlight, c.Timeout = 1, time.Minute, 1, time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mod(&c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDefaults: zero values take the documented defaults.
func TestDefaults(t *testing.T) {
	set, err := validConfig().parse()
	if err != nil {
		t.Fatal(err)
	}
	if set.burst != 6 || set.refill != 10*time.Second || set.maxInFlight != 32 || set.timeout != 10*time.Second {
		t.Errorf("defaults: %+v", set)
	}
	if want := "https://fcm.googleapis.com/v1/projects/" + testProject + "/messages:send"; set.fcm.sendURL != want {
		t.Errorf("send URL %q, want %q", set.fcm.sendURL, want)
	}
	if set.apns.baseURL != "https://api.push.apple.com" {
		t.Errorf("APNs URL %q", set.apns.baseURL)
	}
	if set.fcm.tokenURL != "https://oauth2.googleapis.com/token" {
		t.Errorf("token URL %q", set.fcm.tokenURL)
	}
}
