// Package core is the forwarding core shared by the I/O benchmark's
// forwarders: just enough of the relay's wire contract for relay-load's
// rt, fanout and idle modes. It parses the opening handshake,
// RFC 6455 frames (masked client frames), pairs phones with their binary,
// wraps phone frames into envelopes, unwraps envelopes for the phone,
// answers pings and closes. It has no limits, heartbeats, grace period or
// JSON checks: those are the relay's business, and the same for every I/O
// layer. What differs between the forwarders is only how bytes get in and
// out (Peer and the calls to OnData and OnClose).
//
// Threading: OnData and OnClose for a connection run on that connection's
// loop, one at a time. Peer.Write may be called from any loop.
package core

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
)

// Peer is one connection as the I/O layer sees it.
type Peer interface {
	// Write sends b, which is only borrowed until Write returns. It may be
	// called from any loop; from is the connection whose input or close
	// is being handled (so a layer can tell whether it runs on the
	// destination's own loop).
	Write(from *Conn, b []byte)
	// Close closes the connection once what was written to it has gone
	// out (as far as the layer can). Called on the connection's loop.
	Close()
}

type role uint8

const (
	roleNew role = iota
	roleBinary
	rolePhone
	roleDone // close sent or received: input is ignored
)

// Conn is the core's state of one connection. An idle connection holds
// this struct and nothing else (in only while a frame is split).
type Conn struct {
	Peer Peer

	role   role
	in     []byte // input kept between reads: a split head or frame
	id     string // server-id (binary)
	connID []byte // phone
	bin    *Conn  // phone: its binary
	code   int    // phone: the close code it sent (for the notice)
	gone   atomic.Bool
}

// Relay is the registry and the forwarding logic.
type Relay struct {
	mu       sync.RWMutex
	binaries map[string]*Conn
	phones   map[string]*Conn // by conn_id

	base  uint64
	next  atomic.Uint64
	batch sync.Pool
}

// New returns an empty relay.
func New() *Relay {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Relay{
		binaries: make(map[string]*Conn),
		phones:   make(map[string]*Conn),
		base:     binary.LittleEndian.Uint64(b[:]),
		batch:    sync.Pool{New: func() any { return new(batch) }},
	}
}

// batch gathers what one read produces, per destination, so that every
// destination gets one Write per read.
type batch struct {
	dst   []*Conn
	buf   [][]byte
	close bool // close the source connection after the flush
}

func (b *batch) out(c *Conn) *[]byte {
	for i, d := range b.dst {
		if d == c {
			return &b.buf[i]
		}
	}
	b.dst = append(b.dst, c)
	if len(b.buf) < cap(b.buf) {
		b.buf = b.buf[:len(b.buf)+1]
		b.buf[len(b.buf)-1] = b.buf[len(b.buf)-1][:0]
	} else {
		b.buf = append(b.buf, nil)
	}
	return &b.buf[len(b.buf)-1]
}

func (r *Relay) flush(from *Conn, b *batch) {
	for i, d := range b.dst {
		if len(b.buf[i]) > 0 {
			d.Peer.Write(from, b.buf[i])
		}
		if cap(b.buf[i]) > 1<<20 {
			b.buf[i] = nil
		}
		b.dst[i] = nil
	}
	b.dst = b.dst[:0]
	b.buf = b.buf[:0]
}

// OnData handles bytes read from c.
func (r *Relay) OnData(c *Conn, data []byte) {
	kept := len(c.in) > 0
	if kept {
		c.in = append(c.in, data...)
		data = c.in
	}
	b := r.batch.Get().(*batch)
	n := r.consume(c, data, b)
	switch rest := data[n:]; {
	case len(rest) == 0:
		c.in = nil // an idle connection keeps no buffer
	case kept:
		c.in = c.in[:copy(c.in, rest)]
	default:
		c.in = append([]byte(nil), rest...)
	}
	r.flush(c, b)
	closeIt := b.close
	b.close = false
	r.batch.Put(b)
	if closeIt {
		c.Peer.Close()
	}
}

