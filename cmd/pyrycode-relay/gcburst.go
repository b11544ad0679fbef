package main

import (
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"
)

// Reconnect storms: when a relay restarts, or a network comes back, every
// client connects again within seconds. Each handshake leaves garbage (a
// TLS handshake several times its connection's live size), and the
// collector lets the heap grow to twice what was live before it collects
// (GOGC=100), so the storm's peak, which stays resident, is about twice
// the memory its connections need. While accepts arrive faster than
// burstAccepts a second, the relay collects at GOGC=burstGOGC instead,
// which caps the peak at one and a half times; a second with fewer than
// half as many accepts ends it. Steady traffic, even heavy, is untouched:
// a lower GOGC for all traffic costs about a fifth more CPU per frame
// (docs/performance.md). An operator who sets GOGC keeps it.
const (
	burstAccepts = 256
	burstGOGC    = 50
)

// gcBurst switches GOGC for the duration of a burst of accepts.
type gcBurst struct {
	mu     sync.Mutex
	start  time.Time // of the counting window
	n      int       // accepts in it
	on     bool      // GOGC is burstGOGC
	normal int       // the GOGC to go back to
	set    func(int) int
	now    func() time.Time
	log    func(msg string, args ...any) // Info: a storm's start and end
	after  func(time.Duration, func())   // time.AfterFunc, without its Timer
}

// newGCBurst returns nil when the operator set GOGC.
func newGCBurst(log *slog.Logger) *gcBurst {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return nil
	}
	return &gcBurst{
		set:   debug.SetGCPercent,
		now:   time.Now,
		log:   log.Info,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
	}
}

// note counts an accept. Outside a burst the count restarts every second
// and reaching burstAccepts starts one.
func (g *gcBurst) note() {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on && now.Sub(g.start) >= time.Second {
		g.start, g.n = now, 0
	}
	g.n++
	if !g.on && g.n >= burstAccepts {
		g.on = true
		g.normal = g.set(burstGOGC)
		g.start, g.n = now, 0
		g.log("reconnect_storm_started", "gogc", burstGOGC)
		g.after(time.Second, g.check)
	}
}

// check runs about every second while a burst lasts, and ends it when the
// accepts since the last check came at less than half a burst's pace.
func (g *gcBurst) check() {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	el := now.Sub(g.start).Seconds()
	slow := el <= 0 || float64(g.n)/el < burstAccepts/2
	g.start, g.n = now, 0
	if slow {
		g.on = false
		g.set(g.normal)
		g.log("reconnect_storm_ended", "gogc", g.normal)
		return
	}
	g.after(time.Second, g.check)
}

// listener counts accepts for g.
func (g *gcBurst) listener(ln net.Listener) net.Listener {
	if g == nil {
		return ln
	}
	return &burstListener{Listener: ln, g: g}
}

type burstListener struct {
	net.Listener
	g *gcBurst
}

func (l *burstListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		l.g.note()
	}
	return nc, err
}
