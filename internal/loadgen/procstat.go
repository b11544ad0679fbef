package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// procSample is one reading of a process's CPU time and memory from /proc.
type procSample struct {
	At  time.Time
	CPU time.Duration // user + system, all threads
	RSS int64         // resident set, bytes (VmRSS)
	HWM int64         // peak resident set, bytes (VmHWM)
}

// userHZ is the unit of /proc/<pid>/stat times; Linux fixes it at 100 for
// user space on every architecture Go supports.
const userHZ = 100

// readProc reads /proc/<pid>/stat and /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	s.CPU = time.Duration(ut+st) * time.Second / userHZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.RSS = statusKB(status, "VmRSS:")
	s.HWM = statusKB(status, "VmHWM:")
	return s, nil
}

func statusKB(status []byte, key string) int64 {
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0
	}
	line := status[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseInt(string(f[0]), 10, 64)
	return v << 10
}

// procsSample is one reading of each of several processes, in the order
// of their pids.
type procsSample []procSample

// readProcs reads every pid; any unreadable one is an error.
func readProcs(pids []int) (procsSample, error) {
	out := make(procsSample, 0, len(pids))
	for _, pid := range pids {
		s, err := readProc(pid)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// total sums the processes' CPU and memory.
func (ps procsSample) total() procSample {
	var t procSample
	for i, s := range ps {
		if i == 0 {
			t.At = s.At
		}
		t.CPU += s.CPU
		t.RSS += s.RSS
		t.HWM += s.HWM
	}
	return t
}

// procWatch samples processes in the background to find the peak of their
// summed RSS.
type procWatch struct {
	pids []int
	stop chan struct{}
	done chan struct{}
	peak int64
}

func watchProcs(pids []int, every time.Duration) *procWatch {
	w := &procWatch{pids: pids, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if s, err := readProcs(pids); err == nil {
				w.peak = max(w.peak, s.total().RSS)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Stop ends sampling and returns the peak RSS seen.
func (w *procWatch) Stop() int64 {
	close(w.stop)
	<-w.done
	return w.peak
}
