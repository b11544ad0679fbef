package relay

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkRoundTrip measures one phone -> relay -> binary -> relay ->
// phone round trip of a 1 KiB frame over loopback. The binary echoes each
// envelope unchanged (it is a valid envelope addressed to the sender).
// Client and relay share the process, so ns/op is the whole loop's cost;
// allocs/op counts both sides (the raw clients allocate nothing).
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1024, 16 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { benchRoundTrip(b, size) })
	}
}

func benchRoundTrip(b *testing.B, size int) {
	tr := startBenchRelay(b)
	bin, err := dialRaw(tr.addr, "/v1/server", binaryHeaders("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer bin.close()
	waitFor(b, func() bool { n, _ := tr.srv.Counts(); return n == 1 })
	ph, err := dialRaw(tr.addr, "/v1/client", phoneHeaders("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer ph.close()
	waitFor(b, func() bool { _, n := tr.srv.Counts(); return n == 1 })

	go func() { // echo binary
		for {
			_, msg, err := bin.read()
			if err != nil || bin.write(msg) != nil {
				return
			}
		}
	}()
	frame := []byte(`{"v":2,"type":"noise_msg","data":"` + strings.Repeat("A", size-36) + `"}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := ph.write(frame); err != nil {
			b.Fatal(err)
		}
		_, got, err := ph.read()
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != len(frame) {
			b.Fatalf("got %d bytes", len(got))
		}
	}
	b.StopTimer()
	_, got, _ := func() (byte, []byte, error) { ph.write(frame); return ph.read() }()
	if !bytes.Equal(got, frame) {
		b.Fatal("frame changed on the way")
	}
}

// BenchmarkIdleConnections opens pairs of idle connections and reports the
// heap and stack the whole process holds per connection after a GC. The raw
// clients live in the same process and hold about 0.5 KiB each (socket
// structures, no goroutine), so the figure is an upper bound for the relay.
func BenchmarkIdleConnections(b *testing.B) {
	const pairs = 1000
	tr := startBenchRelay(b)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var clients []*rawClient
	for i := range pairs {
		id := fmt.Sprintf("idle-%d", i)
		bc, err := dialRaw(tr.addr, "/v1/server", binaryHeaders(id))
		if err != nil {
			b.Fatal(err)
		}
		waitFor(b, func() bool { n, _ := tr.srv.Counts(); return n == int64(i+1) })
		pc, err := dialRaw(tr.addr, "/v1/client", phoneHeaders(id))
		if err != nil {
			b.Fatal(err)
		}
		// One large frame each way first, so the relay's read and write paths
		// have run (and must have let go of their buffers) before idling.
		waitFor(b, func() bool { _, n := tr.srv.Counts(); return n == int64(i+1) })
		if err := pc.write(idleFrame); err != nil {
			b.Fatal(err)
		}
		if _, env, err := bc.read(); err != nil || bc.write(env) != nil {
			b.Fatal("binary side failed", err)
		}
		if _, _, err := pc.read(); err != nil {
			b.Fatal(err)
		}
		bc.br, pc.br, bc.buf, pc.buf, bc.out, pc.out = nil, nil, nil, nil, nil, nil // idle clients keep no buffers
		clients = append(clients, bc, pc)
	}
	waitFor(b, func() bool { _, n := tr.srv.Counts(); return n == pairs })
	for b.Loop() {
		time.Sleep(time.Millisecond)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := (after.HeapInuse + after.StackInuse) - (before.HeapInuse + before.StackInuse)
	b.ReportMetric(float64(used)/float64(2*pairs), "bytes/conn")
	b.ReportMetric(float64(after.NumGC-before.NumGC), "gcs")
	for _, c := range clients {
		c.close()
	}
}

var idleFrame = []byte(`{"v":2,"type":"noise_msg","data":"` + strings.Repeat("i", 6000) + `"}`)

type benchRelay struct {
	srv  *Server
	addr string
}

func startBenchRelay(b *testing.B) *benchRelay {
	b.Helper()
	srv := New(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), withTestIO(nil)...)
	hs := httptest.NewServer(srv)
	b.Cleanup(func() {
		hs.Close()
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &benchRelay{srv: srv, addr: hs.Listener.Addr().String()}
}

func waitFor(b testing.TB, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
