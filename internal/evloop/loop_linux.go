//go:build linux

package evloop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event bits, as epoll reports them.
const (
	EventIn  = unix.EPOLLIN
	EventOut = unix.EPOLLOUT
	EventErr = unix.EPOLLERR
	EventHup = unix.EPOLLHUP | unix.EPOLLRDHUP
)

// Loop is one event loop: a goroutine, an epoll set, a task queue and a
// timer heap.
type Loop struct {
	epfd, evfd int
	// The epoll descriptor is itself waited on through the Go poller: the
	// loop's goroutine parks there (holding no thread) when nothing is
	// ready, and its deadline is the earliest timer.
	file     *os.File
	raw      syscall.RawConn
	deadline int64 // the file's read deadline (Now units); 0 for none

	mu       sync.Mutex
	tasks    []Task
	awake    bool // the loop will look at tasks before it sleeps again
	notified bool // the eventfd has been written since the loop woke
	stopping bool
	closed   bool // the loop has exited: posts are dropped

	// Loop goroutine only.
	spare    []Task
	handlers []Handler // by Slot; nil when free
	free     []Slot    // free slots
	freed    []Slot    // slots removed during this pass: free after it
	timers   timerHeap
	buf      []byte
	events   []unix.EpollEvent
	count    int

	done chan struct{}
}

// NewGroup starts n loops (at least one).
func NewGroup(n int) (*Group, error) {
	if n < 1 {
		n = 1
	}
	g := &Group{}
	for range n {
		l, err := newLoop()
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
		go l.run()
	}
	return g, nil
}

// Close stops every loop and waits for them. Sockets still registered are
// left to their owners (the loops stop calling them).
func (g *Group) Close() {
	for _, l := range g.loops {
		l.mu.Lock()
		l.stopping = true
		l.wake()
		l.mu.Unlock()
	}
	for _, l := range g.loops {
		<-l.done
	}
	g.loops = nil
}

func newLoop() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: evSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("evloop: epoll descriptor: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "evloop")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		unix.Close(evfd)
		return nil, fmt.Errorf("evloop: epoll descriptor: %w", err)
	}
	// The read buffer is mapped, not allocated: the kernel backs only the
	// pages a read has touched, and it stays out of the Go heap, whose
	// collector would otherwise let garbage grow by as much again (1 MiB
	// per loop) before it collects.
	buf, err := unix.Mmap(-1, 0, BufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		file.Close()
		unix.Close(evfd)
		return nil, fmt.Errorf("evloop: read buffer: %w", err)
	}
	return &Loop{
		epfd:   epfd,
		file:   file,
		raw:    raw,
		evfd:   evfd,
		awake:  true,
		buf:    buf,
		events: make([]unix.EpollEvent, 256),
		done:   make(chan struct{}),
	}, nil
}

// Post queues t to run on the loop. Safe from any goroutine, the loop's
// included. It wakes the loop only if it is asleep.
func (l *Loop) Post(t Task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return // the loop has stopped; its owners are gone
	}
	l.tasks = append(l.tasks, t)
	if !l.awake && !l.notified {
		// Written under the lock, so that the loop cannot close the
		// eventfd (and the number be reused) in between.
		l.notified = true
		l.wake()
	}
}

func (l *Loop) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	for {
		_, err := unix.Write(l.evfd, one[:])
		if err != unix.EINTR {
			return // EAGAIN: the counter is already non-zero, the loop wakes
		}
	}
}

// Buf returns the loop's shared read buffer. Loop only; its contents do
// not survive the handler or task that filled it.
func (l *Loop) Buf() []byte { return l.buf }

// Count returns the sockets registered with the loop. Loop only.
func (l *Loop) Count() int { return l.count }

// evSlot marks the loop's eventfd in epoll events.
const evSlot = -1

// Add registers fd for events (EventIn, EventOut; errors and hang-ups are
// always reported) with h and returns its slot. Loop only.
func (l *Loop) Add(fd int, events uint32, h Handler) (Slot, error) {
	var s Slot
	if n := len(l.free); n > 0 {
		s = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		s = Slot(len(l.handlers))
		l.handlers = append(l.handlers, nil)
	}
	ev := unix.EpollEvent{Events: events | unix.EPOLLRDHUP, Fd: int32(s)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.free = append(l.free, s)
		return -1, err
	}
	l.handlers[s] = h
	l.count++
	return s, nil
}

