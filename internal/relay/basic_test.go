package relay

import (
	"fmt"
	"regexp"
	"testing"
)

func TestRoundTripByteExact(t *testing.T) {
	tr := startRelay(t, Config{})
	bin := tr.binary("srv-1")
	tr.waitBinaries(1)
	ph := tr.phone("srv-1")

	frame := " {\"v\":2, \"type\":\"noise_init\",\"data\":\"h\u00e9llo\\n\"}\t"
	send(t, ph, frame)
	env := string(read(t, bin))
	m := regexp.MustCompile(`^\{"conn_id":"(c-[0-9a-f]{16})","frame":(.*)\}$`).FindStringSubmatch(env)
	if m == nil || m[2] != frame {
		t.Fatalf("binary got %q", env)
	}
	back := `{ "v":2,"type":"noise_resp","data":"x\u00fc" }`
	send(t, bin, fmt.Sprintf(`{"conn_id":%q, "frame": %s }`, m[1], back))
	if got := string(read(t, ph)); got != back {
		t.Fatalf("phone got %q want %q", got, back)
	}
}

// §2: "the binary is registered the moment its upgrade completes". A phone
// dialled the instant the binary's handshake returns must find it.
func TestBinaryRegisteredWhenUpgradeCompletes(t *testing.T) {
	tr := startRelay(t, Config{})
	for i := range 40 {
		id := fmt.Sprintf("instant-%d", i)
		bin := tr.dial("/v1/server", binaryHeaders(id))
		ph := tr.dial("/v1/client", phoneHeaders(id)) // no waiting in between
		send(t, ph, `"hello"`)
		if got := string(read(t, bin)); !regexp.MustCompile(`^\{"conn_id":"c-[0-9a-f]{16}","frame":"hello"\}$`).MatchString(got) {
			t.Fatalf("round %d: binary got %q", i, got)
		}
		bin.Close()
		ph.Close()
	}
}
