// Command nbiofwd is the benchmark's forwarder on nbio's plain TCP engine
// (github.com/lesismal/nbio, nbio.Engine with OnData): nbio accepts, owns
// the pollers and their read buffers, and queues what a socket cannot take
// (Conn.Write is safe from any goroutine and copies what it keeps).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"

	"github.com/pyrycode/pyrycode-relay/tools/iobench/core"
)

var relay = core.New()

// peer is one nbio connection.
type peer struct {
	c  core.Conn
	nc *nbio.Conn
}

func (p *peer) Write(_ *core.Conn, b []byte) { _, _ = p.nc.Write(b) }
func (p *peer) Close()                       { _ = p.nc.Close() }

func main() {
	addr := flag.String("insecure-listen", "127.0.0.1:8080", "address to listen on")
	loops := flag.Int("loops", runtime.GOMAXPROCS(0), "pollers (nbio's NPoller)")
	flag.Parse()
	logging.SetLevel(logging.LevelError)
	e := nbio.NewEngine(nbio.Config{
		Network:        "tcp",
		Addrs:          []string{*addr},
		NPoller:        *loops,
		ReadBufferSize: 64 << 10,
	})
	e.OnOpen(func(nc *nbio.Conn) {
		p := &peer{nc: nc}
		p.c.Peer = p
		nc.SetSession(p)
	})
	e.OnData(func(nc *nbio.Conn, data []byte) {
		if p, ok := nc.Session().(*peer); ok {
			relay.OnData(&p.c, data)
		}
	})
	e.OnClose(func(nc *nbio.Conn, _ error) {
		if p, ok := nc.Session().(*peer); ok {
			relay.OnClose(&p.c)
		}
	})
	if err := e.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	e.Stop()
}
