package relay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	cws "github.com/coder/websocket"
)

// The pyry daemon dials with coder/websocket; this checks that client
// against the relay's own codec: default dial options (which may offer
// compression), round trips both ways, pings, and close codes.
func TestInteropCoderWebSocketBinary(t *testing.T) {
	tr := startRelay(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bin, _, err := cws.Dial(ctx, tr.url+"/v1/server", &cws.DialOptions{
		HTTPHeader:      binaryHeaders("interop-srv"),
		CompressionMode: cws.CompressionContextTakeover,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bin.CloseNow()
	bin.SetReadLimit(256 << 10) // pyry sets its limit to the relay's frame cap
	tr.waitBinaries(1)
	ph := tr.phone("interop-srv")

	big := `{"v":2,"type":"noise_msg","data":"` + strings.Repeat("z", 100<<10) + `"}`
	for _, frame := range []string{`{"v":2,"type":"noise_init","data":"AA=="}`, big} {
		send(t, ph, frame)
		typ, env, err := bin.Read(ctx)
		if err != nil || typ != cws.MessageText {
			t.Fatalf("binary read: %v %v", typ, err)
		}
		if !strings.HasSuffix(string(env), `,"frame":`+frame+`}`) {
			t.Fatalf("envelope %.100q", env)
		}
		// Echo the envelope: it addresses the phone and carries the frame.
		if err := bin.Write(ctx, cws.MessageText, env); err != nil {
			t.Fatal(err)
		}
		if got := string(read(t, ph)); got != frame {
			t.Fatalf("phone got %.100q", got)
		}
	}

	// A ping from the daemon is answered (Ping needs a concurrent reader),
	// and the daemon then reads the close notice of the phone that leaves.
	type result struct {
		msg []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		_, msg, err := bin.Read(ctx)
		got <- result{msg, err}
	}()
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if err := bin.Ping(pctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	ph.WriteControl(8, []byte{0x0F, 0xA0}, time.Now().Add(time.Second)) // close 4000
	r := <-got
	if r.err != nil || !strings.HasPrefix(string(r.msg), `{"conn_id":"c-`) || !strings.HasSuffix(string(r.msg), `","close_code":4000}`) {
		t.Fatalf("notice: %q %v", r.msg, r.err)
	}
	if err := bin.Close(cws.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// A second daemon for the same id sees 4409 through coder/websocket's
// close status, which is how pyry detects the conflict.
func TestInteropCoderWebSocketConflict(t *testing.T) {
	tr := startRelay(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, _, err := cws.Dial(ctx, tr.url+"/v1/server", &cws.DialOptions{HTTPHeader: binaryHeaders("interop-dup")})
	if err != nil {
		t.Fatal(err)
	}
	defer first.CloseNow()
	go func() { // keep reading so the incumbent answers the conflict probe
		for {
			if _, _, err := first.Read(ctx); err != nil {
				return
			}
		}
	}()
	tr.waitBinaries(1)
	second, _, err := cws.Dial(ctx, tr.url+"/v1/server", &cws.DialOptions{HTTPHeader: binaryHeaders("interop-dup")})
	if err != nil {
		t.Fatal(err)
	}
	defer second.CloseNow()
	_, _, err = second.Read(ctx)
	if cws.CloseStatus(err) != 4409 {
		t.Fatalf("second daemon: %v, want close 4409", err)
	}
	var ce cws.CloseError
	if !errors.As(err, &ce) || ce.Reason != "server-id already claimed" {
		t.Fatalf("reason: %v", err)
	}
}
