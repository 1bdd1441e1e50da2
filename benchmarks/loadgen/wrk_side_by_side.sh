#!/usr/bin/env bash
# Runs wrk and `wasmgate bench` side by side, interleaved, against the same
# local fasthttp server (internal/hello) and prints one markdown row per
# run. Usage: wrk_side_by_side.sh [rounds] [duration] [connections...]
# Needs wrk (apt-get install -y wrk).
set -euo pipefail
rounds=${1:-3}
dur=${2:-10s}
shift $(($# < 2 ? $# : 2))
conns=("$@")
[ "${#conns[@]}" -gt 0 ] || conns=(2 16)

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill "$srv" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -C "$root" -o "$work/wasmgate" ./cmd/wasmgate
go build -C "$root" -o "$work/hello" ./benchmarks/loadgen/internal/hello
addr=127.0.0.1:${PORT:-18089}
"$work/hello" -addr "$addr" &
srv=$!
sleep 0.5
url="http://$addr/"

echo "| connections | round | wrk req/s | wasmgate bench req/s | ratio |"
echo "| ---: | ---: | ---: | ---: | ---: |"
for c in "${conns[@]}"; do
	threads=$((c < 2 ? c : 2))
	for r in $(seq 1 "$rounds"); do
		w=$(wrk -t"$threads" -c"$c" -d"$dur" "$url" | awk '/Requests\/sec/ {print $2}')
		g=$("$work/wasmgate" bench -q -c "$c" -d "$dur" -o json "$url" | awk -F'[:,]' '/"throughput_rps"/ {gsub(/ /, "", $2); print $2}')
		printf '| %d | %d | %.0f | %.0f | %.3f |\n' "$c" "$r" "$w" "$g" "$(echo "$g / $w" | bc -l)"
	done
done
