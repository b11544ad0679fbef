package push

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is one fake service: it records requests, reports what is wrong
// with them, can hold them at a gate, and answers with respond (or its
// success answer).
type fake struct {
	name    string
	arrived chan struct{}

	mu        sync.Mutex
	gate      chan struct{}
	respond   http.HandlerFunc
	hits      int
	paths     []string
	active    int
	maxActive int
	problems  []string
}

func newFake(name string) *fake { return &fake{name: name, arrived: make(chan struct{}, 1000)} }

func (f *fake) problem(format string, args ...any) {
	f.mu.Lock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// hold makes requests wait until release (or until the client leaves).
func (f *fake) hold() {
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
}

func (f *fake) release() {
	f.mu.Lock()
	g := f.gate
	f.gate = nil
	f.mu.Unlock()
	if g != nil {
		close(g)
	}
}

func (f *fake) setRespond(h http.HandlerFunc) {
	f.mu.Lock()
	f.respond = h
	f.mu.Unlock()
}

func (f *fake) stats() (hits, maxActive int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits, f.maxActive
}

// waitArrivals waits for n more requests to have reached the handler.
func (f *fake) waitArrivals(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-f.arrived:
		case <-deadline:
			t.Fatalf("%s: timed out waiting for a request", f.name)
		}
	}
}

func (f *fake) handler(check func(r *http.Request, body []byte), ok http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			f.problem("%s: reading body: %v", f.name, err)
			return
		}
		f.mu.Lock()
		f.hits++
		f.paths = append(f.paths, r.URL.Path)
		f.active++
		f.maxActive = max(f.maxActive, f.active)
		gate, respond := f.gate, f.respond
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.active--
			f.mu.Unlock()
		}()
		check(r, body)
		select {
		case f.arrived <- struct{}{}:
		default:
		}
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				// Abort without a response: returning would send an
				// empty 200, which a client that just gave up can still
				// read (its TLS close_notify goes out before its socket
				// closes, and the transport prefers a racing response).
				panic(http.ErrAbortHandler)
			}
		}
		if respond != nil {
			respond(w, r)
			return
		}
		ok(w, r)
	})
}

// env is a complete fake world: Google's token endpoint, FCM and APNs on
// loopback TLS servers, a transport trusting them, a clock and captured
// logs.
type env struct {
	t     *testing.T
	clock *fakeClock
	logs  *logBuf

	oauth, fcm, apns          *fake
	oauthSrv, fcmSrv, apnsSrv *httptest.Server
	rt                        *http.Transport

	mu           sync.Mutex
	tokenURL     string   // the aud a token request must carry
	fcmProject   string   // the project FCM requests must name
	expiresIn    int64    // what the token endpoint says; <0: omit
	accessTokens []string // issued, oldest first
	fcmSeen      []fcmSeen
	apnsSeen     []apnsSeen
	secrets      []string
}

type fcmSeen struct{ token, access string }

type apnsSeen struct {
	token, jwt string
	iat        int64
}

func newEnv(t *testing.T) *env {
	e := &env{
		t:          t,
		clock:      newClock(),
		logs:       &logBuf{},
		oauth:      newFake("oauth"),
		fcm:        newFake("fcm"),
		apns:       newFake("apns"),
		fcmProject: testProject,
		expiresIn:  3600,
	}
	e.oauthSrv = httptest.NewTLSServer(e.oauthHandler())
	e.fcmSrv = httptest.NewTLSServer(e.fcmHandler())
	e.apnsSrv = httptest.NewUnstartedServer(e.apnsHandler())
	e.apnsSrv.EnableHTTP2 = true
	e.apnsSrv.StartTLS()
	e.tokenURL = e.oauthSrv.URL + "/token"
	for _, s := range []*httptest.Server{e.oauthSrv, e.fcmSrv, e.apnsSrv} {
		t.Cleanup(s.Close)
	}
	pool := x509.NewCertPool()
	for _, s := range []*httptest.Server{e.oauthSrv, e.fcmSrv, e.apnsSrv} {
		pool.AddCert(s.Certificate())
	}
	e.rt = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	t.Cleanup(e.rt.CloseIdleConnections)
	t.Cleanup(func() {
		for _, f := range []*fake{e.oauth, e.fcm, e.apns} {
			f.mu.Lock()
			for _, p := range f.problems {
				t.Error(p)
			}
			f.mu.Unlock()
		}
	})
	e.addSecret(string(serviceAccountJSON(e.tokenURL, testProject)))
	for _, l := range keyLines(pkcs8PEM(testRSAKey())) {
		e.addSecret(l)
	}
	for _, l := range keyLines(pkcs8PEM(testECKey())) {
		e.addSecret(l)
	}
	return e
}

