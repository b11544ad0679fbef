package main

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// Trimming: after a burst of connections (a restart, a reconnect storm)
// the garbage of the handshakes and the heap that held it stay resident,
// and a relay whose connections then sit idle allocates too little to ever
// collect again. When a whole trimEvery passes without a collection while
// enough bytes are garbage or free-but-held (trimSlack; an eighth of the
// heap for a small heap, down to minSlack), the relay collects once and
// returns free memory to the operating system. A busy relay collects on its
// own and is left alone, and an idle one with nothing to give back is not
// disturbed either. The threshold scales with small heaps so that a relay
// holding a few thousand connections (a node of a cluster, which shares its
// users with others) gives back its burst as a single large relay does.
const (
	trimEvery = 10 * time.Second
	trimSlack = 4 << 20
	minSlack  = 1 << 20
)

// slackFor is the trim threshold for a heap holding objects bytes.
func slackFor(objects uint64) uint64 { return min(trimSlack, max(minSlack, objects/8)) }

// trimMemory runs until ctx ends; done is closed when it has returned.
func trimMemory(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	s := []rtmetrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	rtmetrics.Read(s)
	last := s[0].Value.Uint64()
	t := time.NewTicker(trimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rtmetrics.Read(s)
		cycles, live, objects, free := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()
		if cycles != last {
			last = cycles // the runtime collected on its own: nothing to do
			continue
		}
		if objects-min(live, objects)+free < slackFor(objects) {
			continue
		}
		debug.FreeOSMemory()
		rtmetrics.Read(s)
		last = s[0].Value.Uint64()
	}
}
