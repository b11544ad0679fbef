//go:build !linux

package peer

import "github.com/pyrycode/pyrycode-relay/internal/evloop"

// loopConn does not exist where there is no event loop: every connection
// has a reader goroutine.
type loopConn struct{}

func newLoopConn(*Conn) *loopConn { return nil }

// Start serves the connection on a new goroutine (there is no event loop
// on this system). onEnd runs once with how the connection ended; with a
// nil onEnd, h must be an Ender and its Ended runs instead.
func (c *Conn) Start(h Handler, onEnd func(CloseInfo)) {
	if onEnd == nil {
		onEnd = h.(Ender).Ended
	}
	go func() { onEnd(c.Run(h)) }()
}

// OnLoop reports false: there is no event loop on this system.
func (c *Conn) OnLoop() bool { return false }

// PlaceBy does nothing where there is no event loop.
func (c *Conn) PlaceBy(string) {}

// Unplace does nothing where there is no event loop.
func (c *Conn) Unplace() {}

// SameLoop is always false where there is no event loop.
func (c *Conn) SameLoop(*Conn) bool { return false }

// Defer reports false: there is no event loop on this system.
func (c *Conn) Defer(evloop.Task) bool { return false }

// FlushOver does nothing where there is no event loop.
func (c *Conn) FlushOver(int) {}

// Park is never needed without an event loop; it returns a no-op.
func (c *Conn) Park() (resume func()) { return func() {} }

func (ls *loopConn) requestFlush()                   {}
func (ls *loopConn) save([]byte)                     {}
func (ls *loopConn) inlineWrite([]byte) (int, error) { return 0, nil }
func (ls *loopConn) abortLocked()                    {}
func (ls *loopConn) writerDoneLocked()               {}
func (ls *loopConn) buffered() bool                  { return false }
func (ls *loopConn) canInlineLocked() bool           { return false }