func (e *env) addSecret(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
	// A JWT might leak one segment at a time.
	if strings.Count(s, ".") == 2 {
		for _, seg := range strings.Split(s, ".") {
			if len(seg) >= 16 {
				e.secrets = append(e.secrets, seg)
			}
		}
	}
}

// fcmToken and apnsToken make push tokens shaped like the real ones.
func (e *env) fcmToken() string {
	tok := "fcmSECRET" + randHex(20) + ":APA91b" + randHex(40)
	e.addSecret(tok)
	return tok
}

func (e *env) apnsToken() string {
	tok := randHex(32)
	e.addSecret(tok)
	return tok
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// config configures both platforms against the fakes.
func (e *env) config() Config {
	return Config{
		FCMCredentials: serviceAccountJSON(e.tokenURL, testProject),
		FCMBaseURL:     e.fcmSrv.URL,
		APNsKey:        []byte(pkcs8PEM(testECKey())),
		APNsKeyID:      testAPNsKeyID,
		APNsTeamID:     testTeamID,
		APNsTopic:      testTopic,
		APNsBaseURL:    e.apnsSrv.URL,
		Transport:      e.rt,
		Log:            e.logger(),
		Now:            e.clock.Now,
	}
}

// start makes a Sender that is shut down, and whose logs are searched for
// secrets, when the test ends.
func (e *env) start(c Config) *Sender {
	e.t.Helper()
	s, err := New(c)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() {
		for _, f := range []*fake{e.oauth, e.fcm, e.apns} {
			f.release()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			e.t.Errorf("Shutdown: %v", err)
		}
		e.checkLogs()
	})
	return s
}

// checkLogs fails the test if any secret reached the logs.
func (e *env) checkLogs() {
	e.t.Helper()
	logs := e.logs.String()
	e.mu.Lock()
	secrets := slices.Clone(e.secrets)
	e.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			e.t.Errorf("a secret reached the logs: %.12s...", s)
		}
	}
	for _, s := range []string{"PRIVATE KEY", "ya29.", "earer ", "assertion"} {
		if strings.Contains(logs, s) {
			e.t.Errorf("logs contain %q", s)
		}
	}
	if e.t.Failed() {
		e.t.Logf("logs:\n%s", logs)
	}
}

func (e *env) access() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.accessTokens)
}

func (e *env) fcmRequests() []fcmSeen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.fcmSeen)
}

func (e *env) apnsRequests() []apnsSeen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.apnsSeen)
}

// decodeJWT splits a compact JWS, decoding header and claims and the
// signature, and returns the SHA-256 of the signing input.
func decodeJWT(tok string) (header, claims map[string]any, sig []byte, digest []byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil, nil, nil, fmt.Errorf("%d parts", len(parts))
	}
	enc := base64.RawURLEncoding
	h, err1 := enc.DecodeString(parts[0])
	c, err2 := enc.DecodeString(parts[1])
	sig, err3 := enc.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, nil, nil, nil, fmt.Errorf("bad base64url")
	}
	if err := json.Unmarshal(h, &header); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("header: %v", err)
	}
	if err := json.Unmarshal(c, &claims); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("claims: %v", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	return header, claims, sig, sum[:], nil
}

// headerKeys checks that r carries exactly want (canonical names) plus
// any of the headers Go's client adds on its own.
func headerKeys(r *http.Request, want ...string) string {
	transport := []string{"Content-Length", "User-Agent", "Accept-Encoding"}
	for k := range r.Header {
		if !slices.Contains(want, k) && !slices.Contains(transport, k) {
			return "unexpected header " + k
		}
	}
	for _, k := range want {
		if len(r.Header.Values(k)) != 1 {
			return "header " + k + " missing or repeated"
		}
	}
	return ""
}

