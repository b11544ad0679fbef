package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Run phases.
const (
	phSetup   int32 = iota // connecting
	phWarmup               // traffic flows, nothing is recorded
	phMeasure              // traffic flows and is recorded
	phDrain                // no new frames; outstanding ones may still arrive
	phDone                 // connections are being closed; errors are expected
)

// runner is the state of one run shared by all modes.
type runner struct {
	cfg   Config
	bt    *target // where binaries connect
	pt    *target // where phones connect
	ctx   context.Context
	epoch time.Time
	phase atomic.Int32
	ids   string // server-id prefix

	connSeq  atomic.Uint64 // picks source addresses round-robin
	open     atomic.Int64  // connections open now
	failed   atomic.Int64
	retries  atomic.Int64
	dropped  atomic.Int64  // connections that ended before the tool closed them
	progress func() string // the mode's live progress line

	mu       sync.Mutex
	errs     map[string]int64
	samples  map[string]string
	notices  map[string]int64
	connHist *hist

	wg       sync.WaitGroup // every connection goroutine
	binaries []*binaryConn
	phones   []*phone // connected phones
	slots    []*phone // fan-out and stall: every phone by index, made before any dial

	relayBefore procsSample
	watch       *procWatch
}

// binaryConn is one binary connection.
type binaryConn struct {
	idx int
	id  string
	c   *Conn

	// fan-out and stall: the phones this binary addresses.
	peersMu sync.Mutex
	peers   map[string]*phone // by conn_id
	wake    chan struct{}     // an ack arrived
}

// phone is one phone connection and its stream's state. Fields after c
// belong to the phone's goroutine unless atomic.
type phone struct {
	idx    int
	bin    int
	c      *Conn
	connID []byte // as the binary sees it (fan-out, stall)

	active atomic.Bool   // sends a new frame for each one received (rt)
	sent   atomic.Uint64 // frames sent in its stream (by it, or to it in fan-out)
	uniq   atomic.Uint64 // distinct frames received
	acked  atomic.Uint64 // fan-out: what the phone last acknowledged
	gone   atomic.Bool   // the relay closed it: a close notice (fan-out, stall) or its reader ended
	meas   atomic.Uint64 // frames received in the measured window

	chk      seqCheck
	h        *hist
	ackEvery int
	corrupt  uint64
	fbuf     []byte
	_        [64]byte // keep hot phones off each other's cache lines
}

func newRunner(ctx context.Context, cfg Config) (*runner, error) {
	bt, err := cfg.target(urlFlag(cfg.BinaryURL, cfg.URL, "--binary-url"), cfg.BinaryURL)
	if err != nil {
		return nil, err
	}
	pt, err := cfg.target(urlFlag(cfg.PhoneURL, cfg.URL, "--phone-url"), cfg.PhoneURL)
	if err != nil {
		return nil, err
	}
	ids := cfg.ServerIDPrefix
	if ids == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		ids = "load-" + hex.EncodeToString(b[:])
	}
	return &runner{
		cfg: cfg, bt: bt, pt: pt, ctx: ctx, epoch: time.Now(), ids: ids,
		errs: map[string]int64{}, samples: map[string]string{}, notices: map[string]int64{},
		connHist: new(hist),
	}, nil
}

// now is the run's monotonic clock in nanoseconds; frames carry it.
func (r *runner) now() int64 { return int64(time.Since(r.epoch)) }

func (r *runner) serverID(i int) string { return r.ids + "-" + strconv.Itoa(i) }

// urlFlag names the flag a URL came from, for error messages.
func urlFlag(u, base, flag string) string {
	if u == base {
		return "--url"
	}
	return flag
}

func (r *runner) dialOpts(t *target, path string, header [][2]string) *DialOptions {
	o := &DialOptions{
		Addr: t.addr, Host: t.host, Path: t.prefix + path, Header: header,
		TLS: t.tls, Timeout: r.cfg.ConnectTimeout,
	}
	if n := len(r.cfg.SourceIPs); n > 0 {
		o.LocalIP = r.cfg.SourceIPs[(r.connSeq.Add(1)-1)%uint64(n)]
	}
	return o
}

// dialBinary opens binary i's connection.
func (r *runner) dialBinary(i int) (*binaryConn, error) {
	id := r.serverID(i)
	o := r.dialOpts(r.bt, "/v1/server", [][2]string{
		{"X-Pyrycode-Server", id}, {"X-Pyrycode-Version", "0.11.0"}, {"User-Agent", "pyry/0.11.0 relay-load"},
	})
	o.ReadBuf = r.readBuf()
	start := time.Now()
	c, err := Dial(o)
	if err != nil {
		r.failed.Add(1)
		r.addErr("binary "+errKind(err), err)
		return nil, err
	}
	r.recordConnect(time.Since(start))
	r.open.Add(1)
	return &binaryConn{idx: i, id: id, c: c, peers: map[string]*phone{}, wake: make(chan struct{}, 1)}, nil
}

