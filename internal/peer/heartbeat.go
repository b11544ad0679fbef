package peer

import "time"

// Heartbeat: one timer per connection, alternating between "time to ping"
// and "pong due". Receiving a pong only sets a flag, so the reader never
// touches the timer; the timer checks the flag when the pong is due.

func (c *Conn) startHeartbeat() {
	if c.opt.HeartbeatInterval <= 0 {
		return
	}
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
	if c.hbWait.Load() {
		if !c.pongSeen.Load() {
			c.Close(c.opt.ReasonHeartbeat, false)
			return
		}
		next := time.Until(time.Unix(0, c.pingAt.Load()).Add(c.opt.HeartbeatInterval))
		if next > 0 {
			c.hbWait.Store(false)
			c.hb.Reset(next)
			return
		}
	}
	c.pongSeen.Store(false)
	c.pingAt.Store(time.Now().UnixNano())
	c.hbWait.Store(true)
	c.sendControl(OpPing, nil)
	c.hb.Reset(c.opt.HeartbeatTimeout)
}

// gotPong records a pong for the heartbeat and answers waiting probes.
func (c *Conn) gotPong() {
	c.pongSeen.Store(true)
	c.mu.Lock()
	probes := c.probes
	c.probes = nil
	c.mu.Unlock()
	for _, ch := range probes {
		close(ch)
	}
}
