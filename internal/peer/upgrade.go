package peer

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"
)

// wsGUID is the fixed suffix RFC 6455 appends to the client key.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// ErrNotWebSocket reports a request that is not a valid WebSocket upgrade.
var ErrNotWebSocket = errors.New("peer: not a websocket upgrade")

// CheckUpgrade reports whether r is a well-formed RFC 6455 opening handshake.
func CheckUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return false
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return false
	}
	if r.Header.Get("Sec-Websocket-Version") != "13" {
		return false
	}
	key := r.Header.Get("Sec-Websocket-Key")
	raw, err := base64.StdEncoding.DecodeString(key)
	return err == nil && len(raw) == 16
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// Upgrade completes the opening handshake for a request that passed
// CheckUpgrade: it hijacks the connection and writes the 101 response. It
// returns the raw connection and any bytes the client sent after its request
// that net/http had already buffered. On failure it has answered the client
// (400) or closed the connection.
//
// The caller should return from the HTTP handler promptly: that frees the
// per-connection buffers net/http keeps for a serving goroutine.
func Upgrade(w http.ResponseWriter, r *http.Request, writeTimeout time.Duration) (net.Conn, []byte, error) {
	nc, pending, accept, err := Hijack(w, r)
	if err != nil {
		return nil, nil, err
	}
	if err := Accept(nc, accept, writeTimeout); err != nil {
		return nil, nil, err
	}
	return nc, pending, nil
}

// Hijack is the first half of Upgrade: it checks the handshake (answering
// 400 when it is not one), takes the connection over and returns the
// Sec-WebSocket-Accept value, without answering yet. The caller then does
// what must happen before the client may proceed and calls Accept.
func Hijack(w http.ResponseWriter, r *http.Request) (nc net.Conn, pending []byte, accept string, err error) {
	if !CheckUpgrade(r) {
		w.Header().Set("Sec-Websocket-Version", "13")
		w.WriteHeader(http.StatusBadRequest)
		return nil, nil, "", ErrNotWebSocket
	}
	h := sha1.New()
	h.Write([]byte(r.Header.Get("Sec-Websocket-Key")))
	h.Write([]byte(wsGUID))
	var sum [sha1.Size]byte
	accept = base64.StdEncoding.EncodeToString(h.Sum(sum[:0]))

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, "", err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		pending = make([]byte, n)
		if _, err := brw.Reader.Read(pending); err != nil {
			nc.Close()
			return nil, nil, "", err
		}
	}
	return nc, pending, accept, nil
}

// Accept writes the 101 response that completes a hijacked handshake. On
// failure it closes nc.
func Accept(nc net.Conn, accept string, writeTimeout time.Duration) error {
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	_ = nc.SetDeadline(time.Now().Add(writeTimeout))
	if _, err := nc.Write([]byte(resp)); err != nil {
		nc.Close()
		return err
	}
	_ = nc.SetDeadline(time.Time{})
	return nil
}
