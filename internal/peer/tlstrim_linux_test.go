//go:build linux

package peer

import (
	"bufio"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The loop drops crypto/tls's input buffers once they are empty. This
// fails on a Go version whose tls.Conn no longer has them as found here:
// idle TLS connections then keep about 3 KiB more each (see tlstrim_linux.go).
func TestTLSTrimFindsBuffers(t *testing.T) {
	if v := runtime.Version(); v != tlsTrimAudited && !strings.HasPrefix(v, tlsTrimAudited+".") {
		t.Skipf("crypto/tls of %s not audited for the buffer trim (audited: %s): it is off, idle TLS connections keep about 3 KiB more", v, tlsTrimAudited)
	}
	if len(tlsBufOffsets) != 2 {
		t.Fatal("crypto/tls's rawInput and hand buffers were not found: idle TLS connections keep them")
	}
}

// After the handshake and after each message, an idle TLS connection on a
// loop holds no input buffer of crypto/tls's.
func TestTLSIdleOnLoopKeepsNoInputBuffers(t *testing.T) {
	if tlsBufOffsets == nil {
		t.Skip("the buffer trim is off on this Go release (see TestTLSTrimFindsBuffers)")
	}
	opt := loopOptions(t)
	c, client, _ := tlsPair(t, opt, echo{})
	br := bufio.NewReader(client)
	for i := range 3 {
		msg := make([]byte, 1000+i*5000)
		writeAll(t, client, clientFrame(true, OpText, msg, [4]byte{5, 6, 7, 8}))
		if f, err := readServerFrame(br); err != nil || len(f.payload) != len(msg) {
			t.Fatalf("echo %d: %v", i, err)
		}
		// The loop takes the buffers back right after it handles the
		// input, before the echo is written; ask it on the loop to be sure.
		caps := make(chan [2]int, 1)
		c.ls.l.Post(taskFunc(func() {
			caps <- [2]int{tlsBuf(c.ls.tls.tc, tlsBufOffsets[0]).Cap(), tlsBuf(c.ls.tls.tc, tlsBufOffsets[1]).Cap()}
		}))
		select {
		case got := <-caps:
			if got != [2]int{} {
				t.Fatalf("after message %d crypto/tls keeps input buffers of %v bytes", i, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the loop did not run the task")
		}
	}
}

type taskFunc func()

func (f taskFunc) RunTask() { f() }
