package limits

import (
	"net"
	"net/netip"
	"testing"
)

// After ReleaseSocket (the event loops took the socket over) the wrapper
// still reports the peer's address, and Close still gives the connection's
// slots back.
func TestReleaseSocketKeepsAddressAndSlots(t *testing.T) {
	l, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := l.Listener(inner)
	defer ln.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("127.0.0.1")
	if n := l.ConnsFrom(ip); n != 1 {
		t.Fatalf("%d connections counted from %v, want 1", n, ip)
	}
	want := client.LocalAddr().String()
	tcp := nc.(interface{ TCPConn() *net.TCPConn }).TCPConn()
	if tcp == nil {
		t.Fatal("no socket to take over")
	}
	tcp.Close() // as the loop does, after duplicating the descriptor
	nc.(interface{ ReleaseSocket() }).ReleaseSocket()
	if got := nc.RemoteAddr().String(); got != want {
		t.Fatalf("RemoteAddr after release %q, want %q", got, want)
	}
	if _, err := nc.Write([]byte("x")); err == nil {
		t.Fatal("a write through a released wrapper succeeded")
	}
	if err := nc.Close(); err != nil {
		t.Fatalf("Close after release: %v", err)
	}
	if n := l.ConnsFrom(ip); n != 0 {
		t.Fatalf("%d connections still counted after Close", n)
	}
}
