package evloop

// Timer is a deadline on one loop. Its zero value is a stopped timer; it
// must be armed and stopped on its loop only. F runs on the loop with the
// timer when the deadline passes, once per arming. Getting the timer lets
// F be a plain function that finds its owner from it (a timer embedded in
// a struct), where a method value would be a closure allocated per timer.
type Timer struct {
	F    func(*Timer)
	when int64 // monotonic nanoseconds (see Loop.Now)
	idx  int   // position in the heap plus one; 0 when stopped
}

// Armed reports whether t is waiting to fire.
func (t *Timer) Armed() bool { return t.idx != 0 }

// When returns the deadline of an armed timer.
func (t *Timer) When() int64 { return t.when }

// timerHeap is a binary min-heap of armed timers ordered by when.
type timerHeap []*Timer

func (h *timerHeap) less(i, j int) bool { return (*h)[i].when < (*h)[j].when }

func (h *timerHeap) swap(i, j int) {
	s := *h
	s[i], s[j] = s[j], s[i]
	s[i].idx = i + 1
	s[j].idx = j + 1
}

func (h *timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *timerHeap) down(i int) {
	n := len(*h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h.swap(i, m)
		i = m
	}
}

// set arms t at when, or moves it there if it is armed.
func (h *timerHeap) set(t *Timer, when int64) {
	if t.idx != 0 {
		old := t.when
		t.when = when
		if when < old {
			h.up(t.idx - 1)
		} else {
			h.down(t.idx - 1)
		}
		return
	}
	t.when = when
	*h = append(*h, t)
	t.idx = len(*h)
	h.up(len(*h) - 1)
}

// remove stops t if it is armed.
func (h *timerHeap) remove(t *Timer) {
	if t.idx == 0 {
		return
	}
	i := t.idx - 1
	last := len(*h) - 1
	if i != last {
		h.swap(i, last)
	}
	(*h)[last] = nil
	*h = (*h)[:last]
	t.idx = 0
	if i != last {
		h.down(i)
		h.up(i)
	}
}

// first returns the earliest timer, or nil.
func (h timerHeap) first() *Timer {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}
