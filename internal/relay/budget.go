package relay

import (
	"github.com/pyrycode/pyrycode-relay/internal/peer"
	"github.com/pyrycode/pyrycode-relay/internal/wire"
)

// shedLargestBacklog closes the phone holding the most queued bytes, so that
// the memory held for stalled phones stays bounded however many of them
// stall at once. Only one goroutine sheds at a time; the others carry on
// (the closed phone's queue is freed at once, bringing the total down).
func (s *Server) shedLargestBacklog() {
	if !s.shedding.CompareAndSwap(false, true) {
		return
	}
	defer s.shedding.Store(false)
	for s.stats.QueuedBytes.Load() > s.cfg.MaxQueuedBytes {
		var worst *peer.Conn
		most := 0
		s.mu.Lock()
		for c := range s.conns {
			if n := c.QueuedBytes(); n > most && c.Options() == &s.phoneOpt && c.Open() {
				worst, most = c, n
			}
		}
		s.mu.Unlock()
		if worst == nil || !worst.Close(peer.Close(wire.CloseBacklog), false) {
			return
		}
		s.stats.BudgetCloses.Add(1)
		s.log.Info("phone_backlog_shed", "queued_bytes", most)
	}
}
