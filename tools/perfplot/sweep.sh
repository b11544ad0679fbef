#!/usr/bin/env bash
# Scaling sweep, both I/O paths: for each path (--io loop, --io goroutine)
# and each connection count N, start a fresh relay and
#
#   1. hold N idle connections with relay-load (half binaries, half phones,
#      each phone having made one round trip), reading the relay's memory
#      3 s after the last connect (--idle-at) and at the end of the hold:
#      idle-IO-N.json;
#   2. once that hold is over, with the N connections still open, run
#      relay-load --mode rt next to them (64 phones x 8 in flight, 1 KiB,
#      from other source addresses) for the relay's CPU per round trip:
#      rt-IO-N.json;
#
# then stop the relay, and at the end plot memory per connection and CPU per
# round trip against N, one line per path, and print the same as a table.
#
#   tools/perfplot/sweep.sh                                  # both paths, 100 .. 15000 (about 15 minutes)
#   IOS=goroutine COUNTS="100 1000" tools/perfplot/sweep.sh  # one path, two counts
#   COUNTS="100 500" HOLD=20s RT_DURATION=3s RT_WARMUP=1s OUT=DIR SVG=DIR/s.svg tools/perfplot/sweep.sh  # a quick check
#
# The rt run starts after the idle run's memory readings (the idle run's
# round-trip probe is off and it keeps its connections open for the rt run
# instead), so neither memory figure holds anything of the rt run, and the
# CPU figure holds nothing of the idle run but what N open connections cost.
#
# The hold (default 45s) outlasts the relay's heartbeat interval plus its
# write timeout (30 s + 10 s at its defaults), so the rt run shares the relay
# with connections it has pinged; a shorter one never tests that.
#
# Environment: IOS, COUNTS, HOLD, IDLE_AT (3s), RT_DURATION (8s), RT_WARMUP
# (2s), RT_PHONES (64), RT_WINDOW (8), OUT (JSON results, default
# tools/perfplot/testdata), SVG (default docs/performance-scaling.svg), PORT.
# Relay and load tool share the machine; only 127/8 is used.
set -euo pipefail
cd "$(dirname "$0")/../.."
ios=${IOS:-loop goroutine}
counts=${COUNTS:-100 1000 2500 5000 10000 15000}
hold=${HOLD:-45s}
idle_at=${IDLE_AT:-3s}
rt_duration=${RT_DURATION:-8s}
rt_warmup=${RT_WARMUP:-2s}
rt_phones=${RT_PHONES:-64}
rt_window=${RT_WINDOW:-8}
out=${OUT:-tools/perfplot/testdata}
svg=${SVG:-docs/performance-scaling.svg}
port=${PORT:-18080}
idle_src=127.0.4.0-127.0.7.255 # 1,024 addresses: at most 15 upgrades each
rt_src=127.0.1.1-127.0.1.16    # the rt run's 68 connections, apart from the idle ones

secs() { # a Go duration of whole or fractional seconds ("45s", "1.5s") -> seconds
	case $1 in
	*ms) awk -v v="${1%ms}" 'BEGIN { print v / 1000 }' ;;
	*s) echo "${1%s}" ;;
	*) echo "sweep: durations in s or ms, not $1" >&2 && exit 2 ;;
	esac
}
# The idle run keeps its connections open this long after the hold: the rt
# run starts 3 s after it (a margin for the idle tool's end-of-hold reading)
# and needs its warmup, its measured time and a few seconds to connect and
# drain.
keep=$(awk -v w="$(secs "$rt_warmup")" -v d="$(secs "$rt_duration")" 'BEGIN { print 3 + w + d + 8 }')
hold_s=$(secs "$hold")

bin=$(mktemp -d)
relay_pid=''
idle_pid=''
cleanup() {
	for p in $idle_pid $relay_pid; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$bin"
}
trap cleanup EXIT
mkdir -p "$out"
go build -o "$bin/pyrycode-relay" ./cmd/pyrycode-relay
go build -o "$bin/relay-load" ./cmd/relay-load
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
url="ws://127.0.0.1:$port"

connected() { # connections the relay has registered, from /healthz
	curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null |
		sed -n 's/.*"connected_binaries":\([0-9]*\),"connected_phones":\([0-9]*\).*/\1 \2/p' |
		awk '{ print $1 + $2 }'
}

for io in $ios; do
	for n in $counts; do
		echo "sweep: --io $io, $n connections" >&2
		"$bin/pyrycode-relay" --io "$io" --insecure-listen "127.0.0.1:$port" --metrics-listen "" --log-level warn &
		relay_pid=$!
		sleep 1
		"$bin/relay-load" --url "$url" --mode idle --conns "$n" --hold "$hold" --idle-at "$idle_at" \
			--probe-phones -1 --probe-duration "${keep}s" \
			--source-ips "$idle_src" --relay-pid "$relay_pid" --json --quiet >"$out/idle-$io-$n.json" &
		idle_pid=$!
		# Wait until all N are registered (at most 1 s per 100 connections
		# and a minute more), then for the hold to end.
		deadline=$((SECONDS + 60 + n / 100))
		while [ "$(connected)" != "$n" ]; do
			if ! kill -0 "$idle_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
				echo "sweep: --io $io: $n connections never all registered; no rt run" >&2
				break
			fi
			sleep 0.2
		done
		if [ "$(connected)" = "$n" ]; then
			sleep "$(awk -v h="$hold_s" 'BEGIN { print h + 3 }')"
			"$bin/relay-load" --url "$url" --mode rt --phones "$rt_phones" --window "$rt_window" \
				--duration "$rt_duration" --warmup "$rt_warmup" \
				--source-ips "$rt_src" --relay-pid "$relay_pid" --json --quiet >"$out/rt-$io-$n.json" ||
				echo "sweep: --io $io: rt run with $n connections open reported a failure" >&2
		fi
		wait "$idle_pid" || echo "sweep: --io $io: idle run with $n connections reported a failure" >&2
		idle_pid=''
		kill "$relay_pid"
		wait "$relay_pid" || true
		relay_pid=''
	done
done
files=()
for io in $ios; do
	for n in $counts; do
		for f in "$out/idle-$io-$n.json" "$out/rt-$io-$n.json"; do
			[ -s "$f" ] && files+=("$f")
		done
	done
done
go run ./tools/perfplot -o "$svg" "${files[@]}"
