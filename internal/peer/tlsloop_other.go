//go:build !linux

package peer

import "crypto/tls"

// newTLSLoopConn returns nil: there is no event loop on this system.
func newTLSLoopConn(*Conn, *tls.Conn) *loopConn { return nil }
