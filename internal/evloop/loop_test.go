//go:build linux

package evloop

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type funcTask func()

func (f funcTask) RunTask() { f() }

func newTestGroup(t *testing.T, n int) *Group {
	t.Helper()
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// Tasks posted from many goroutines all run, each exactly once.
func TestPostFromManyGoroutines(t *testing.T) {
	g := newTestGroup(t, 2)
	const workers, each = 8, 500
	var ran atomic.Int64
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := g.loops[w%g.Len()]
			for range each {
				l.Post(funcTask(func() {
					if ran.Add(1) == workers*each {
						close(done)
					}
				}))
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ran %d of %d tasks", ran.Load(), workers*each)
	}
}

// Timers fire in deadline order, not before their deadline, and a stopped
// or moved timer fires only at its new deadline.
func TestTimersOnLoop(t *testing.T) {
	g := newTestGroup(t, 1)
	l := g.Pick()
	type fired struct {
		name string
		at   int64
	}
	ch := make(chan fired, 8)
	mk := func(name string) *Timer {
		tm := &Timer{}
		tm.F = func(*Timer) { ch <- fired{name, Now()} }
		return tm
	}
	a, b, c, d := mk("a"), mk("b"), mk("c"), mk("d")
	start := make(chan int64, 1)
	l.Post(funcTask(func() {
		now := Now()
		l.Arm(a, now+int64(60*time.Millisecond))
		l.Arm(b, now+int64(20*time.Millisecond))
		l.Arm(c, now+int64(40*time.Millisecond))
		l.Arm(d, now+int64(10*time.Millisecond))
		l.Stop(d)                                // never fires
		l.Arm(b, now+int64(80*time.Millisecond)) // moved later
		start <- now
	}))
	t0 := <-start
	want := []struct {
		name string
		at   time.Duration
	}{{"c", 40 * time.Millisecond}, {"a", 60 * time.Millisecond}, {"b", 80 * time.Millisecond}}
	for _, w := range want {
		select {
		case f := <-ch:
			if f.name != w.name {
				t.Fatalf("fired %s, want %s", f.name, w.name)
			}
			if f.at-t0 < int64(w.at) {
				t.Fatalf("%s fired after %v, before its %v deadline", f.name, time.Duration(f.at-t0), w.at)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not fire", w.name)
		}
	}
	select {
	case f := <-ch:
		t.Fatalf("unexpected timer %s", f.name)
	case <-time.After(50 * time.Millisecond):
	}
}

// echoHandler echoes what it reads through the loop's shared buffer and
// unregisters on end of stream.
type echoHandler struct {
	l    *Loop
	fd   int
	slot Slot
	done chan struct{}
}

func (h *echoHandler) OnEvents(ev uint32) {
	buf := h.l.Buf()
	n, err := unix.Read(h.fd, buf)
	if n > 0 {
		_, _ = unix.Write(h.fd, buf[:n])
		return
	}
	if err == unix.EAGAIN {
		return
	}
	h.l.Remove(h.fd, h.slot)
	unix.Close(h.fd)
	close(h.done)
}

// A socket registered with a loop is served on readiness, and its handler
// is not called after Remove.
func TestSocketEcho(t *testing.T) {
	g := newTestGroup(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := server.(*net.TCPConn).File() // a descriptor of our own
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	l := g.Pick()
	h := &echoHandler{l: l, fd: fd, done: make(chan struct{})}
	added := make(chan error, 1)
	l.Post(funcTask(func() {
		var err error
		h.slot, err = l.Add(fd, EventIn, h)
		added <- err
	}))
	if err := <-added; err != nil {
		t.Fatal(err)
	}
	client.SetDeadline(time.Now().Add(5 * time.Second))
	for i := range 20 {
		msg := []byte{byte(i), 'x', 'y'}
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 3)
		if _, err := io.ReadFull(client, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
	client.Close()
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not see the hang-up")
	}
	count := make(chan int, 1)
	l.Post(funcTask(func() { count <- l.Count() }))
	if n := <-count; n != 0 {
		t.Fatalf("%d sockets still registered", n)
	}
}

// A task posted after the group is closed is dropped, not run, and does
// not write to the loop's (closed, maybe reused) eventfd.
func TestPostAfterCloseIsDropped(t *testing.T) {
	g, err := NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	l := g.Pick()
	ran := make(chan struct{}, 1)
	l.Post(funcTask(func() { ran <- struct{}{} }))
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("task before Close did not run")
	}
	g.Close()
	l.Post(funcTask(func() { ran <- struct{}{} }))
	select {
	case <-ran:
		t.Fatal("task posted after Close ran")
	case <-time.After(50 * time.Millisecond):
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tasks) != 0 || !l.closed {
		t.Fatalf("closed %v, %d tasks kept", l.closed, len(l.tasks))
	}
}

// Place keeps a key on one loop while it is held, spreads new keys to the
// least loaded loop, and forgets a key once every holder has given it back.
func TestPlaceBalancesAndForgets(t *testing.T) {
	g, err := NewGroup(2)
	if err != nil {
		t.Skip(err)
	}
	defer g.Close()
	var held []*Placement
	place := func(key string) *Loop {
		l, p := g.Place(key)
		held = append(held, p)
		return l
	}
	a1 := place("a")
	b1 := place("b")
	if a1 == b1 {
		t.Fatal("the first two keys share a loop while the other is empty")
	}
	if place("a") != a1 || place("b") != b1 {
		t.Fatal("a key held on one loop was placed on another")
	}
	// Loads are now 2 and 2; "c" and "d" go one to each.
	c, d := place("c"), place("d")
	if c == d {
		t.Fatal("keys c and d share a loop though the loads were even")
	}
	for _, p := range held {
		g.Unplace(p)
	}
	g.Unplace(nil) // harmless
	g.pmu.Lock()
	n, load := len(g.placed), append([]int(nil), g.load...)
	g.pmu.Unlock()
	if n != 0 || load[0] != 0 || load[1] != 0 {
		t.Fatalf("after giving every placement back: %d keys, loads %v", n, load)
	}
}

// The handler table holds the loop's sockets, not one entry per descriptor
// number, and a removed slot is reused only after the pass that removed it
// (an event of that pass may still name it).
func TestSlotsAreDenseAndReusedAfterThePass(t *testing.T) {
	l, err := newLoop() // not running: the test is its only user
	if err != nil {
		t.Skip(err)
	}
	defer func() {
		l.file.Close()
		unix.Close(l.evfd)
		_ = unix.Munmap(l.buf)
	}()
	var fds []int
	for range 3 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		fds = append(fds, p[0])
	}
	// Descriptors far above the table's size must not grow it.
	high, err := unix.FcntlInt(uintptr(fds[0]), unix.F_DUPFD_CLOEXEC, 5000)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Close(high)
	h := &echoHandler{}
	a, err := l.Add(high, EventIn, h)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Add(fds[1], EventIn, h)
	if err != nil {
		t.Fatal(err)
	}
	if a != 0 || b != 1 || len(l.handlers) != 2 {
		t.Fatalf("slots %d, %d, table %d; want 0, 1 and 2", a, b, len(l.handlers))
	}
	l.Remove(high, a)
	c, err := l.Add(fds[2], EventIn, h)
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Fatal("a slot removed in this pass was reused in the same pass")
	}
	l.endPass()
	l.Remove(fds[2], c)
	d, err := l.Add(fds[0], EventIn, h)
	if err != nil {
		t.Fatal(err)
	}
	if d != a {
		t.Fatalf("after the pass got slot %d, want the freed %d", d, a)
	}
	if l.Count() != 2 || len(l.handlers) != 3 {
		t.Fatalf("count %d, table %d; want 2 and 3", l.Count(), len(l.handlers))
	}
}
