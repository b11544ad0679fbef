// Command evloopfwd is the benchmark's forwarder on the relay's own event
// loops (internal/evloop): a raw non-blocking listening socket on the
// first loop, connections spread round robin over the loops, reads into
// the loop's shared buffer, writes inline from whichever loop produces
// them with a pending buffer and EPOLLOUT when the socket is full.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
	"github.com/pyrycode/pyrycode-relay/tools/iobench/core"
)

var relay = core.New()

// conn is one socket on a loop.
type conn struct {
	c    core.Conn
	fd   int
	slot evloop.Slot
	loop *evloop.Loop

	mu         sync.Mutex
	pending    []byte
	wantOut    bool
	closeAfter bool
	dead       bool
}

func (e *conn) OnEvents(ev uint32) {
	if ev&evloop.EventErr != 0 {
		e.shut()
		return
	}
	if ev&evloop.EventOut != 0 {
		e.flushPending()
	}
	if ev&evloop.EventIn != 0 {
		buf := e.loop.Buf()
		for {
			n, err := evloop.Read(e.fd, buf)
			if n > 0 {
				relay.OnData(&e.c, buf[:n])
				if e.isDead() {
					return
				}
			}
			if err == unix.EAGAIN {
				return
			}
			if n == 0 || err != nil {
				e.shut()
				return
			}
			if n < len(buf) {
				return
			}
		}
	}
	if ev&evloop.EventHup != 0 {
		e.shut()
	}
}

func (e *conn) isDead() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead
}

// Write implements core.Peer: one non-blocking write from the calling
// loop when nothing is pending, else a copy into pending.
func (e *conn) Write(from *core.Conn, b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dead {
		return
	}
	if len(e.pending) == 0 {
		n, err := evloop.Write(e.fd, b)
		if err != nil && err != unix.EAGAIN {
			return // the read side sees the error and closes
		}
		if n == len(b) {
			return
		}
		b = b[max(n, 0):]
	}
	e.pending = append(e.pending, b...)
	if !e.wantOut {
		e.wantOut = true
		if f, ok := from.Peer.(*conn); ok && f.loop == e.loop {
			_ = e.loop.Modify(e.fd, e.slot, evloop.EventIn|evloop.EventOut)
		} else {
			e.loop.Post(modTask{e})
		}
	}
}

type modTask struct{ e *conn }

func (t modTask) RunTask() {
	e := t.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.dead && e.wantOut {
		_ = e.loop.Modify(e.fd, e.slot, evloop.EventIn|evloop.EventOut)
	}
}

func (e *conn) flushPending() {
	e.mu.Lock()
	if e.dead || len(e.pending) == 0 {
		e.mu.Unlock()
		return
	}
	n, err := evloop.Write(e.fd, e.pending)
	if err != nil && err != unix.EAGAIN {
		e.mu.Unlock()
		e.shut()
		return
	}
	e.pending = e.pending[max(n, 0):]
	if len(e.pending) > 0 {
		e.mu.Unlock()
		return
	}
	e.pending = nil
	e.wantOut = false
	_ = e.loop.Modify(e.fd, e.slot, evloop.EventIn)
	closeNow := e.closeAfter
	e.mu.Unlock()
	if closeNow {
		e.shut()
	}
}

// Close implements core.Peer (on the connection's loop).
func (e *conn) Close() {
	e.mu.Lock()
	if len(e.pending) > 0 {
		e.closeAfter = true
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	e.shut()
}

func (e *conn) shut() {
	e.mu.Lock()
	if e.dead {
		e.mu.Unlock()
		return
	}
	e.dead = true
	e.pending = nil
	e.mu.Unlock()
	e.loop.Remove(e.fd, e.slot)
	_ = unix.Close(e.fd)
	relay.OnClose(&e.c)
}

// listener accepts on its loop and hands each socket to a loop.
type listener struct {
	fd int
	g  *evloop.Group
}

func (l *listener) OnEvents(uint32) {
	for {
		fd, _, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err != unix.EAGAIN && err != unix.EINTR && err != unix.ECONNABORTED {
				log.Printf("accept: %v", err)
			}
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			return
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		e := &conn{fd: fd, loop: l.g.Pick()}
		e.c.Peer = e
		e.loop.Post(addTask{e})
	}
}

type addTask struct{ e *conn }

func (t addTask) RunTask() {
	slot, err := t.e.loop.Add(t.e.fd, evloop.EventIn, t.e)
	t.e.slot = slot
	if err != nil {
		_ = unix.Close(t.e.fd)
	}
}

type listenTask struct {
	l    *listener
	loop *evloop.Loop
	err  chan error
}

func (t listenTask) RunTask() {
	_, err := t.loop.Add(t.l.fd, evloop.EventIn, t.l)
	t.err <- err
}

func listen(addr string) (int, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	sa := &unix.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func main() {
	addr := flag.String("insecure-listen", "127.0.0.1:8080", "address to listen on")
	loops := flag.Int("loops", runtime.GOMAXPROCS(0), "event loops")
	flag.Parse()
	g, err := evloop.NewGroup(*loops)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fd, err := listen(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t := listenTask{&listener{fd, g}, g.Pick(), make(chan error, 1)}
	t.loop.Post(t)
	if err := <-t.err; err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
