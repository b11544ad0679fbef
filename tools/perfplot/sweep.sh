#!/usr/bin/env bash
# Scaling sweep: for each connection count, start a fresh relay, hold that
# many idle connections with relay-load (half binaries, half phones, each
# phone having made one round trip), record the relay's memory and a short
# latency probe as JSON, then plot them all.
#
#   tools/perfplot/sweep.sh                      # 2 .. 15000 connections
#   COUNTS="100 1000" HOLD=60s tools/perfplot/sweep.sh
#
# The hold (default 45s) outlasts the relay's heartbeat interval plus its
# write timeout (30 s + 10 s at its defaults), so the latency probe runs on
# connections the relay has pinged; a shorter one never tests that.
#
# Relay and load tool share the machine; only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-tools/perfplot/testdata}
port=${PORT:-18080}
hold=${HOLD:-45s}
counts=${COUNTS:-2 10 100 1000 2500 5000 10000 15000}
src=${SOURCE_IPS:-127.0.4.0-127.0.7.255} # 1,024 addresses: at most 15 upgrades each
mkdir -p "$out"
go build -o /tmp/pyrycode-relay ./cmd/pyrycode-relay
go build -o /tmp/relay-load ./cmd/relay-load
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for n in $counts; do
	/tmp/pyrycode-relay --insecure-listen "127.0.0.1:$port" --metrics-listen "" --log-level warn &
	pid=$!
	sleep 1
	/tmp/relay-load --url "ws://127.0.0.1:$port" --mode idle --conns "$n" --hold "$hold" \
		--source-ips "$src" --relay-pid "$pid" --json --quiet >"$out/idle-$n.json" || echo "run with $n connections reported a failure" >&2
	kill "$pid"
	wait "$pid" || true
done
go run ./tools/perfplot -o docs/performance-scaling.svg "$out"/idle-*.json
