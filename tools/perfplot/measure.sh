#!/usr/bin/env bash
# Every figure in docs/performance.md, each measured several times against a
# fresh relay built from this checkout, relay and load tool on this machine.
# Results go to $OUT (one JSON file per run); a summary table is printed.
#
#   tools/perfplot/measure.sh                 # everything (about 17 minutes)
#   ONLY="rt fanout" tools/perfplot/measure.sh
#
# Idle holds (HOLD, default 45s) must outlast the relay's heartbeat interval
# plus its write timeout (30 s + 10 s at its defaults): the probe after the
# hold then runs on connections the relay has pinged, as a person's phone
# is after a pause. Shorter holds never test that (the JSON's pings_received
# says how many pings arrived).
#
# The relay runs with its production defaults (per-IP limits included); the
# load tool spreads its connections over many 127/8 source addresses so they
# stay inside the per-IP upgrade burst. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/relay-perf}
port=${PORT:-18080}
tport=${TLS_PORT:-18443}
hold=${HOLD:-45s}
only=${ONLY:-rt rt1 fanout idle idle-tls churn churn-tls stall chat}
mkdir -p "$out"
go build -o /tmp/pyrycode-relay ./cmd/pyrycode-relay
go build -o /tmp/relay-load ./cmd/relay-load
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
url="ws://127.0.0.1:$port"
turl="wss://127.0.0.1:$tport"

# TLS: a self-signed certificate for 127.0.0.1, trusted by the load tool.
if [ ! -f "$out/cert.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
		-keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
fi

pid=
relay() { # start a fresh relay with extra flags
	/tmp/pyrycode-relay --insecure-listen "127.0.0.1:$port" --metrics-listen '' --log-level warn "$@" >"$out/relay.log" 2>&1 &
	pid=$!
	sleep 1
}
relay_tls() {
	/tmp/pyrycode-relay --tls-cert "$out/cert.pem" --tls-key "$out/key.pem" --https-listen "127.0.0.1:$tport" \
		--metrics-listen '' --log-level warn "$@" >"$out/relay.log" 2>&1 &
	pid=$!
	sleep 1
}
stop() { kill "$pid"; wait "$pid" || true; }
load() { # name, relay-load flags...
	local name=$1
	shift
	/tmp/relay-load --relay-pid "$pid" --json --quiet "$@" >"$out/$name.json" ||
		echo "$name: the load tool reported a failure (see $out/$name.json)" >&2
}
want() { [[ " $only " == *" $1 "* ]]; }

if want rt; then # 64 phones, 8 frames of 1 KiB in flight each, 4 echo binaries
	relay
	for i in 1 2 3; do load "rt-$i" --url "$url" --mode rt --duration 15s --warmup 3s --source-ips 127.0.1.1-127.0.1.16; done
	stop
fi
if want rt1; then # one phone, one frame in flight: no batching anywhere
	relay
	for i in 1 2 3; do load "rt1-$i" --url "$url" --mode rt --binaries 1 --phones 1 --window 1 --duration 10s; done
	stop
fi
if want fanout; then # one binary sending to 16 phones
	relay
	for i in 1 2 3; do load "fanout-$i" --url "$url" --mode fanout --duration 10s --source-ips 127.0.1.1-127.0.1.4; done
	stop
fi
if want idle; then # 15,000 idle connections: 7,500 binaries and 7,500 phones
	for i in 1 2 3; do
		relay
		load "idle-$i" --url "$url" --mode idle --conns 15000 --hold "$hold" --source-ips 127.0.4.0-127.0.7.255
		stop
	done
fi
if want idle-tls; then
	for i in 1 2 3; do
		relay_tls
		load "idle-tls-$i" --url "$turl" --ca-cert "$out/cert.pem" --mode idle --conns 15000 --hold "$hold" --source-ips 127.0.4.0-127.0.7.255
		stop
	done
fi
if want churn; then # connect + upgrade + one round trip + close handshake, as fast as 32 workers go
	for i in 1 2 3; do
		relay --upgrade-rate 1000000 --upgrade-burst 1000000
		load "churn-$i" --url "$url" --mode churn --rate -1 --duration 10s
		stop
	done
fi
if want churn-tls; then # the same with a full TLS handshake (ECDSA P-256) per cycle
	for i in 1 2 3; do
		relay_tls --upgrade-rate 1000000 --upgrade-burst 1000000
		load "churn-tls-$i" --url "$turl" --ca-cert "$out/cert.pem" --mode churn --rate -1 --duration 10s
		stop
	done
fi
if want stall; then # 1,000 phones that never read, one binary sending 4 KiB frames to all of them
	for q in 262144 4194304; do
		for i in 1 2; do
			relay --max-phones-per-server 1000 --max-frame-bytes 65536 --phone-queue-bytes "$q" --log-level info
			load "stall-$q-$i" --url "$url" --mode stall --phones 1000 --duration 30s --phone-queue-bytes "$q" \
				--source-ips 127.0.8.0-127.0.8.255
			echo "stall-$q-$i: relay logged phone_backlog_full $(grep -c phone_backlog_full "$out/relay.log" || true) times"
			stop
		done
	done
fi
if want chat; then # traffic like people's, at the tool's defaults: 100 phones with an echo binary each,
	# a lone frame after each random 5-90 s pause, for 3 minutes; every frame must come back
	relay
	load chat --url "$url" --mode chat
	stop
fi
go run ./tools/perfplot -summary "$out"/*.json