// Modify changes the events fd (registered in slot s) is registered for.
// Loop only.
func (l *Loop) Modify(fd int, s Slot, events uint32) error {
	ev := unix.EpollEvent{Events: events | unix.EPOLLRDHUP, Fd: int32(s)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// Remove unregisters fd (registered in slot s); call it before closing fd.
// Loop only. The slot is reused only after the current batch of events,
// any of which may still name it.
func (l *Loop) Remove(fd int, s Slot) {
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	if s >= 0 && int(s) < len(l.handlers) && l.handlers[s] != nil {
		l.handlers[s] = nil
		l.freed = append(l.freed, s)
		l.count--
	}
}

// Arm sets t to fire at when (see Now), moving it if it is armed. Loop only.
func (l *Loop) Arm(t *Timer, when int64) { l.timers.set(t, when) }

// Stop stops t if it is armed. Loop only.
func (l *Loop) Stop(t *Timer) { l.timers.remove(t) }

func (l *Loop) run() {
	defer close(l.done)
	defer l.file.Close()
	defer func() { _ = unix.Munmap(l.buf) }()
	defer func() {
		l.mu.Lock()
		l.closed = true
		unix.Close(l.evfd)
		l.mu.Unlock()
	}()
	var n int
	var err error
	wait := func(uintptr) bool {
		n, err = l.poll()
		return n != 0 || err != nil
	}
	for {
		if l.runTasks() {
			return
		}
		// Look without sleeping (a raw call: it never blocks); when
		// nothing is ready, park on the Go poller until the epoll
		// descriptor is readable or the next timer is due. The loop
		// never holds a thread while it waits. raw.Read calls wait
		// before it parks, so that look is the first thing it does (one
		// epoll_wait per pass, not two); it may also return at once,
		// without calling wait, when the deadline has just passed.
		if l.timerDue() {
			n, err = l.poll()
		} else {
			n, err = 0, nil
			l.setDeadline()
			if werr := l.raw.Read(wait); werr != nil && !errors.Is(werr, os.ErrDeadlineExceeded) {
				panic(fmt.Sprintf("evloop: waiting on epoll: %v", werr))
			}
		}
		l.mu.Lock()
		l.awake, l.notified = true, false
		l.mu.Unlock()
		if err != nil && err != unix.EINTR {
			panic(fmt.Sprintf("evloop: epoll_wait: %v", err))
		}
		for i := range max(n, 0) {
			ev := &l.events[i]
			s := int(ev.Fd) // the slot
			if s == evSlot {
				var b [8]byte
				_, _ = unix.Read(l.evfd, b[:])
				continue
			}
			if s >= 0 && s < len(l.handlers) {
				if h := l.handlers[s]; h != nil {
					h.OnEvents(ev.Events)
				}
			}
		}
		l.fireTimers()
		l.endPass()
	}
}

// endPass frees the slots removed during the pass: no event names them any
// more.
func (l *Loop) endPass() {
	l.free = append(l.free, l.freed...)
	l.freed = l.freed[:0]
}

// poll is epoll_wait without blocking, as a raw system call.
func (l *Loop) poll() (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_WAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// timerDue reports whether the earliest timer is due.
func (l *Loop) timerDue() bool {
	t := l.timers.first()
	return t != nil && t.when <= Now()
}

// setDeadline makes the wait end when the earliest timer is due, touching
// the runtime's timer only when that changes.
func (l *Loop) setDeadline() {
	var when int64
	if t := l.timers.first(); t != nil {
		when = t.when
	}
	if when == l.deadline {
		return
	}
	l.deadline = when
	var d time.Time
	if when != 0 {
		d = epoch.Add(time.Duration(when))
	}
	_ = l.file.SetReadDeadline(d)
}

// runTasks runs posted tasks until none is left, then marks the loop as
// about to sleep. It reports whether the loop is to stop.
func (l *Loop) runTasks() bool {
	for {
		l.mu.Lock()
		tasks := l.tasks
		if len(tasks) == 0 {
			l.awake = false
			stop := l.stopping
			l.mu.Unlock()
			return stop
		}
		l.tasks = l.spare[:0]
		l.mu.Unlock()
		for i, t := range tasks {
			t.RunTask()
			tasks[i] = nil
		}
		l.spare = tasks[:0]
	}
}

// fireTimers runs every timer that is due.
func (l *Loop) fireTimers() {
	now := Now()
	for {
		t := l.timers.first()
		if t == nil || t.when > now {
			return
		}
		l.timers.remove(t)
		t.F(t)
	}
}
