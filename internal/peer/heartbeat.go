package peer

import (
	"time"

	"github.com/pyrycode/pyrycode-relay/internal/evloop"
)

// Heartbeat: one timer per connection. It fires at whichever comes first of
// the next ping (every HeartbeatInterval, whatever the timeout) and the pong
// deadline of the oldest unanswered ping (HeartbeatTimeout after it went
// out). Receiving a pong only sets a flag, so the reader never touches the
// timer; the timer looks at the flag when it fires. A pong counts for every
// ping sent before it (pings carry no payload to tell them apart), so a peer
// that answers anything is alive; one that answers nothing is closed at most
// HeartbeatTimeout after the first ping it left unanswered.
//
// nextPing and unanswered belong to the timer callback: it is the only code
// that re-arms the timer, and it does so as its last step, so no two runs of
// it overlap.

func (c *Conn) startHeartbeat() {
	if c.opt.HeartbeatInterval <= 0 {
		return
	}
	c.nextPing = evloop.Now() + int64(c.opt.HeartbeatInterval)
	// Armed only after c.hb is set, so the callback always sees it.
	c.hb = time.AfterFunc(time.Duration(1<<63-1), c.onHeartbeat)
	c.hb.Reset(c.opt.HeartbeatInterval)
}

func (c *Conn) stopHeartbeat() {
	if c.hb != nil {
		c.hb.Stop()
	}
}

func (c *Conn) onHeartbeat() {
	select {
	case <-c.done:
		return
	default:
	}
	if wait, ok := c.heartbeatTick(); ok {
		c.hb.Reset(wait)
	}
}

// heartbeatTick is one firing of the heartbeat timer, on either I/O path:
// it closes a peer whose oldest unanswered ping is HeartbeatTimeout old,
// pings when the interval has passed, and returns how long until it must
// run again (ok false: the connection is closing, no need).
func (c *Conn) heartbeatTick() (wait time.Duration, ok bool) {
	now := max(evloop.Now(), 1) // 0 is "no unanswered ping"
	if c.pongSeen.Swap(false) {
		c.unanswered = 0
	}
	timeout := int64(c.opt.HeartbeatTimeout)
	if c.unanswered != 0 && now >= c.unanswered+timeout {
		c.Close(c.opt.ReasonHeartbeat, false)
		return 0, false
	}
	if now >= c.nextPing {
		if c.unanswered == 0 {
			c.unanswered = now
		}
		c.sendControl(OpPing, nil)
		c.nextPing = now + int64(c.opt.HeartbeatInterval)
	}
	next := c.nextPing
	if c.unanswered != 0 {
		next = min(next, c.unanswered+timeout)
	}
	return time.Duration(next - now), true
}

// gotPong records a pong for the heartbeat and answers waiting probes.
func (c *Conn) gotPong() {
	c.pongSeen.Store(true)
	c.mu.Lock()
	if c.probe != nil {
		close(c.probe)
		c.probe = nil
	}
	c.mu.Unlock()
}
