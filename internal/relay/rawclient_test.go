package relay

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// rawClient is a minimal allocation-free WebSocket client for benchmarks:
// it masks with a zero key (legal, and XOR-free) and reads into one buffer.
type rawClient struct {
	nc  net.Conn
	br  *bufio.Reader
	buf []byte
	out []byte
	hdr [14]byte
}

func dialRaw(addr, path string, h http.Header) (*rawClient, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", path, addr)
	for k, vs := range h {
		fmt.Fprintf(&req, "%s: %s\r\n", k, vs[0])
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(nc, req.String()); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	return &rawClient{nc: nc, br: br, buf: make([]byte, 0, 64<<10)}, nil
}

// write sends one masked text frame.
func (c *rawClient) write(p []byte) error {
	n := len(p)
	h := c.hdr[:0]
	h = append(h, 0x81)
	switch {
	case n < 126:
		h = append(h, 0x80|byte(n))
	case n < 1<<16:
		h = append(h, 0x80|126, byte(n>>8), byte(n))
	default:
		h = append(h, 0x80|127)
		h = binary.BigEndian.AppendUint64(h, uint64(n))
	}
	h = append(h, 0, 0, 0, 0)
	c.out = append(append(c.out[:0], h...), p...)
	_, err := c.nc.Write(c.out)
	return err
}

// read returns the next data frame's payload (valid until the next read)
// and its opcode.
func (c *rawClient) read() (byte, []byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:2]); err != nil {
		return 0, nil, err
	}
	op := c.hdr[0] & 0x0f
	n := int(c.hdr[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c.br, c.hdr[:2]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(c.hdr[:2]))
	case 127:
		if _, err := io.ReadFull(c.br, c.hdr[:8]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(c.hdr[:8]))
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	if _, err := io.ReadFull(c.br, c.buf); err != nil {
		return 0, nil, err
	}
	return op, c.buf, nil
}

func (c *rawClient) close() { c.nc.Close() }
