package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

type netIP = net.IP

func ip(a, b, c, d byte) net.IP { return net.IPv4(a, b, c, d).To4() }

func TestSeqCheck(t *testing.T) {
	var s seqCheck
	for _, q := range []uint64{0, 1, 2, 4, 3, 3, 6, 1, 7} {
		s.see(q)
	}
	if s.unique != 7 || s.dup != 2 || s.reord != 1 || s.lost(8) != 1 || s.lost(7) != 0 {
		t.Fatalf("unique %d dup %d reord %d lost(8) %d", s.unique, s.dup, s.reord, s.lost(8))
	}
	var in seqCheck
	if n := testing.AllocsPerRun(100, func() { in.see(in.next) }); n != 0 {
		t.Errorf("in-order see allocates %v", n)
	}
}

func TestHist(t *testing.T) {
	var h hist
	for v := int64(1); v <= 100000; v++ {
		h.record(v * 1000)
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50e6}, {0.99, 99e6}, {0.999, 99.9e6}} {
		got := float64(h.quantile(c.q))
		if got < c.want*0.99 || got > c.want*1.02 {
			t.Errorf("q%.3f = %.0f, want about %.0f", c.q, got, c.want)
		}
	}
	if h.quantile(1) != 100000*1000 || h.max != 100000*1000 || h.min != 1000 {
		t.Errorf("max %d min %d q1 %d", h.max, h.min, h.quantile(1))
	}
	for i := range histIndex(1 << 62) { // the last buckets reach math.MaxInt64
		if histUpper(i) >= histUpper(i+1) || histIndex(histUpper(i)) != i || histIndex(histUpper(i)+1) != i+1 {
			t.Fatalf("bucket %d bounds wrong", i)
		}
	}
	if n := testing.AllocsPerRun(100, func() { h.record(12345) }); n != 0 {
		t.Errorf("record allocates %v", n)
	}
}

func TestFrames(t *testing.T) {
	f := appendFrame(nil, typeData, 7, 42, 123456789, 1024)
	if len(f) != 1024 || !json.Valid(f) {
		t.Fatalf("frame %d bytes, valid %v: %.100s", len(f), json.Valid(f), f)
	}
	seq, ts, ok := frameFields(f)
	if !ok || seq != 42 || ts != 123456789 {
		t.Errorf("fields %d %d %v", seq, ts, ok)
	}
	if small := appendFrame(nil, typeHello, 1, 0, 5, 10); !json.Valid(small) || !isHello(small) {
		t.Errorf("small hello %s", small)
	}
	ack := appendAck(nil, 3, 99)
	if n, ok := intField(ack, `"ack":`); !json.Valid(ack) || !ok || n != 99 {
		t.Errorf("ack %s", ack)
	}
	env := appendEnvelope(nil, []byte("c-0123456789abcdef"), f)
	if len(env) != envelopeLen([]byte("c-0123456789abcdef"), f) || !json.Valid(env) {
		t.Errorf("envelope length %d, valid %v", len(env), json.Valid(env))
	}
	if id, ok := envelopeConnID(env); !ok || string(id) != "c-0123456789abcdef" {
		t.Errorf("conn_id %q", id)
	}
	if _, ok := isNotice(env); ok {
		t.Error("envelope taken for a notice")
	}
	if code, ok := isNotice([]byte(`{"conn_id":"c-1","close_code":4401}`)); !ok || code != 4401 {
		t.Errorf("notice %d %v", code, ok)
	}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() { buf = appendFrame(buf[:0], typeData, 7, 42, 1, 1024) }); n != 0 {
		t.Errorf("appendFrame allocates %v", n)
	}
}

func TestParseSourceIPs(t *testing.T) {
	ips, err := ParseSourceIPs("127.0.0.2-127.0.0.50, 127.0.1.1")
	if err != nil || len(ips) != 50 || !ips[0].Equal(ip(127, 0, 0, 2)) || !ips[48].Equal(ip(127, 0, 0, 50)) || !ips[49].Equal(ip(127, 0, 1, 1)) {
		t.Fatalf("%v %v", ips, err)
	}
	ips, err = ParseSourceIPs("127.0.0.255-127.0.1.1")
	if err != nil || len(ips) != 3 {
		t.Errorf("across an octet: %v %v", ips, err)
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.1", "x", "127.0.0.1-y", "10.0.0.0-10.1.0.1"} {
		if _, err := ParseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRemoteRefused(t *testing.T) {
	for _, u := range []string{"ws://192.0.2.1:8080", "wss://198.51.100.7"} {
		_, err := Run(context.Background(), Config{URL: u, Duration: time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, err := Run(context.Background(), Config{URL: "http2://127.0.0.1"}); err == nil {
		t.Error("bad scheme accepted")
	}
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Run(context.Background(), Config{URL: "ws://" + addr, Binaries: 1, Phones: 1, Duration: time.Millisecond})
	if !errors.Is(err, errNoConnections) || !strings.Contains(err.Error(), "connect refused") {
		t.Errorf("err = %v", err)
	}
}

func TestChatDefaults(t *testing.T) {
	for _, c := range []struct {
		min, max, wantMin, wantMax time.Duration
	}{
		{0, 0, DefaultPauseMin, DefaultPauseMax},
		{0, 2 * time.Second, 2 * time.Second, 2 * time.Second},
		{0, 60 * time.Second, DefaultPauseMin, 60 * time.Second},
		{40 * time.Second, 0, 40 * time.Second, DefaultPauseMax},
		{120 * time.Second, 0, 120 * time.Second, 120 * time.Second},
		{time.Second, 3 * time.Second, time.Second, 3 * time.Second},
	} {
		got := Config{Mode: ModeChat, PauseMin: c.min, PauseMax: c.max}.WithDefaults()
		if got.PauseMin != c.wantMin || got.PauseMax != c.wantMax {
			t.Errorf("pauses %v, %v: got %v, %v, want %v, %v", c.min, c.max, got.PauseMin, got.PauseMax, c.wantMin, c.wantMax)
		}
	}
	d := Config{Mode: ModeChat}.WithDefaults()
	if d.Phones != 100 || d.Binaries != 100 || d.Duration != 3*time.Minute {
		t.Errorf("defaults: %d phones, %d binaries, %v", d.Phones, d.Binaries, d.Duration)
	}
	if d := (Config{Mode: ModeChat, Phones: 8}).WithDefaults(); d.Binaries != 8 {
		t.Errorf("binaries default to the phones: %d", d.Binaries)
	}
	for _, bad := range []Config{
		{Mode: ModeChat, PauseMin: 3 * time.Second, PauseMax: time.Second},
		{Mode: ModeChat, PauseMin: -time.Second},
	} {
		bad.URL = "ws://127.0.0.1:1"
		if _, err := Run(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "pause") {
			t.Errorf("pauses %v, %v: err = %v", bad.PauseMin, bad.PauseMax, err)
		}
	}
}
