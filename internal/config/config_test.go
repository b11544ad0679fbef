package config

import (
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string, euid int) Env {
	return Env{Getenv: func(k string) string { return vars[k] }, Euid: euid}
}

func TestDefaultsMatchTheContract(t *testing.T) {
	c, err := Parse([]string{"--insecure-listen", "127.0.0.1:0"}, env(nil, 1000), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"grace", c.Grace, 30 * time.Second},
		{"probe", c.ProbeTimeout, 10 * time.Second},
		{"heartbeat interval", c.HeartbeatInterval, 30 * time.Second},
		{"heartbeat timeout", c.HeartbeatTimeout, 30 * time.Second},
		{"message timeout", c.MessageTimeout, 30 * time.Second},
		{"write timeout", c.WriteTimeout, 10 * time.Second},
		{"header timeout", c.HeaderTimeout, 5 * time.Second},
		{"drain", c.DrainTimeout, 10 * time.Second},
		{"max frame", c.MaxFrameBytes, 256 << 10},
		{"max phones", c.MaxPhones, 16},
		{"phone queue", c.PhoneQueueBytes, 4 << 20},
		{"https", c.HTTPSListen, ":443"},
		{"http", c.HTTPListen, ":80"},
		{"cert cache", c.CertCache, "~/.pyrycode-relay/certs"},
		{"metrics", c.MetricsListen, "127.0.0.1:9090"},
		{"upgrade rate", c.UpgradeRate, 0.2},
		{"upgrade burst", c.UpgradeBurst, 20},
		{"per-ip", c.MaxConnsPerIP, 256},
		{"conns", c.MaxConns, 100000},
		{"queued", c.MaxQueuedBytes, int64(1 << 30)},
		{"push burst", c.PushBurst, 6},
		{"push refill", c.PushRefill, 10 * time.Second},
		{"push in flight", c.PushMaxInFlight, 32},
		{"io", c.IO, defaultIO},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.Production || c.FCMCredentials != nil || c.APNsKey != nil {
		t.Errorf("environment leaked into a clean parse: %+v", c)
	}
}

func TestProductionMode(t *testing.T) {
	on := map[string]string{EnvProduction: "1"}
	cases := []struct {
		args []string
		vars map[string]string
		euid int
		want string // "" = accepted
	}{
		{[]string{"--insecure-listen", ":8080"}, on, 1000, "needs --trusted-proxies"},
		{[]string{"--insecure-listen", ":8080", "--trusted-proxies", "127.0.0.1"}, on, 1000, ""},
		{[]string{"--insecure-listen", ":8080", "--trusted-proxies", "10.0.0.0/8"}, on, 0, "refusing to run as root"},
		{[]string{"--insecure-listen", ":8080"}, map[string]string{EnvProduction: "0"}, 0, ""},
		{[]string{"--insecure-listen", ":8080"}, map[string]string{EnvProduction: "maybe"}, 1000, EnvProduction + ": must be 1 or 0"},
	}
	for _, tc := range cases {
		_, err := Parse(tc.args, env(tc.vars, tc.euid), io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v %v: %v", tc.args, tc.vars, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v %v: got %v, want %q", tc.args, tc.vars, err, tc.want)
		}
	}
}

