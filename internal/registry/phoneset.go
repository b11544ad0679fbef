package registry

// phoneSet holds an id's phones by conn_id. Almost every id has one or two
// phones, and a Go map costs about 340 bytes even with a single entry (its
// header and a first group of eight slots), which made it the largest of
// the router's records per idle phone. So the set keeps its pairs in a
// slice, grown by append from nothing (one phone pays for one pair), and
// searches it linearly, which for a handful of short keys is as fast as
// hashing. Only when it would hold more than smallPhones pairs does it
// move them into a map, so that an id raised to many phones by
// --max-phones-per-server does not scan a long slice on every frame.
//
// The set is 32 bytes in the entry where the map's pointer was 8: with the
// relay's handles (interfaces) that rounds an entry up from 48 to 64
// bytes, so an id without phones costs 16 bytes more, and one with a
// phone about 290 less.
//
// A map, once made, stays while the set has phones even if they fall back
// to a few: ids with that many phones are rare, and converting back would
// only add a second path to get wrong. When the last phone goes, the map
// (or the slice's array) is dropped, so an id that is left without phones
// costs nothing for them.
//
// The order of the set's phones is not defined (the slice's is that of
// insertion, shuffled by removals; the map's is random): callers only
// hand every phone of an id to be closed, which needs no order.
//
// The zero value is an empty set. It is not safe for concurrent use: the
// shard's lock guards it like the rest of the entry.
type phoneSet[P comparable] struct {
	small []phonePair[P] // the phones while big is nil (at most smallPhones)
	big   map[string]P   // the phones from the first time there were more, until the set empties
}

type phonePair[P comparable] struct {
	connID string
	p      P
}

// smallPhones is the most phones a set keeps in its slice. Eight pairs
// are 256 bytes with an interface P, less than a map's first group, and a
// scan of eight conn_ids (see get) costs about what one map lookup does.
const smallPhones = 8

// len returns the number of phones in s.
func (s *phoneSet[P]) len() int {
	if s.big != nil {
		return len(s.big)
	}
	return len(s.small)
}

// get returns the phone registered as connID. It takes the conn_id as
// it arrives in a frame and does not allocate: string(connID) in a
// comparison or a map index is not a copy.
//
// The relay's conn_ids all have one length and share their start ("c-"
// and, in a cluster, the node's name), so comparing whole strings would
// call into the runtime for every phone passed over. Their last byte is a
// random hex digit: checking it first turns most of those phones away at
// the cost of one byte comparison, which keeps a scan of eight phones as
// fast as a map lookup.
func (s *phoneSet[P]) get(connID []byte) (P, bool) {
	if s.big != nil {
		p, ok := s.big[string(connID)]
		return p, ok
	}
	for i := range s.small {
		k := s.small[i].connID
		if len(k) != len(connID) {
			continue
		}
		if n := len(k); n > 0 && k[n-1] != connID[n-1] {
			continue
		}
		if string(connID) == k {
			return s.small[i].p, true
		}
	}
	var none P
	return none, false
}

// put registers p as connID, replacing the phone registered as connID
// before, as a map assignment would.
func (s *phoneSet[P]) put(connID string, p P) {
	if s.big != nil {
		s.big[connID] = p
		return
	}
	for i := range s.small {
		if s.small[i].connID == connID {
			s.small[i].p = p
			return
		}
	}
	if len(s.small) < smallPhones {
		s.small = append(s.small, phonePair[P]{connID, p})
		return
	}
	s.big = make(map[string]P, len(s.small)+1)
	for _, pp := range s.small {
		s.big[pp.connID] = pp.p
	}
	s.big[connID] = p
	s.small = nil
}

// remove unregisters connID, but only if p is the phone registered as
// connID: a phone that was replaced under its conn_id must not take its
// successor with it. It reports whether it removed p.
func (s *phoneSet[P]) remove(connID string, p P) bool {
	if s.big != nil {
		if cur, ok := s.big[connID]; !ok || cur != p {
			return false
		}
		delete(s.big, connID)
		if len(s.big) == 0 {
			s.big = nil
		}
		return true
	}
	for i := range s.small {
		if s.small[i].connID != connID {
			continue
		}
		if s.small[i].p != p {
			return false
		}
		// The last pair fills the hole, and its old slot is zeroed so
		// that the array beyond the slice's length keeps no phone (or
		// conn_id) reachable after it is gone.
		last := len(s.small) - 1
		s.small[i] = s.small[last]
		s.small[last] = phonePair[P]{}
		s.small = s.small[:last]
		if last == 0 {
			s.small = nil
		}
		return true
	}
	return false
}

// appendTo appends every phone in s to out and returns the extended
// slice, in no particular order.
func (s *phoneSet[P]) appendTo(out []P) []P {
	if s.big != nil {
		for _, p := range s.big {
			out = append(out, p)
		}
		return out
	}
	for i := range s.small {
		out = append(out, s.small[i].p)
	}
	return out
}

// reset empties s and lets go of its storage.
func (s *phoneSet[P]) reset() {
	*s = phoneSet[P]{}
}
