// Command gnetfwd is the benchmark's forwarder on gnet
// (github.com/panjf2000/gnet/v2): gnet accepts, owns the event loops and
// their read buffers. A write from the destination's own loop is
// Conn.Write (inline, gnet buffers the rest); a write from another loop
// must be Conn.AsyncWrite, which queues a task on the destination's loop
// and keeps the buffer until then, so it gets a copy.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"

	"github.com/pyrycode/pyrycode-relay/tools/iobench/core"
)

var relay = core.New()

// peer is one gnet connection.
type peer struct {
	c  core.Conn
	gc gnet.Conn
	el gnet.EventLoop
}

func (p *peer) Write(from *core.Conn, b []byte) {
	if f, ok := from.Peer.(*peer); ok && f.el == p.el {
		_, _ = p.gc.Write(b)
		return
	}
	_ = p.gc.AsyncWrite(append([]byte(nil), b...), nil)
}

func (p *peer) Close() { _ = p.gc.Close() }

type handler struct{ gnet.BuiltinEventEngine }

func (*handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	p := &peer{gc: gc, el: gc.EventLoop()}
	p.c.Peer = p
	gc.SetContext(p)
	return nil, gnet.None
}

func (*handler) OnTraffic(gc gnet.Conn) gnet.Action {
	p := gc.Context().(*peer)
	data, _ := gc.Next(-1)
	relay.OnData(&p.c, data)
	return gnet.None
}

func (*handler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	if p, ok := gc.Context().(*peer); ok {
		relay.OnClose(&p.c)
	}
	return gnet.None
}

func main() {
	addr := flag.String("insecure-listen", "127.0.0.1:8080", "address to listen on")
	loops := flag.Int("loops", runtime.GOMAXPROCS(0), "event loops (gnet's NumEventLoop)")
	flag.Parse()
	err := gnet.Run(&handler{}, "tcp4://"+*addr,
		gnet.WithMulticore(true),
		gnet.WithReuseAddr(true),
		gnet.WithNumEventLoop(*loops),
		gnet.WithReadBufferCap(64<<10),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogLevel(logging.ErrorLevel),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