func TestSecretsAreReadButNeverEchoed(t *testing.T) {
	vars := map[string]string{EnvFCMCredentials: `{"type":"service_account","private_key":"SECRET"}`, EnvAPNsKey: "-----BEGIN PRIVATE KEY-----SECRET"}
	c, err := Parse([]string{"--insecure-listen", ":1"}, env(vars, 1000), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.FCMCredentials) != vars[EnvFCMCredentials] || string(c.APNsKey) != vars[EnvAPNsKey] {
		t.Fatal("secrets not read")
	}
	for _, v := range Environment {
		if (v.Name == EnvFCMCredentials || v.Name == EnvAPNsKey || v.Name == EnvNATSURL) != v.Secret {
			t.Errorf("%s: Secret=%v", v.Name, v.Secret)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	p, err := ParsePrefixes(" 10.0.0.0/8, 127.0.0.1 ,::1,192.168.1.7/24")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "127.0.0.1/32", "::1/128", "192.168.1.0/24"}
	for i, w := range want {
		if p[i].String() != w {
			t.Errorf("prefix %d = %s, want %s", i, p[i], w)
		}
	}
	for _, bad := range []string{"", ",", "10.0.0.0/33", "example.com", "1.2.3"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLimitFlagsValidated(t *testing.T) {
	for _, tc := range []struct{ args []string }{
		{[]string{"--upgrade-rate", "0"}},
		{[]string{"--upgrade-burst", "0"}},
		{[]string{"--max-connections-per-ip", "0"}},
		{[]string{"--max-connections", "-1"}},
		{[]string{"--max-queued-bytes", "10"}},
		{[]string{"--proxy-protocol"}},
		{[]string{"--push-burst", "0"}},
		{[]string{"--push-refill", "0s"}},
		{[]string{"--push-max-in-flight", "0"}},
		{[]string{"--metrics-listen", "nope"}},
		{[]string{"--trusted-proxies", "bogus"}},
		{[]string{"--io", "threads"}},
		{[]string{"--loops", "-1"}},
		{[]string{"--loops", "2000"}},
		{[]string{"--io", "goroutine", "--loops", "2"}},
	} {
		args := append([]string{"--insecure-listen", ":1"}, tc.args...)
		if _, err := Parse(args, env(nil, 1000), io.Discard); err == nil {
			t.Errorf("%v accepted", tc.args)
		}
	}
}

func TestClusterFlags(t *testing.T) {
	base := []string{"--insecure-listen", ":1"}
	cases := []struct {
		args []string
		vars map[string]string
		want string // "" = accepted
	}{
		{[]string{"--nats-url", "nats://127.0.0.1:4222"}, nil, ""},
		{[]string{"--nats-url", "nats://a:4222, tls://b:4222", "--cluster-name", "prod.eu", "--node-id", "eu-1"}, nil, ""},
		{nil, map[string]string{EnvNATSURL: "nats://u:pw@127.0.0.1:4222"}, ""},
		{[]string{"--nats-url", "http://u:SECRET@x:1"}, nil, "URL 1 is not"},
		{[]string{"--nats-url", "nats://ok:1,::bad"}, nil, "URL 2 is not"},
		{[]string{"--nats-creds", "f.creds"}, nil, "--nats-creds needs --nats-url"},
		{[]string{"--node-id", "n1"}, nil, "--node-id needs --nats-url"},
		{[]string{"--nats-url", "nats://a:1", "--nats-cert", "c.pem"}, nil, "must be given together"},
		{[]string{"--nats-url", "nats://a:1", "--cluster-name", "bad name"}, nil, "--cluster-name"},
		{[]string{"--nats-url", "nats://a:1", "--node-id", "-x"}, nil, "--node-id"},
		{[]string{"--nats-url", "nats://a:1", "--nats-replicas", "3"}, nil, ""},
		{[]string{"--nats-url", "nats://a:1", "--nats-replicas", "0"}, nil, "--nats-replicas"},
	}
	for _, tc := range cases {
		_, err := Parse(append(append([]string{}, base...), tc.args...), env(tc.vars, 1000), io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		case err != nil && strings.Contains(err.Error(), "SECRET"):
			t.Errorf("%v: error echoes a credential: %v", tc.args, err)
		}
	}
	c, err := Parse([]string{"--insecure-listen", ":1", "--nats-url", "nats://flag:1"}, env(map[string]string{EnvNATSURL: "nats://env:1"}, 1000), io.Discard)
	if err != nil || c.NATSURL != "nats://flag:1" {
		t.Fatalf("the flag must win over the environment: %q %v", c.NATSURL, err)
	}
	if c.ClusterName != "pyrycode-relay" {
		t.Fatalf("default cluster name %q", c.ClusterName)
	}
}

func TestIOFlag(t *testing.T) {
	if defaultIO != "loop" && runtime.GOOS == "linux" || defaultIO != "goroutine" && runtime.GOOS != "linux" {
		t.Fatalf("default --io %q on %s", defaultIO, runtime.GOOS)
	}
	c, err := Parse([]string{"--insecure-listen", ":1", "--io", "goroutine"}, Env{Getenv: func(string) string { return "" }}, io.Discard)
	if err != nil || c.IO != "goroutine" {
		t.Fatalf("--io goroutine: %q, %v", c.IO, err)
	}
	if runtime.GOOS == "linux" {
		c, err := Parse([]string{"--insecure-listen", ":1", "--loops", "3"}, Env{Getenv: func(string) string { return "" }}, io.Discard)
		if err != nil || c.Loops != 3 {
			t.Fatalf("--loops 3: %d, %v", c.Loops, err)
		}
	}
}
