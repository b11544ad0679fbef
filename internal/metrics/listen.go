package metrics

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// CheckListen validates the metrics listen address. An empty addr turns
// the listener off and is accepted. The host must be a loopback IP literal
// (127.0.0.0/8 or ::1) unless public is set: /metrics and the status page
// reveal traffic levels and are not meant for the internet. Host names,
// including "localhost", count as not loopback, since what they resolve
// to is not known here.
func CheckListen(addr string, public bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %q: want host:port (%v)", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("--metrics-listen %q: port %q is not a number from 0 to 65535", addr, port)
	}
	if public {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--metrics-listen %q is not a loopback address (127.0.0.0/8 or [::1]); add --metrics-public to serve metrics on it", addr)
}
