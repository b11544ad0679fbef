#!/usr/bin/env bash
# Soak: a relay built from this checkout under mixed load for DURATION
# (default 10m): connection churn, round trips, and a few thousand idle
# connections that stay, all at once. Every SAMPLE seconds it records the
# relay's goroutines (from /metrics), open descriptors and RSS; at the end
# it compares the last third of the run with the middle third and fails if
# any of them grew by more than the slack (a leak grows steadily; noise
# does not). Extra relay flags go in RELAY_FLAGS (e.g. "--io goroutine").
#
#   tools/perfplot/soak.sh                     # 10 minutes
#   DURATION=90s tools/perfplot/soak.sh        # a quick check
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/relay-soak}
port=${PORT:-18095}
mport=${METRICS_PORT:-18096}
duration=${DURATION:-10m}
sample=${SAMPLE:-5}
idle=${IDLE:-4000}
mkdir -p "$out"
go build -o "$out/pyrycode-relay" ./cmd/pyrycode-relay
go build -o "$out/relay-load" ./cmd/relay-load
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
case $duration in
*m) secs=$((${duration%m} * 60)) ;;
*s) secs=${duration%s} ;;
*) secs=$duration ;;
esac
"$out/pyrycode-relay" --insecure-listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" --log-level warn \
	--upgrade-rate 1000000 --upgrade-burst 1000000 --max-connections-per-ip 100000 ${RELAY_FLAGS:-} >"$out/relay.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
url="ws://127.0.0.1:$port"
load() { "$out/relay-load" --url "$url" --quiet --json "$@"; }
# Idle connections held for the whole run (they are pinged every 30 s).
load --mode idle --conns "$idle" --hold "${secs}s" --source-ips 127.0.9.0-127.0.9.255 >"$out/idle.json" &
loads=$!
# Churn at a moderate rate, and round trips, for the whole run.
load --mode churn --rate 200 --duration "${secs}s" --source-ips 127.0.11.1-127.0.11.16 >"$out/churn.json" &
loads="$loads $!"
load --mode rt --phones 32 --window 4 --duration "${secs}s" --warmup 1s --source-ips 127.0.10.1-127.0.10.8 >"$out/rt.json" &
loads="$loads $!"
echo "t_s goroutines fds rss_kib" >"$out/samples.txt"
start=$(date +%s)
while [ $(($(date +%s) - start)) -lt "$secs" ]; do
	sleep "$sample"
	g=$(curl -s "http://127.0.0.1:$mport/metrics" | awk '/^go_goroutines /{print $2}')
	f=$(ls "/proc/$pid/fd" | wc -l)
	r=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
	echo "$(($(date +%s) - start)) ${g:-0} $f $r" >>"$out/samples.txt"
done
for l in $loads; do wait "$l" || true; done
cat "$out/samples.txt" | awk -v slack="${SLACK:-0.10}" '
NR == 1 { next }
{ t[n] = $1; g[n] = $2; f[n] = $3; r[n] = $4; n++ }
END {
	if (n < 6) { print "too few samples"; exit 1 }
	a = int(n / 3); b = int(2 * n / 3)
	for (i = a; i < b; i++) { gm += g[i]; fm += f[i]; rm += r[i] }
	for (i = b; i < n; i++) { gl += g[i]; fl += f[i]; rl += r[i] }
	gm /= (b - a); fm /= (b - a); rm /= (b - a); gl /= (n - b); fl /= (n - b); rl /= (n - b)
	printf "middle third: %.0f goroutines, %.0f fds, %.0f KiB RSS\n", gm, fm, rm
	printf "last third:   %.0f goroutines, %.0f fds, %.0f KiB RSS\n", gl, fl, rl
	bad = 0
	if (gl > gm * (1 + slack) + 10) { print "goroutines grew"; bad = 1 }
	if (fl > fm * (1 + slack) + 10) { print "descriptors grew"; bad = 1 }
	if (rl > rm * (1 + slack) + 2048) { print "RSS grew"; bad = 1 }
	if (!bad) print "nothing grew"
	exit bad
}'
for f in idle churn rt; do
	printf '%s: ' "$f"
	jq -c '{ok, lost: .frames.lost, dup: .frames.duplicated, reordered: .frames.reordered, dropped: .connections.dropped}' "$out/$f.json" 2>/dev/null || echo "(no result yet)"
done
