#!/usr/bin/env bash
# A/B: two relay binaries (and optionally the floor forwarder) measured in
# one run, alternating A, B[, floor] for every repetition of every
# scenario, so that the machine's noise falls on all of them alike. Prints
# the median of each figure per binary and the ratio B/A.
#
#   tools/perfplot/ab.sh A-BINARY B-BINARY [FLOOR-BINARY]
#   REPS=3 ONLY="rt rt1" tools/perfplot/ab.sh /tmp/relay-main /tmp/relay-new
#
# A and B are pyrycode-relay binaries (for example one built from main
# and one from a branch); extra flags for each go in A_FLAGS / B_FLAGS
# (e.g. B_FLAGS="--io goroutine"). The floor is the minimal forwarder of
# the shared workspace, built outside the repository. relay-load is built
# from this checkout. Every relay runs as its own process on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1 b=$2 floor=${3:-}
out=${OUT:-/tmp/relay-ab}
reps=${REPS:-3}
port=${PORT:-18090}
conns=${CONNS:-15000}
hold=${HOLD:-45s}
only=${ONLY:-rt rt64x1 rt1 fanout churn idle}
mkdir -p "$out"
rm -f "$out"/*.json
go build -o "$out/relay-load" ./cmd/relay-load
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
url="ws://127.0.0.1:$port"
names="A B"
[ -n "$floor" ] && names="A B floor"

start() { # name: start that relay, set pid
	case $1 in
	A) "$a" --insecure-listen "127.0.0.1:$port" --metrics-listen '' --log-level warn ${A_FLAGS:-} >"$out/A.log" 2>&1 & ;;
	B) "$b" --insecure-listen "127.0.0.1:$port" --metrics-listen '' --log-level warn ${B_FLAGS:-} >"$out/B.log" 2>&1 & ;;
	floor) "$floor" --insecure-listen "127.0.0.1:$port" >"$out/floor.log" 2>&1 & ;;
	esac
	pid=$!
	sleep 1
}
stop() { kill "$pid"; wait "$pid" || true; }
scenario() { # scenario name, relay-load flags...
	local sc=$1
	shift
	for i in $(seq "$reps"); do
		for n in $names; do
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
want churn && scenario churn --mode churn --rate 1000 --duration 6s --source-ips 127.0.2.1-127.0.3.254
want idle && scenario idle --mode idle --conns "$conns" --hold "$hold" --idle-at 3s --source-ips 127.0.4.0-127.0.7.255

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
fig() { # scenario, name, jq expression
	cat "$out/$1-$2"-*.json 2>/dev/null | jq -r "$3" | median
}
row() { # scenario, label, jq expression
	local va vb vf=""
	va=$(fig "$1" A "$3")
	vb=$(fig "$1" B "$3")
	[ -n "$floor" ] && vf=$(fig "$1" floor "$3")
	printf '| %s | %s | %s | %s |' "$2" "$va" "$vb" "$(awk -v a="$va" -v b="$vb" 'BEGIN { if (a+0 == 0) print "-"; else printf "%.2f", b/a }')"
	[ -n "$floor" ] && printf ' %s |' "$vf"
	echo
}
lost='[.frames.lost, .frames.duplicated, .frames.reordered] | add'
printf '| Figure (median of %s) | A | B | B/A |' "$reps"
[ -n "$floor" ] && printf ' floor |'
echo
printf '|---|---:|---:|---:|'
[ -n "$floor" ] && printf -- '---:|'
echo
if want rt; then
	row rt "relay CPU µs per round trip, 64 x 8" '.relay.cpu_us_per_op'
	row rt "p99 round trip ms, 64 x 8" '.latency.p99_ms'
	row rt "lost+dup+reordered, 64 x 8" "$lost"
fi
if want rt64x1; then
	row rt64x1 "relay CPU µs per round trip, 64 x 1" '.relay.cpu_us_per_op'
	row rt64x1 "lost+dup+reordered, 64 x 1" "$lost"
fi
if want rt1; then
	row rt1 "relay CPU µs per round trip, 1 x 1" '.relay.cpu_us_per_op'
	row rt1 "p50 round trip ms, 1 x 1" '.latency.p50_ms'
	row rt1 "lost+dup+reordered, 1 x 1" "$lost"
fi
if want fanout; then
	row fanout "fan-out frames/s" '.ops_per_s'
	row fanout "fan-out relay CPU µs per frame" '.relay.cpu_us_per_op'
	row fanout "lost+dup+reordered, fan-out" "$lost"
fi
if want churn; then
	row churn "relay CPU µs per churn cycle (connect, frame, close)" '.relay.cpu_us_per_op'
	row churn "failed connects, churn" '.connections.failed'
fi
if want idle; then
	row idle "KiB per idle connection, 3 s after the last connect" '.relay.rss_per_conn_idle_at_bytes / 1024'
	row idle "KiB per idle connection after the hold" '.relay.rss_per_conn_bytes / 1024'
	row idle "relay CPU over the whole hold, % of a core" '100 * .relay.hold_cpu_s / .params.hold_s'
	row idle "relay CPU from 3 s after the last connect to the end of the hold, % of a core" '100 * .relay.settled_cpu_s / .relay.settled_s'
	row idle "lost+dup+reordered, idle probe" "$lost"
fi