// OnClose tells the core that c's socket is gone.
func (r *Relay) OnClose(c *Conn) {
	if c.gone.Swap(true) {
		return
	}
	switch {
	case c.id != "" && c.bin == nil: // binary
		r.mu.Lock()
		if r.binaries[c.id] == c {
			delete(r.binaries, c.id)
		}
		r.mu.Unlock()
	case c.bin != nil: // phone: close notice to its binary
		r.mu.Lock()
		delete(r.phones, string(c.connID))
		live := r.binaries[c.bin.id] == c.bin
		r.mu.Unlock()
		if live {
			code := c.code
			if code == 0 {
				code = 1001
			}
			var m []byte
			body := `{"conn_id":"` + string(c.connID) + `","close_code":` + strconv.Itoa(code) + `}`
			m = appendHeader(m, opText, len(body))
			m = append(m, body...)
			c.bin.Peer.Write(c, m)
		}
	}
}

const (
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// consume handles every complete head or frame at the start of data and
// returns how many bytes it used.
func (r *Relay) consume(c *Conn, data []byte, b *batch) int {
	pos := 0
	for pos < len(data) {
		if c.role == roleDone {
			return len(data)
		}
		if c.role == roleNew {
			end := bytes.Index(data[pos:], []byte("\r\n\r\n"))
			if end < 0 {
				if len(data)-pos > 16<<10 {
					b.close = true
					c.role = roleDone
					return len(data)
				}
				return pos
			}
			r.handshake(c, data[pos:pos+end+4], b)
			pos += end + 4
			continue
		}
		// Frame header: 2 bytes, extended length, 4-byte mask key.
		p := data[pos:]
		if len(p) < 2 {
			return pos
		}
		fin, op, masked := p[0]&0x80 != 0, p[0]&0x0f, p[1]&0x80 != 0
		h, n := 2, uint64(p[1]&0x7f)
		switch n {
		case 126:
			if len(p) < 4 {
				return pos
			}
			n, h = uint64(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return pos
			}
			n, h = binary.BigEndian.Uint64(p[2:]), 10
		}
		if !masked || !fin || p[0]&0x70 != 0 || n > 64<<20 {
			// Unmasked, fragmented (relay-load never fragments) or
			// reserved bits: protocol error.
			r.closeWith(c, b, 1002, "protocol error")
			return len(data)
		}
		if len(p) < h+4+int(n) {
			return pos
		}
		key := binary.LittleEndian.Uint32(p[h:])
		payload := p[h+4 : h+4+int(n)]
		unmask(payload, key)
		pos += h + 4 + int(n)
		switch op {
		case opText, opBin:
			if c.role == rolePhone {
				r.fromPhone(c, payload, b)
			} else {
				r.fromBinary(c, payload, b)
			}
		case opPing:
			o := b.out(c)
			*o = appendHeader(*o, opPong, len(payload))
			*o = append(*o, payload...)
		case opPong:
		case opClose:
			code := 0
			o := b.out(c)
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
				*o = appendHeader(*o, opClose, 2)
				*o = append(*o, payload[:2]...)
			} else {
				*o = appendHeader(*o, opClose, 0)
			}
			if code == 0 {
				code = 1005
			}
			c.code = code
			c.role = roleDone
			b.close = true
			return len(data)
		default:
			r.closeWith(c, b, 1002, "protocol error")
			return len(data)
		}
	}
	return pos
}

var (
	envPrefix = []byte(`{"conn_id":"`)
	envMid    = []byte(`","frame":`)
)

// fromPhone wraps a phone's frame into an envelope for its binary.
func (r *Relay) fromPhone(c *Conn, frame []byte, b *batch) {
	bin := c.bin
	if bin.gone.Load() {
		r.closeWith(c, b, 4404, "no server with that id")
		return
	}
	o := b.out(bin)
	*o = appendHeader(*o, opText, len(envPrefix)+len(c.connID)+len(envMid)+len(frame)+1)
	*o = append(*o, envPrefix...)
	*o = append(*o, c.connID...)
	*o = append(*o, envMid...)
	*o = append(*o, frame...)
	*o = append(*o, '}')
}

