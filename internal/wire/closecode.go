package wire

// WireCloseCodeAllowed reports whether code may appear in a close frame on
// the wire: 1000-1003, 1007-1014 and 3000-4999. The codes 1004-1006 and
// 1015 are reserved for local use, 1016-2999 are unassigned, and anything
// below 1000 or above 4999 is out of range.
func WireCloseCodeAllowed(code int) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// replacementCloseCode is what a close code the binary may not use becomes.
const replacementCloseCode = 1011

// Close is a close code together with the reason text the relay sends.
type Close struct {
	Code   int    // close code, always one WireCloseCodeAllowed accepts
	Reason string // reason text; empty for none
}

// The close codes and reasons the relay uses. This is the only place they
// are spelled out.
var (
	// CloseNormal ends a connection with nothing wrong, e.g. when a grace
	// period runs out.
	CloseNormal = Close{1000, ""}
	// CloseShuttingDown is sent to every connection when the relay stops.
	CloseShuttingDown = Close{1001, "shutting down"}
	// CloseGoingAway is reported to the binary for a phone that dropped
	// without sending a close code.
	CloseGoingAway = Close{1001, ""}
	// CloseProtocol closes a peer that broke the WebSocket protocol.
	CloseProtocol = Close{1002, "protocol error"}
	// CloseBinaryOpcode closes a peer that sent a binary message.
	CloseBinaryOpcode = Close{1003, "binary messages are not accepted"}
	// CloseInvalidJSON closes a phone whose frame is not one valid JSON value.
	CloseInvalidJSON = Close{1007, "frame is not valid JSON"}
	// CloseInvalidUTF8 closes a peer whose close frame carries a reason that
	// is not valid UTF-8 (RFC 6455 §5.5.1, §8.1).
	CloseInvalidUTF8 = Close{1007, "close reason is not valid UTF-8"}
	// CloseTooBig closes a peer whose message exceeds the read limit.
	CloseTooBig = Close{1009, "message too big"}
	// CloseHeartbeat closes a peer that did not answer a ping in time.
	CloseHeartbeat = Close{1011, "heartbeat timeout"}
	// CloseBacklog closes a phone whose outgoing queue overflowed.
	CloseBacklog = Close{1011, "phone backlog full"}
	// CloseMessageTimeout closes a peer whose message did not finish
	// arriving within the message-completion deadline (slow-loris guard).
	CloseMessageTimeout = Close{1008, "message timeout"}
	// CloseWriteTimeout closes a peer whose write did not finish in time.
	CloseWriteTimeout = Close{1011, "write timeout"}
	// CloseNoServer closes a phone whose server-id has no binary.
	CloseNoServer = Close{4404, "no server with that id"}
	// CloseReclaimed closes the phones of a server-id reclaimed by a new
	// binary.
	CloseReclaimed = Close{4404, "binary reclaimed server-id"}
	// CloseClaimed closes a binary that claims a server-id already held.
	CloseClaimed = Close{4409, "server-id already claimed"}
	// CloseTooManyPhones closes a phone beyond the per-server-id limit.
	CloseTooManyPhones = Close{4429, "too many phones for server-id"}
	// CloseTryAgain refuses a claim or a phone that a relay cluster cannot
	// check cluster-wide right now (its node lost NATS).
	CloseTryAgain = Close{1013, "try again later"}
	// CloseNodeLost closes a phone whose stream crossed between relay nodes
	// and could not be kept whole (NATS lost, or a gap in the stream).
	CloseNodeLost = Close{1011, "relay node unavailable"}
)

// closeCodeFromNumber maps num, a valid JSON number, to the close code to
// use and whether it had to be replaced. The number's exact decimal value is
// used, so 4401, 4401.0 and 4.401e3 all mean 4401; anything that is not an
// integer the wire allows becomes 1011. It does not allocate.
func closeCodeFromNumber(num []byte) (code int, replaced bool) {
	// Common case: plain digits. Valid JSON has no leading zeros, so five
	// digits are already out of range; stop accumulating there.
	v := 0
	plain := true
	for k, c := range num {
		if !isDigit(c) {
			plain = false
			break
		}
		if k < 5 {
			v = v*10 + int(c-'0')
		}
	}
	if !plain {
		var ok bool
		if v, ok = exactSmallInteger(num); !ok {
			return replacementCloseCode, true
		}
	}
	if !WireCloseCodeAllowed(v) {
		return replacementCloseCode, true
	}
	return v, false
}

// exactSmallInteger reports the value of num, a valid JSON number, when it
// is exactly a non-negative integer below 10000.
func exactSmallInteger(num []byte) (int, bool) {
	if num[0] == '-' {
		return 0, false // negative, or -0: neither is of use to a caller
	}
	// Split into integer digits, fraction digits and the exponent.
	i := 0
	for i < len(num) && isDigit(num[i]) {
		i++
	}
	intDigits := num[:i]
	var fracDigits []byte
	if i < len(num) && num[i] == '.' {
		start := i + 1
		i = start
		for i < len(num) && isDigit(num[i]) {
			i++
		}
		fracDigits = num[start:i]
	}
	exp := 0
	if i < len(num) { // 'e' or 'E'
		i++
		neg := false
		if num[i] == '+' || num[i] == '-' {
			neg = num[i] == '-'
			i++
		}
		for ; i < len(num); i++ {
			if exp < 1_000_000 { // saturate: far beyond anything that matters
				exp = exp*10 + int(num[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}

	// The value is D * 10^scale, where D is the integer and fraction
	// digits written one after the other.
	digitAt := func(k int) byte {
		if k < len(intDigits) {
			return intDigits[k]
		}
		return fracDigits[k-len(intDigits)]
	}
	first, last := 0, len(intDigits)+len(fracDigits) // significant digits are [first, last)
	scale := exp - len(fracDigits)
	for first < last && digitAt(first) == '0' {
		first++
	}
	for last > first && digitAt(last-1) == '0' {
		last--
		scale++
	}
	if first == last {
		return 0, true // zero
	}
	if scale < 0 || last-first+scale > 4 {
		return 0, false // a fraction, or at least 10000
	}
	v := 0
	for k := first; k < last; k++ {
		v = v*10 + int(digitAt(k)-'0')
	}
	for ; scale > 0; scale-- {
		v *= 10
	}
	return v, true
}
