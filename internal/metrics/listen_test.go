package metrics

import (
	"strings"
	"testing"
)

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"", false, true}, // disabled
		{"", true, true},
		{"127.0.0.1:9090", false, true},
		{"127.8.9.10:9090", false, true},
		{"[::1]:9090", false, true},
		{"[::ffff:127.0.0.1]:9090", false, true},
		{"127.0.0.1:0", false, true},
		{"0.0.0.0:9090", false, false},
		{":9090", false, false}, // every interface
		{"[::]:9090", false, false},
		{"10.0.0.5:9090", false, false},
		{"192.0.2.1:9090", false, false},
		{"localhost:9090", false, false}, // a name, not a literal
		{"128.0.0.1:9090", false, false},
		{"0.0.0.0:9090", true, true},
		{":9090", true, true},
		{"metrics.internal:9090", true, true},
		{"127.0.0.1", false, false}, // no port
		{"127.0.0.1", true, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:70000", true, false},
		{"[::1:9090", false, false},
	} {
		err := CheckListen(tc.addr, tc.public)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, %v) = %v, want ok=%v", tc.addr, tc.public, err, tc.ok)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--metrics-listen")) {
			t.Errorf("CheckListen(%q, %v) error %q: want one line naming --metrics-listen", tc.addr, tc.public, err)
		}
	}
	err := CheckListen("0.0.0.0:9090", false)
	if err == nil || !strings.Contains(err.Error(), "--metrics-public") {
		t.Errorf("refusal %v does not name --metrics-public", err)
	}
}