// fromBinary unwraps an envelope for its phone. The envelope must start
// with its conn_id, followed by frame; frame is everything up to the
// envelope's closing brace. Anything else (close directives, push wakes,
// unknown conn_ids) is dropped.
func (r *Relay) fromBinary(c *Conn, env []byte, b *batch) {
	env = bytes.TrimSpace(env)
	if !bytes.HasPrefix(env, envPrefix) || len(env) < len(envPrefix)+2 || env[len(env)-1] != '}' {
		return
	}
	rest := env[len(envPrefix):]
	q := bytes.IndexByte(rest, '"')
	if q < 0 || !bytes.HasPrefix(rest[q:], envMid) {
		return
	}
	id := rest[:q]
	frame := bytes.TrimSpace(rest[q+len(envMid) : len(rest)-1])
	r.mu.RLock()
	p := r.phones[string(id)]
	r.mu.RUnlock()
	if p == nil || p.bin != c || len(frame) == 0 || string(frame) == "null" {
		return
	}
	o := b.out(p)
	*o = appendHeader(*o, opText, len(frame))
	*o = append(*o, frame...)
}

// closeWith queues a close frame for c and closes it after the flush.
func (r *Relay) closeWith(c *Conn, b *batch, code int, reason string) {
	o := b.out(c)
	*o = appendHeader(*o, opClose, 2+len(reason))
	*o = binary.BigEndian.AppendUint16(*o, uint16(code))
	*o = append(*o, reason...)
	c.code = code
	c.role = roleDone
	b.close = true
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshake answers one opening handshake (head ends with the blank line).
func (r *Relay) handshake(c *Conn, head []byte, b *batch) {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	f := bytes.Fields(line)
	o := b.out(c)
	fail := func(status string) {
		*o = append(*o, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"...)
		c.role = roleDone
		b.close = true
	}
	if len(f) != 3 || string(f[0]) != "GET" {
		fail("400 Bad Request")
		return
	}
	path := string(f[1])
	if path != "/v1/server" && path != "/v1/client" {
		fail("404 Not Found")
		return
	}
	var server, token, key []byte
	for _, l := range bytes.Split(rest, []byte("\r\n")) {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("X-Pyrycode-Server")):
			server = v
		case bytes.EqualFold(k, []byte("X-Pyrycode-Token")):
			token = v
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Key")):
			key = v
		}
	}
	if len(server) == 0 || len(key) == 0 || (path == "/v1/client" && len(token) == 0) {
		fail("400 Bad Request")
		return
	}
	sum := sha1.Sum(append(key, wsGUID...))
	*o = append(*o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	*o = base64.StdEncoding.AppendEncode(*o, sum[:])
	*o = append(*o, "\r\n\r\n"...)
	id := string(server)
	if path == "/v1/server" {
		r.mu.Lock()
		if old := r.binaries[id]; old != nil && !old.gone.Load() {
			r.mu.Unlock()
			r.closeWith(c, b, 4409, "server-id already claimed")
			return
		}
		r.binaries[id] = c
		r.mu.Unlock()
		c.id, c.role = id, roleBinary
		return
	}
	var raw [8]byte
	binary.BigEndian.PutUint64(raw[:], r.base^(r.next.Add(1)*0x9E3779B97F4A7C15))
	cid := append([]byte("c-"), hex.EncodeToString(raw[:])...)
	r.mu.Lock()
	bin := r.binaries[id]
	if bin != nil {
		r.phones[string(cid)] = c
	}
	r.mu.Unlock()
	if bin == nil {
		r.closeWith(c, b, 4404, "no server with that id")
		return
	}
	c.bin, c.connID, c.role = bin, cid, rolePhone
}

// appendHeader appends an unmasked frame header (FIN set).
func appendHeader(b []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x80|op, byte(n))
	case n <= 0xffff:
		return append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|op, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}

// unmask XORs p in place with the little-endian mask key, 8 bytes a step.
func unmask(p []byte, key uint32) {
	if key == 0 {
		return
	}
	k := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k)
	}
	for j := 0; i < len(p); i, j = i+1, j+1 {
		p[i] ^= byte(key >> (8 * (j & 3)))
	}
}
