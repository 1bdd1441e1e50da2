#!/usr/bin/env bash
# Runs the side-by-side benchmarks and regenerates benchmarks/RESULTS.md,
# benchmarks/results.svg and benchmarks/results.json.
#
#   benchmarks/run.sh [--quick] [--no-install] [--keep-scratch] [compare flags...]
#
# --quick         smoke run: one round of 3 s per scenario and payload
# --no-install    do not apt-get install missing peers
# --keep-scratch  keep the temporary directory (configs, logs) after the run
# Every other argument goes to the compare program, e.g. --rounds 5,
# --duration 20s, --warmup 3s, --connections 128, --scenarios nginx,wasmgate
# (or groups: http1, filters, https, h3, reload, mesh), --payloads 16k,
# --group-duration 10s, --proxy-cpu 1, --load-cpu 0, --nice -5 (favour the
# pinned processes over other work on a shared machine), --open-rate 0 (no
# fixed-rate latency runs).
#
# Default run: the http1 group, 3 rounds x 6 scenarios x 2 payloads x (2 s
# warm-up + 10 s of wrk + 6 s of fixed-rate wasmgate bench), about 12
# minutes; then the filters, https, h3, reload and mesh groups, 3 rounds x
# 21 scenarios x (1 s warm-up + 5 s), about 7.5 more (18 minutes measured
# on a quiet machine); plus the builds. About 23 at most when other work
# on the machine forces waits and retries; then the paired phases, about
# 22 more for the filters' and the mesh's (each cycle runs its order
# forward and backward: --paired-mirror).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
export PATH="$PATH:/usr/local/go/bin"

install=1
keep=0
args=()
for a in "$@"; do
	case "$a" in
	--no-install) install=0 ;;
	--keep-scratch) keep=1 ;;
	--quick) args+=(-quick) ;;
	--*) args+=("-${a#--}") ;;
	*) args+=("$a") ;;
	esac
done

log() { printf 'run.sh: %s\n' "$*" >&2; }

# Peers and load tools, as Debian packages, with the command each provides.
install_missing() {
	local missing=() pkg cmd
	for pair in nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk nghttp2-client:h2load; do
		pkg=${pair%%:*} cmd=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		log "not root: cannot install ${missing[*]}; their scenarios will be skipped"
		return 0
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
		log "apt-get failed; scenarios whose peer is missing will be skipped"
	# Debian starts a packaged nginx or HAProxy service where it can: the
	# suite starts its own instances, so stop those.
	for svc in nginx haproxy; do
		command -v service >/dev/null 2>&1 && service "$svc" stop >/dev/null 2>&1 || true
	done
}

[ "$install" -eq 1 ] && install_missing
command -v wrk >/dev/null 2>&1 || { log "wrk is required"; exit 1; }
command -v taskset >/dev/null 2>&1 || { log "taskset (util-linux) is required"; exit 1; }

tmp=$(mktemp -d /tmp/wasmgate-bench.XXXXXX)
compare_pid=
cleanup() {
	local status=$?
	trap - EXIT INT TERM HUP
	if [ -n "$compare_pid" ] && kill -0 "$compare_pid" 2>/dev/null; then
		kill -TERM "$compare_pid" 2>/dev/null || true
		wait "$compare_pid" 2>/dev/null || true
	fi
	# Whatever compare could not stop (it was killed outright, say).
	if [ -f "$tmp/scratch/pgids" ]; then
		while read -r pgid; do
			[ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
		done <"$tmp/scratch/pgids"
	fi
	if [ "$keep" -eq 1 ]; then
		log "scratch directory kept: $tmp"
	else
		rm -rf "$tmp"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

cd "$repo"
mkdir -p "$tmp/bin" "$tmp/scratch"
log "building into $tmp/bin"
go build -o "$tmp/bin/compare" ./benchmarks/compare
go build -o "$tmp/bin/upstream" ./benchmarks/upstream
go build -o "$tmp/bin/forwarder" ./benchmarks/forwarder
if ! go build -o "$tmp/bin/wasmgate" ./cmd/wasmgate 2>"$tmp/wasmgate-build.log"; then
	log "wasmgate does not build; its scenario will be skipped:"
	sed 's/^/    /' "$tmp/wasmgate-build.log" | head -20 >&2
	rm -f "$tmp/bin/wasmgate"
fi
# The filters group's Wasm modules: the minimal Go filter built from the
# SDK's example, and the first-party filters embedded in the binary (each
# alone, and the module holding the three, which the chain runs in one VM).
if [ -x "$tmp/bin/wasmgate" ]; then
	"$tmp/bin/wasmgate" plugin build sdk/examples/hello -o "$tmp/bin/hello.wasm" >/dev/null ||
		log "the hello example does not build; its scenario will be skipped"
	for p in authz encryption telemetry firstparty; do
		"$tmp/bin/wasmgate" plugin extract "$p" -o "$tmp/bin/$p.wasm" >/dev/null ||
			log "cannot extract $p; its scenarios will be skipped"
	done
fi

"$tmp/bin/compare" -bin "$tmp/bin" -root "$here" -scratch "$tmp/scratch" "${args[@]}" &
compare_pid=$!
wait "$compare_pid"
compare_pid=
log "wrote $here/RESULTS.md"
