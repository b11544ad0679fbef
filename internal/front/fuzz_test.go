package front

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// netHTTP is a plain net/http server for the differential fuzz target: it
// answers 200 to any request that reaches its handler.
var netHTTP = sync.OnceValues(func() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		ReadHeaderTimeout: 2 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
})

// FuzzHead: whatever the head, the fast path's checks and parse do not
// panic, and a head they take is one net/http hands to its handler too
// (not a 400, 431 or 505): the fast path never serves what net/http
// would refuse.
func FuzzHead(f *testing.F) {
	f.Add(upgradeHead("/ws", ""))
	f.Add(upgradeHead("/v1/server", "X-Pyrycode-Server: abc\r\nUser-Agent: pyry/1\r\n"))
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	f.Add("GET /ws HTTP/1.1\r\nHost: [::1]:80\r\nA: b\r\n\r\nrest")
	f.Add("GET http://x/ws HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > headSize {
			return
		}
		end := strings.Index(in, "\r\n\r\n")
		if end < 0 {
			return
		}
		end += 4
		h := getHandshake()
		defer h.release()
		h.br.Reset(strings.NewReader(in))
		if _, err := h.br.Peek(len(in)); err != nil {
			t.Fatal(err)
		}
		req := h.parse(end)
		if req == nil {
			return
		}
		addr, err := netHTTP()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(nc, in[:end]); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("net/http's answer to %q: %v", in[:end], err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the fast path takes %q, net/http answers %d", in[:end], resp.StatusCode)
		}
	})
}