func (r *runner) readBuf() int {
	switch r.cfg.Mode {
	case ModeIdle, ModeChurn, ModeStall, ModeChat:
		return 512 // grows on demand; idle connections keep it small
	}
	return 64 << 10
}

// dialPhone opens phone p's connection to its binary's id and makes sure
// the path works: it sends a hello frame and waits for the binary's echo.
// While retrying is allowed, a 4404 (binary not registered yet) is retried.
func (r *runner) dialPhone(p *phone, retry bool, recvBuf int) error {
	id := r.serverID(p.bin)
	var lastErr error
	for attempt := range 50 {
		if attempt > 0 {
			r.retries.Add(1)
			if !sleepCtx(r.ctx, 100*time.Millisecond) {
				break
			}
		}
		o := r.dialOpts(r.pt, "/v1/client", [][2]string{
			{"X-Pyrycode-Server", id}, {"X-Pyrycode-Token", "relay-load-token"},
			{"User-Agent", "pyrycode-mobile/1.0.0 relay-load"}, {"X-Pyrycode-Device-Name", "relay-load " + strconv.Itoa(p.idx)},
		})
		o.ReadBuf = r.readBuf()
		o.RecvBuf = recvBuf
		start := time.Now()
		c, err := Dial(o)
		if err != nil {
			lastErr = err
			break
		}
		r.recordConnect(time.Since(start))
		err = r.hello(p, c)
		if err == nil {
			p.c = c
			r.open.Add(1)
			return nil
		}
		c.Abort()
		lastErr = err
		var ce *CloseError
		if !retry || !errors.As(err, &ce) || ce.Code != 4404 {
			break
		}
	}
	r.failed.Add(1)
	r.addErr("phone "+errKind(lastErr), lastErr)
	return lastErr
}

// hello sends the hello frame and reads its echo.
func (r *runner) hello(p *phone, c *Conn) error {
	frame := appendFrame(nil, typeHello, p.idx, 0, r.now(), min(r.cfg.Size, 256))
	_ = c.NetConn().SetDeadline(time.Now().Add(r.cfg.ConnectTimeout))
	defer c.NetConn().SetDeadline(time.Time{})
	if err := c.WriteMessage(frame); err != nil {
		return err
	}
	op, msg, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if op != opText || !isHello(msg) {
		return fmt.Errorf("%w: unexpected first message", ErrProtocol)
	}
	return nil
}

func (r *runner) recordConnect(d time.Duration) {
	r.mu.Lock()
	r.connHist.record(int64(d))
	r.mu.Unlock()
}

// addErr counts an error of kind, keeping one message as a sample.
func (r *runner) addErr(kind string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[kind]++
	if _, ok := r.samples[kind]; !ok && err != nil {
		r.samples[kind] = err.Error()
	}
}

func (r *runner) addNotice(code int) {
	if r.phase.Load() >= phDone {
		return // our own phones closing at the end
	}
	r.mu.Lock()
	r.notices[strconv.Itoa(code)]++
	r.mu.Unlock()
}

func (r *runner) noticeCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, v := range r.notices {
		n += v
	}
	return n
}

// connEnded accounts for a connection whose reader stopped with err: before
// the tool closes everything, that is a dropped connection.
func (r *runner) connEnded(role string, err error) {
	r.open.Add(-1)
	if r.phase.Load() >= phDone {
		return
	}
	r.dropped.Add(1)
	r.addErr(role+" "+errKind(err), err)
}

// errKind names an error for the error table.
func errKind(err error) string {
	if err == nil {
		return "ok"
	}
	stage := ""
	var de *DialError
	if errors.As(err, &de) {
		stage = de.Stage + " "
	}
	var ce *CloseError
	var he *HandshakeError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return stage + "closed " + strconv.Itoa(ce.Code)
	case errors.As(err, &he):
		return stage + "http " + strconv.Itoa(he.Status)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return stage + "certificate not trusted (--ca-cert or --insecure-skip-verify)"
	case errors.Is(err, ErrProtocol):
		return stage + "protocol"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return stage + "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "eof"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return stage + "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + "refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return stage + "no local address"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return stage + "too many open files"
	case errors.Is(err, net.ErrClosed):
		return stage + "closed locally"
	}
	return stage + "other"
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// parallel runs fn(0..n-1) on at most conc goroutines; it stops starting
// new calls when ctx ends.
func parallel(ctx context.Context, n, conc int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// connectBinaries dials cfg.Binaries binaries; loop, if set, is started for
// each on its own goroutine.
func (r *runner) connectBinaries(loop func(*binaryConn)) {
	bs := make([]*binaryConn, r.cfg.Binaries)
	parallel(r.ctx, len(bs), r.cfg.Concurrency, func(i int) {
		b, err := r.dialBinary(i)
		if err != nil {
			return
		}
		bs[i] = b
		if loop != nil {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); loop(b) }()
		}
	})
	for _, b := range bs {
		if b != nil {
			r.binaries = append(r.binaries, b)
		}
	}
}

