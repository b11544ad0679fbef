package push

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Identities of the test credentials. None of these is secret.
const (
	testProject   = "pyry-test-project"
	testEmail     = "relay@pyry-test-project.iam.gserviceaccount.com"
	testKeyID     = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	testAPNsKeyID = "ABC123DEFG"
	testTeamID    = "TEAM123456"
	testTopic     = "dev.pyrycode.app"
)

var (
	testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	testECKey = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func pkcs8PEM(key any) string {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// keyLines returns the base64 lines of a PEM key: any of them in a log or
// an error means key material leaked.
func keyLines(p string) []string {
	var out []string
	for _, l := range strings.Split(p, "\n") {
		if len(l) >= 16 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

// serviceAccountJSON builds a Google service-account key around the test
// RSA key, shaped like the ones the Cloud console hands out.
func serviceAccountJSON(tokenURI, project string) []byte {
	m := map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              testKeyID,
		"private_key":                 pkcs8PEM(testRSAKey()),
		"client_email":                testEmail,
		"client_id":                   "104815162342",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   tokenURI,
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}
	if project == "" {
		delete(m, "project_id")
	}
	if tokenURI == "" {
		delete(m, "token_uri")
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// fakeClock is the injected Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuf captures slog output from any goroutine.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// settle waits for every admitted wake to finish. Only call it from the
// goroutine that made the wakes.
func settle(s *Sender) { s.wg.Wait() }

// count reads one series of pyrycode_relay_push_wakes_total.
func count(s *Sender, platform, outcome string) float64 {
	return testutil.ToFloat64(s.metrics.wakes.WithLabelValues(platform, outcome))
}

// wantCounts checks every series of pyrycode_relay_push_wakes_total:
// those named in want ("fcm/sent") have that value, the rest are zero.
func wantCounts(t *testing.T, s *Sender, want map[string]float64) {
	t.Helper()
	for _, p := range platformNames {
		for _, o := range outcomeNames {
			if got := count(s, p, o); got != want[p+"/"+o] {
				t.Errorf("push_wakes_total{%s,%s} = %v, want %v", p, o, got, want[p+"/"+o])
			}
		}
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// googleError is a Google API error body.
func googleError(code int, status, errorCode string) string {
	details := ""
	if errorCode != "" {
		details = `,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + errorCode + `"}]`
	}
	return fmt.Sprintf(`{"error":{"code":%d,"message":"Requested entity was not found.","status":"%s"%s}}`, code, status, details)
}

// reply answers with status and body.
func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}