func (e *env) oauthHandler() http.Handler {
	f := e.oauth
	return f.handler(func(r *http.Request, body []byte) {
		if r.Method != http.MethodPost || r.URL.Path != "/token" || r.URL.RawQuery != "" {
			f.problem("oauth: %s %s", r.Method, r.URL)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			f.problem("oauth: Content-Type %q", ct)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil || len(form) != 2 || len(form["grant_type"]) != 1 || len(form["assertion"]) != 1 {
			f.problem("oauth: form fields %v", slices.Sorted(maps.Keys(form)))
			return
		}
		if g := form.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			f.problem("oauth: grant_type %q", g)
		}
		assertion := form.Get("assertion")
		e.addSecret(assertion)
		header, claims, sig, digest, err := decodeJWT(assertion)
		if err != nil {
			f.problem("oauth: assertion: %v", err)
			return
		}
		if err := rsa.VerifyPKCS1v15(&testRSAKey().PublicKey, crypto.SHA256, digest, sig); err != nil {
			f.problem("oauth: assertion signature: %v", err)
		}
		if want := map[string]any{"alg": "RS256", "typ": "JWT", "kid": testKeyID}; !reflect.DeepEqual(header, want) {
			f.problem("oauth: JWT header %v", header)
		}
		e.mu.Lock()
		aud := e.tokenURL
		e.mu.Unlock()
		now := float64(e.clock.Now().Unix())
		want := map[string]any{
			"iss":   testEmail,
			"scope": "https://www.googleapis.com/auth/firebase.messaging",
			"aud":   aud,
			"iat":   now,
			"exp":   now + 3600,
		}
		if !reflect.DeepEqual(claims, want) {
			f.problem("oauth: JWT claims %v, want %v", claims, want)
		}
	}, func(w http.ResponseWriter, r *http.Request) {
		tok := "ya29.SECRET" + randHex(40)
		e.addSecret(tok)
		e.mu.Lock()
		e.accessTokens = append(e.accessTokens, tok)
		exp := e.expiresIn
		e.mu.Unlock()
		resp := map[string]any{"access_token": tok, "token_type": "Bearer"}
		if exp >= 0 {
			resp["expires_in"] = exp
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(resp)
	})
}

func (e *env) fcmHandler() http.Handler {
	f := e.fcm
	return f.handler(func(r *http.Request, body []byte) {
		e.mu.Lock()
		project := e.fcmProject
		latest := ""
		if n := len(e.accessTokens); n > 0 {
			latest = e.accessTokens[n-1]
		}
		e.mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/"+project+"/messages:send" || r.URL.RawQuery != "" {
			f.problem("fcm: %s %s", r.Method, r.URL.Path)
		}
		if p := headerKeys(r, "Authorization", "Content-Type"); p != "" {
			f.problem("fcm: %s", p)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			f.problem("fcm: Content-Type %q", ct)
		}
		auth := r.Header.Get("Authorization")
		if latest == "" || auth != "Bearer "+latest {
			f.problem("fcm: Authorization is not the latest access token")
		}
		var m struct {
			Message struct {
				Token string `json:"token"`
			} `json:"message"`
		}
		json.Unmarshal(body, &m)
		want := `{"message":{"token":"` + m.Message.Token + `","android":{"priority":"HIGH"}}}`
		if string(body) != want {
			f.problem("fcm: body %s", body)
		}
		e.mu.Lock()
		e.fcmSeen = append(e.fcmSeen, fcmSeen{token: m.Message.Token, access: strings.TrimPrefix(auth, "Bearer ")})
		e.mu.Unlock()
	}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"name":"projects/`+testProject+`/messages/0:1700000000000000%abcdef"}`)
	})
}

func (e *env) apnsHandler() http.Handler {
	f := e.apns
	return f.handler(func(r *http.Request, body []byte) {
		if r.ProtoMajor != 2 {
			f.problem("apns: protocol %s", r.Proto)
		}
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		if r.Method != http.MethodPost || !ok || token == "" || r.URL.RawQuery != "" {
			f.problem("apns: %s %s", r.Method, r.URL.Path)
		}
		if p := headerKeys(r, "Apns-Push-Type", "Apns-Priority", "Apns-Topic", "Authorization"); p != "" {
			f.problem("apns: %s", p)
		}
		for k, v := range map[string]string{"Apns-Push-Type": "background", "Apns-Priority": "5", "Apns-Topic": testTopic} {
			if got := r.Header.Get(k); got != v {
				f.problem("apns: %s %q, want %q", k, got, v)
			}
		}
		if string(body) != `{"aps":{"content-available":1}}` {
			f.problem("apns: body %s", body)
		}
		jwt, ok := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
		if !ok {
			f.problem("apns: Authorization is not a bearer token")
			return
		}
		e.addSecret(jwt)
		header, claims, sig, digest, err := decodeJWT(jwt)
		if err != nil {
			f.problem("apns: JWT: %v", err)
			return
		}
		if len(sig) != 64 || !ecdsa.Verify(&testECKey().PublicKey, digest,
			new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			f.problem("apns: JWT signature does not verify")
		}
		if want := map[string]any{"alg": "ES256", "kid": testAPNsKeyID}; !reflect.DeepEqual(header, want) {
			f.problem("apns: JWT header %v", header)
		}
		iat, _ := claims["iat"].(float64)
		now := e.clock.Now().Unix()
		if len(claims) != 2 || claims["iss"] != testTeamID || int64(iat) > now || now-int64(iat) >= 3600 {
			f.problem("apns: JWT claims %v (now %d)", claims, now)
		}
		e.mu.Lock()
		e.apnsSeen = append(e.apnsSeen, apnsSeen{token: token, jwt: jwt, iat: int64(iat)})
		e.mu.Unlock()
	}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("apns-id", "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D")
		w.WriteHeader(http.StatusOK)
	})
}