// connectPhones dials cfg.Phones phones over the binaries that connected;
// loop, if set, runs on each phone's goroutine.
// setup, if set, prepares each phone before it dials.
func (r *runner) connectPhones(recvBuf int, setup, loop func(*phone)) {
	if len(r.binaries) == 0 {
		return
	}
	ps := make([]*phone, r.cfg.Phones)
	parallel(r.ctx, len(ps), r.cfg.Concurrency, func(i int) {
		p := &phone{idx: i}
		if r.slots != nil {
			p = r.slots[i]
		}
		p.bin = r.binaries[i%len(r.binaries)].idx
		if setup != nil {
			setup(p)
		}
		if r.dialPhone(p, true, recvBuf) != nil {
			return
		}
		ps[i] = p
		if loop != nil {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); loop(p) }()
		}
	})
	for _, p := range ps {
		if p != nil {
			r.phones = append(r.phones, p)
		}
	}
}

// closeAll ends the run's connections: phones first, then binaries, and
// waits (bounded) for their goroutines.
func (r *runner) closeAll() {
	r.phase.Store(phDone)
	for _, p := range r.phones {
		p.c.Close(1000)
	}
	for _, b := range r.binaries {
		b.c.Close(1000)
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// startProgress prints the mode's progress line every interval until the
// returned stop is called.
func (r *runner) startProgress() (stop func()) {
	w := r.cfg.Progress
	if w == nil || r.progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				if r.cfg.ProgressTTY {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				line := fmt.Sprintf("[%s %5.1fs] %s", r.cfg.Mode, time.Since(r.epoch).Seconds(), r.progress())
				if r.cfg.ProgressTTY {
					fmt.Fprint(w, "\r\033[K"+line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) } // safe to call twice (deferred and explicit)
}

func (r *runner) errCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, v := range r.errs {
		n += v
	}
	return n
}

// relaySample reads the relay processes, if any were named.
func (r *runner) relaySample() (procsSample, bool) {
	if len(r.cfg.RelayPIDs) == 0 {
		return nil, false
	}
	s, err := readProcs(r.cfg.RelayPIDs)
	if err != nil {
		r.addErr("relay pid unreadable", err)
		return nil, false
	}
	return s, true
}

// beginRelay records the relay's state before anything connects.
func (r *runner) beginRelay() {
	if s, ok := r.relaySample(); ok {
		r.relayBefore = s
		r.watch = watchProcs(r.cfg.RelayPIDs, 100*time.Millisecond)
	}
}

// window measures the relay and the tool over a stretch of time.
type window struct {
	relay0  procsSample
	self0   procSample
	relayOK bool
	start   time.Time
}

func (r *runner) openWindow() *window {
	w := &window{start: time.Now()}
	w.relay0, w.relayOK = r.relaySample()
	w.self0, _ = readProc(os.Getpid())
	return w
}

// result fills what every mode reports. ops is the count of the mode's
// unit in window w; conns is what the relay's memory is divided by.
func (r *runner) result(w *window, unit string, ops uint64, conns int) *Result {
	end := time.Now()
	secs := end.Sub(w.start).Seconds()
	res := &Result{
		Mode: r.cfg.Mode, URL: r.pt.display, Started: r.epoch,
		Params: Params{
			Binaries: r.cfg.Binaries, Phones: r.cfg.Phones, Window: r.cfg.Window, Size: r.cfg.Size,
			Duration: r.cfg.Duration.Seconds(), Concurrency: r.cfg.Concurrency,
			SourceIPs: len(r.cfg.SourceIPs), TLS: r.bt.tls != nil || r.pt.tls != nil,
		},
		OpUnit: unit, Ops: ops, Seconds: secs,
		Tool: ToolStats{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()},
	}
	if r.bt.display != r.pt.display {
		res.URL = ""
		res.BinaryURL, res.PhoneURL = r.bt.display, r.pt.display
	}
	if secs > 0 {
		res.OpsPerSec = float64(ops) / secs
	}
	if self, err := readProc(os.Getpid()); err == nil {
		res.Tool.CPUSeconds = (self.CPU - w.self0.CPU).Seconds()
	}
	if rels, ok := r.relaySample(); ok && w.relayOK {
		rel, rel0, before := rels.total(), w.relay0.total(), r.relayBefore.total()
		rs := &RelayStats{
			PID: r.cfg.RelayPIDs[0], CPUSeconds: (rel.CPU - rel0.CPU).Seconds(),
			RSSBefore: before.RSS, RSSAfter: rel.RSS, Conns: conns,
		}
		if len(rels) > 1 {
			for i, pid := range r.cfg.RelayPIDs {
				ps := ProcStats{PID: pid, CPUSeconds: (rels[i].CPU - w.relay0[i].CPU).Seconds(), RSSAfter: rels[i].RSS}
				if i < len(r.relayBefore) {
					ps.RSSBefore = r.relayBefore[i].RSS
				}
				rs.Procs = append(rs.Procs, ps)
			}
		}
		if r.watch != nil {
			rs.RSSPeak = max(r.watch.Stop(), rel.RSS)
			r.watch = nil
		}
		if secs > 0 {
			rs.CPUUtilisation = rs.CPUSeconds / secs
		}
		if ops > 0 {
			rs.CPUPerOpUs = rs.CPUSeconds / float64(ops) * 1e6
			rs.CPUSecPer100k = rs.CPUSeconds / float64(ops) * 1e5
		}
		if conns > 0 {
			rs.RSSPerConn = float64(rel.RSS-before.RSS) / float64(conns)
		}
		res.Relay = rs
	}
	return res
}

// finish adds the error tables, connection counts and the sequence check
// totals of the phones, and decides OK.
func (r *runner) finish(res *Result) *Result {
	if r.watch != nil {
		r.watch.Stop()
		r.watch = nil
	}
	r.mu.Lock()
	res.Errors, res.ErrorSamples, res.CloseNotices = r.errs, r.samples, r.notices
	res.ConnectLatency = r.connHist.summary()
	r.mu.Unlock()
	if len(res.ErrorSamples) == 0 {
		res.ErrorSamples = nil
	}
	if len(res.CloseNotices) == 0 {
		res.CloseNotices = nil
	}
	res.Connections = ConnStats{Binaries: len(r.binaries), Phones: len(r.phones), Failed: r.failed.Load(),
		Retries: r.retries.Load(), Dropped: r.dropped.Load()}
	res.Pings = 0
	for _, b := range r.binaries {
		res.Pings += b.c.Pings()
	}
	for _, p := range r.phones {
		res.Pings += p.c.Pings()
	}
	f := &res.Frames
	res.OK = len(res.Errors) == 0 && res.Connections.Dropped == 0 &&
		f.Lost == 0 && f.Duplicated == 0 && f.Reordered == 0 && f.Corrupt == 0
	return res
}

// streamTotals sums the phones' sequence checks into f.
func (r *runner) streamTotals(f *Frames) {
	for _, p := range r.phones {
		sent := p.sent.Load()
		f.Sent += sent
		f.Received += p.chk.unique
		f.Lost += p.chk.lost(sent)
		f.Duplicated += p.chk.dup
		f.Reordered += p.chk.reord
		f.Corrupt += p.corrupt
	}
}

// drain waits until every phone has received as many distinct frames as
// were sent in its stream (or it is gone), for at most DrainTimeout.
func (r *runner) drain() {
	deadline := time.Now().Add(r.cfg.DrainTimeout)
	for time.Now().Before(deadline) {
		pending := false
		for _, p := range r.phones {
			if !p.gone.Load() && p.uniq.Load() < p.sent.Load() {
				pending = true
				break
			}
		}
		if !pending {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Run performs one run of cfg.Mode and returns its result. ctx cuts the
// run short (the result still covers what was measured).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if cfg.Binaries < 1 || cfg.Phones < 0 || cfg.Window < 0 || cfg.Size < 0 || cfg.Concurrency < 1 {
		return nil, errors.New("binaries, concurrency must be at least 1; phones, window, size not negative")
	}
	if cfg.Mode == ModeChat && (cfg.PauseMin < 0 || cfg.PauseMax < cfg.PauseMin) {
		return nil, fmt.Errorf("chat pauses: want 0 < --pause-min ≤ --pause-max, got %v and %v", cfg.PauseMin, cfg.PauseMax)
	}
	if _, err := RaiseFileLimit(uint64(2*(cfg.Binaries+cfg.Phones+cfg.Concurrency) + 1024)); err != nil {
		return nil, fmt.Errorf("raising the open-file limit: %w", err)
	}
	r, err := newRunner(ctx, cfg)
	if err != nil {
		return nil, err
	}
	switch cfg.Mode {
	case ModeRT:
		return r.runRT()
	case ModeIdle:
		return r.runIdle()
	case ModeFanout:
		return r.runFanout()
	case ModeChurn:
		return r.runChurn()
	case ModeStall:
		return r.runStall()
	case ModeChat:
		return r.runChat()
	}
	return nil, fmt.Errorf("unknown mode %q (rt, idle, fanout, churn, stall, chat)", cfg.Mode)
}
