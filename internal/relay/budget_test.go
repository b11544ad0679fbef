package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The global queue budget: when the bytes queued for all phones together
// exceed MaxQueuedBytes, the phone with the largest backlog is closed with
// 1011 "phone backlog full"; the others and the binary carry on.
func TestQueueBudgetShedsLargestBacklog(t *testing.T) {
	tr := startRelay(t, Config{PhoneQueueBytes: 8 << 20, MaxQueuedBytes: 1 << 20, HeartbeatInterval: time.Minute})
	const id = "budget"
	bin := tr.binary(id)
	tr.waitBinaries(1)
	big := tr.phone(id)
	small := tr.phone(id)
	bigID := connIDOf(t, big, bin)
	smallID := connIDOf(t, small, bin)

	frame := `{"v":2,"type":"noise_msg","data":"` + strings.Repeat("q", 16<<10) + `"}`
	st := tr.srv.Stats()
	sentSmall := 0
	// Neither phone reads: three frames to one for each to the other, until
	// the budget sheds a phone (bounded: at most 256 MiB in all).
	for i := 0; i < 16384 && st.BudgetCloses.Load() == 0; i++ {
		to := bigID
		if i%4 == 3 {
			to = smallID
			sentSmall++
		}
		send(t, bin, fmt.Sprintf(`{"conn_id":%q,"frame":%s}`, to, frame))
	}
	eventually(t, func() bool { return st.BudgetCloses.Load() == 1 })
	if st.BacklogCloses.Load() != 0 {
		t.Fatalf("a per-phone queue overflowed instead (%d)", st.BacklogCloses.Load())
	}
	if q := st.QueuedBytes.Load(); q > 1<<20 {
		t.Fatalf("queued bytes still %d after shedding", q)
	}
	expectClose(t, big, 1011, "phone backlog full")

	// The smaller backlog is intact: every frame sent to it arrives.
	for range sentSmall {
		if got := string(read(t, small)); got != frame {
			t.Fatalf("small phone got %.60q", got)
		}
	}
	// The binary is told why the big phone left, and still routes.
	env := lcNotice(bigID, 1011)
	if got := string(read(t, bin)); got != env {
		t.Fatalf("binary got %.80q, want %q", got, env)
	}
	send(t, small, `"still here"`)
	if got := string(read(t, bin)); got != fmt.Sprintf(`{"conn_id":%q,"frame":"still here"}`, smallID) {
		t.Fatalf("binary got %q", got)
	}
}
