#!/usr/bin/env bash
# The I/O layers side by side: the relay of this checkout, the three
# forwarders of this directory (one forwarding core, the I/O layer
# swapped: internal/evloop, nbio, gnet) and optionally the floor forwarder,
# measured in one run like tools/perfplot/ab.sh: every binary its own
# process on loopback, binaries alternating within every repetition of
# every scenario, medians printed as a markdown table.
#
#   tools/iobench/run.sh                    # REPS=3, every scenario
#   FLOOR=path/to/floor REPS=3 ONLY="rt rt1" tools/iobench/run.sh
#
# LOOPS sets the forwarders' loop count (default: GOMAXPROCS); NAMES picks
# a subset of "relay evloop nbio gnet" (the floor comes with FLOOR). The load
# average is logged before every measurement (uptime.log in OUT) and its
# range printed under the table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
out=${OUT:-$(mktemp -d)}
reps=${REPS:-3}
port=${PORT:-18190}
conns=${CONNS:-15000}
hold=${HOLD:-45s}
only=${ONLY:-rt rt64x1 rt1 fanout idle}
loops=${LOOPS:-}
mkdir -p "$out"
rm -f "$out"/*.json "$out/uptime.log"

go build -o "$out/relay-load" ./cmd/relay-load
go build -o "$out/relay" ./cmd/pyrycode-relay
(cd "$here" && go build -o "$out/" ./cmd/evloopfwd ./cmd/nbiofwd ./cmd/gnetfwd)
names=${NAMES:-relay evloop nbio gnet}
if [ -n "${FLOOR:-}" ]; then
	cp "$FLOOR" "$out/floor"
	names="$names floor"
fi
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
url="ws://127.0.0.1:$port"
lflag=()
[ -n "$loops" ] && lflag=(--loops "$loops")

start() { # name: start it, set pid
	local a="127.0.0.1:$port"
	case $1 in
	relay) "$out/relay" --insecure-listen "$a" --metrics-listen '' --log-level warn >"$out/$1.log" 2>&1 & ;;
	evloop) "$out/evloopfwd" --insecure-listen "$a" "${lflag[@]}" >"$out/$1.log" 2>&1 & ;;
	nbio) "$out/nbiofwd" --insecure-listen "$a" "${lflag[@]}" >"$out/$1.log" 2>&1 & ;;
	gnet) "$out/gnetfwd" --insecure-listen "$a" "${lflag[@]}" >"$out/$1.log" 2>&1 & ;;
	floor) "$out/floor" --insecure-listen "$a" >"$out/$1.log" 2>&1 & ;;
	esac
	pid=$!
	sleep 1
}
stop() { kill "$pid"; wait "$pid" || true; }
trap 'kill "${pid:-}" 2>/dev/null || true' EXIT
scenario() { # scenario name, relay-load flags...
	local sc=$1
	shift
	for i in $(seq "$reps"); do
		for n in $names; do
			echo "$sc $n $i $(uptime)" >>"$out/uptime.log"
			start "$n"
			"$out/relay-load" --url "$url" --relay-pid "$pid" --json --quiet "$@" >"$out/$sc-$n-$i.json" ||
				echo "$sc $n $i: the load tool reported a failure" >&2
			stop
		done
	done
}
want() { [[ " $only " == *" $1 "* ]]; }

want rt && scenario rt --mode rt --duration 8s --warmup 2s --source-ips 127.0.1.1-127.0.1.16
want rt64x1 && scenario rt64x1 --mode rt --window 1 --duration 8s --warmup 2s --source-ips 127.0.1.1-127.0.1.16
want rt1 && scenario rt1 --mode rt --binaries 1 --phones 1 --window 1 --duration 8s --warmup 1s
want fanout && scenario fanout --mode fanout --duration 8s --warmup 2s --source-ips 127.0.1.1-127.0.1.4
want idle && scenario idle --mode idle --conns "$conns" --hold "$hold" --idle-at 3s --source-ips 127.0.4.0-127.0.7.255

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
row() { # scenario, label, printf format, jq expression
	printf '| %s |' "$2"
	for n in $names; do
		printf " $3 |" "$(cat "$out/$1-$n"-*.json 2>/dev/null | jq -r "$4" | median)"
	done
	echo
}
lost='[.frames.lost, .frames.duplicated, .frames.reordered] | add'
printf '| Figure (median of %s) |' "$reps"
for n in $names; do printf ' %s |' "$n"; done
echo
printf '|---|'
for n in $names; do printf -- '---:|'; done
echo
if want rt; then
	row rt "relay CPU µs per round trip, 64 × 8" %.2f '.relay.cpu_us_per_op'
	row rt "round trips/s, 64 × 8" %.0f '.ops_per_s'
	row rt "p50 round trip ms, 64 × 8" %.2f '.latency.p50_ms'
	row rt "p99 round trip ms, 64 × 8" %.2f '.latency.p99_ms'
	row rt "lost+dup+reordered, 64 × 8" %d "$lost"
fi
if want rt64x1; then
	row rt64x1 "relay CPU µs per round trip, 64 × 1" %.2f '.relay.cpu_us_per_op'
	row rt64x1 "round trips/s, 64 × 1" %.0f '.ops_per_s'
	row rt64x1 "p99 round trip ms, 64 × 1" %.3f '.latency.p99_ms'
	row rt64x1 "lost+dup+reordered, 64 × 1" %d "$lost"
fi
if want rt1; then
	row rt1 "relay CPU µs per round trip, 1 × 1" %.2f '.relay.cpu_us_per_op'
	row rt1 "round trips/s, 1 × 1" %.0f '.ops_per_s'
	row rt1 "p50 round trip ms, 1 × 1" %.3f '.latency.p50_ms'
	row rt1 "p99 round trip ms, 1 × 1" %.3f '.latency.p99_ms'
	row rt1 "lost+dup+reordered, 1 × 1" %d "$lost"
fi
if want fanout; then
	row fanout "fan-out frames/s" %.0f '.ops_per_s'
	row fanout "fan-out relay CPU µs per frame" %.2f '.relay.cpu_us_per_op'
	row fanout "fan-out p99 ms" %.2f '.latency.p99_ms'
	row fanout "lost+dup+reordered, fan-out" %d "$lost"
fi
if want idle; then
	row idle "KiB per idle connection, 3 s after the last connect" %.2f '.relay.rss_per_conn_idle_at_bytes / 1024'
	row idle "KiB per idle connection after the hold" %.2f '.relay.rss_per_conn_bytes / 1024'
	row idle "relay CPU while idle, % of a core" %.2f '100 * (.relay.hold_cpu_s // 0) / .params.hold_s'
	row idle "lost+dup+reordered, idle probe" %d "$lost"
fi
awk '{for (i=1;i<=NF;i++) if ($i=="average:") {gsub(",","",$(i+1)); print $(i+1)}}' "$out/uptime.log" |
	sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "\n1-minute load average before each measurement: %s to %s (%d measurements; %s)\n", lo, hi, NR, "uptime.log"}'
echo "results: $out"
