package tlsconf

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequireHost(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	for _, domain := range []string{testDomain, "Relay.Example.Test."} {
		h := RequireHost(domain, next)
		for _, tc := range []struct {
			host string
			pass bool
		}{
			{"relay.example.test", true},
			{"relay.example.test:443", true},
			{"RELAY.Example.TEST", true},
			{"relay.example.test.", true},
			{"relay.example.test.:8443", true},
			{"other.example.test", false},
			{"other.example.test:443", false},
			{"relay.example.test..", false},
			{"relay.example.test.evil", false},
			{"sub.relay.example.test", false},
			{"127.0.0.1:443", false},
			{"[::1]:443", false},
			{"", false},
		} {
			req := httptest.NewRequest(http.MethodGet, "/v1/client", nil)
			req.Host = tc.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tc.pass {
				if rec.Code != http.StatusOK || rec.Body.String() != "ok" {
					t.Errorf("domain %q, Host %q: got %d %q, want 200 from next", domain, tc.host, rec.Code, rec.Body.String())
				}
				continue
			}
			if rec.Code != http.StatusMisdirectedRequest {
				t.Errorf("domain %q, Host %q: status %d, want 421", domain, tc.host, rec.Code)
			}
			if rec.Body.Len() != 0 {
				t.Errorf("domain %q, Host %q: body %q, want empty", domain, tc.host, rec.Body.String())
			}
		}
	}
}
