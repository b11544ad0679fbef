package loadgen

// seqCheck checks one stream of sequence numbers that should arrive as 0, 1,
// 2, … exactly once each. A frame is reordered when it arrives after a later
// one, duplicated when it arrives again, and lost when it never arrives.
// The in-order path allocates nothing; gaps are remembered in a map.
type seqCheck struct {
	next    uint64              // one past the highest sequence number seen
	missing map[uint64]struct{} // below next and not seen yet
	gapLost uint64              // gaps too large to remember, counted lost at once
	unique  uint64              // distinct sequence numbers seen
	dup     uint64
	reord   uint64
}

// maxGap bounds what one stream remembers of its gaps.
const maxGap = 1 << 16

// see records one arrival.
func (s *seqCheck) see(seq uint64) {
	switch {
	case seq == s.next:
		s.next++
		s.unique++
	case seq > s.next:
		if s.missing == nil {
			s.missing = make(map[uint64]struct{})
		}
		for q := s.next; q < seq; q++ {
			if len(s.missing) >= maxGap {
				s.gapLost += seq - q
				break
			}
			s.missing[q] = struct{}{}
		}
		s.next = seq + 1
		s.unique++
	default:
		if _, ok := s.missing[seq]; ok {
			delete(s.missing, seq)
			s.reord++
			s.unique++
		} else {
			s.dup++
		}
	}
}

// lost returns how many of sent frames (sequence numbers 0..sent-1) never
// arrived.
func (s *seqCheck) lost(sent uint64) uint64 {
	if sent <= s.unique {
		return 0
	}
	return sent - s.unique
}
