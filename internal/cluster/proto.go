package cluster

import (
	"encoding/binary"
	"errors"
)

// Message kinds. Directed messages go to <cluster>.node.<id>; broadcasts to
// <cluster>.all. Every record starts with its kind byte.
const (
	kPhoneFrame = 'F' // phone node -> owner: seq, conn_id, envelope bytes for the binary
	kPhoneGone  = 'G' // phone node -> owner: seq, conn_id, close notice (may be empty)
	kBinFrame   = 'B' // owner -> phone node: seq, conn_id, frame bytes for the phone
	kDirective  = 'D' // owner -> phone node: seq, conn_id, code, frame (may be empty)
	kEvict      = 'E' // owner -> phone node: conn_id, code, reason
	kRegister   = 'R' // request: node, id, conn_id, max -> 'O' + hasBinary | 'N' | 'T'
	kQuery      = 'Q' // request: id -> 'H' held | 'L' free
	kProbe      = 'P' // request: id, timeout ms -> 'A' answered | 'L' silent or free
	kOwner      = 'W' // broadcast: node, id: the id now belongs to node
	kHeartbeat  = 'h' // broadcast: node, instance
	kBye        = 'b' // broadcast: node, leaving
	kHello      = 'j' // broadcast: node, instance; joining (every node answers with a heartbeat)
	kBatch      = 'K' // directed: several stream records (F, G, B, D, E), each after its u32 length
)

// Replies.
const (
	rOK      = 'O'
	rNo      = 'N'
	rTooMany = 'T'
	rHeld    = 'H'
	rFree    = 'L'
	rAnswer  = 'A'
)

var errShort = errors.New("cluster: short message")

// enc appends fields to a record.
type enc []byte

func (e enc) u8(v byte) enc    { return append(e, v) }
func (e enc) u16(v int) enc    { return binary.BigEndian.AppendUint16(e, uint16(v)) }
func (e enc) u32(v uint32) enc { return binary.BigEndian.AppendUint32(e, v) }
func (e enc) u64(v uint64) enc { return binary.BigEndian.AppendUint64(e, v) }
func (e enc) str(s string) enc { return append(binary.BigEndian.AppendUint16(e, uint16(len(s))), s...) }
func (e enc) raw(b []byte) enc { return append(e, b...) }

// dec reads fields from a record; the first short read sets err and every
// later read returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u16() int {
	if v := d.take(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (d *dec) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *dec) str() string { return string(d.bytes()) }

// bytes returns a length-prefixed field without copying.
func (d *dec) bytes() []byte { return d.take(d.u16()) }

// rest returns everything left, without copying.
func (d *dec) rest() []byte {
	v := d.b
	d.b = nil
	return v
}
