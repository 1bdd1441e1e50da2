#!/usr/bin/env bash
# The multi-process demo on one machine: a control plane with its embedded
# etcd, two stand-in backends that register themselves with it, and two
# proxies that follow it. Ctrl-C stops them all (the proxies drain first).
#
#   deploy/local/demo.sh                      # builds wasmgate into the state directory
#   WASMGATE=bin/wasmgate deploy/local/demo.sh
#
# Both proxies listen on the same port (127.0.0.1:8080): the listener asks
# for SO_REUSEPORT (reuse_port: true in fleet.yaml), so the kernel spreads
# connections over them. Each has its own admin endpoints (9901, 9902). State and logs live
# in .wasmgate/local (WASMGATE_DEMO_DIR); a second run keeps what was
# applied. Every address can be moved with the variables below.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${WASMGATE_DEMO_DIR:-$root/.wasmgate/local}
api=${WASMGATE_DEMO_API:-127.0.0.1:9900}
etcd_client=${WASMGATE_DEMO_ETCD:-127.0.0.1:2379}
etcd_peer=${WASMGATE_DEMO_ETCD_PEER:-127.0.0.1:2380}
port=${WASMGATE_DEMO_PORT:-8080}
admin1=${WASMGATE_DEMO_ADMIN1:-127.0.0.1:9901}
admin2=${WASMGATE_DEMO_ADMIN2:-127.0.0.1:9902}
port_a=${WASMGATE_DEMO_BACKEND_A:-8001}
port_b=${WASMGATE_DEMO_BACKEND_B:-8002}

command -v curl >/dev/null || { echo "demo.sh: curl is needed to wait for readiness" >&2; exit 1; }
mkdir -p "$dir/logs"
bin=${WASMGATE:-}
if [ -z "$bin" ]; then
  echo "building wasmgate into $dir/wasmgate" >&2
  (cd "$root" && go build -o "$dir/wasmgate" ./cmd/wasmgate)
  bin=$dir/wasmgate
fi

pids=()
names=()
stop() {
  trap - EXIT INT TERM
  echo "stopping" >&2
  # In reverse order of start: the proxies drain first, the control plane
  # stops last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  echo "stopped" >&2
}
stopping=0
trap stop EXIT
trap 'stopping=1; exit 130' INT
trap 'stopping=1; exit 143' TERM

# start NAME ARGS... runs wasmgate ARGS in the background, its output in a
# log. Each runs in a session of its own: Ctrl-C in the terminal reaches
# this script only, which stops them in order (the proxies drain first)
# instead of all of them at once.
detach=()
command -v setsid >/dev/null && detach=(setsid)
start() {
  local name=$1
  shift
  "${detach[@]}" "$bin" "$@" >"$dir/logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  echo "  started $name (pid $!), log in $dir/logs/$name.log" >&2
}

# await URL waits up to 30s for a 2xx answer, and gives up at once when a
# process it started has ended.
await() {
  local i j
  for ((i = 0; i < 300; i++)); do
    curl -fsS --noproxy "*" -o /dev/null "$1" 2>/dev/null && return 0
    for j in "${!pids[@]}"; do
      if ! kill -0 "${pids[j]}" 2>/dev/null; then
        echo "demo.sh: ${names[j]} ended; see $dir/logs/${names[j]}.log" >&2
        tail -n 3 "$dir/logs/${names[j]}.log" >&2
        return 1
      fi
    done
    sleep 0.1
  done
  echo "demo.sh: $1 did not answer within 30s; see $dir/logs" >&2
  return 1
}

# The checked-in configurations, with the ports asked for. fleet.yaml is
# copied once: it is the file to edit and apply.
[ -f "$dir/fleet.yaml" ] || sed -e "s/127.0.0.1:8080/127.0.0.1:$port/" "$here/fleet.yaml" >"$dir/fleet.yaml"
sed -e "s/127.0.0.1:8001/127.0.0.1:$port_a/" "$here/backend-a.yaml" >"$dir/backend-a.yaml"
sed -e "s/127.0.0.1:8002/127.0.0.1:$port_b/" "$here/backend-b.yaml" >"$dir/backend-b.yaml"

start controlplane controlplane --data-dir "$dir/controlplane" --listen "$api" \
  --etcd-listen-client "$etcd_client" --etcd-listen-peer "$etcd_peer"
await "http://$api/healthz"
# With no --admin-token the control plane generated one in its data directory.
export WASMGATE_SERVER="http://$api"
WASMGATE_TOKEN=$(cat "$dir/controlplane/admin.token")
export WASMGATE_TOKEN

# Store fleet.yaml once: after that, --expected-revision 1 is a conflict
# (status 3, nothing written), which keeps what an earlier run applied.
status=0
"$bin" ctl apply -f "$dir/fleet.yaml" --expected-revision 1 -m "deploy/local/demo.sh" >&2 || status=$?
case $status in
  0) ;;
  3) echo "  the control plane already holds a configuration; kept it" >&2 ;;
  *) exit "$status" ;;
esac

start backend-a run -c "$dir/backend-a.yaml" --wasm-cache-dir "$dir/wasm-cache/backend-a"
start backend-b run -c "$dir/backend-b.yaml" --wasm-cache-dir "$dir/wasm-cache/backend-b"
await "http://127.0.0.1:$port_a/healthz"
await "http://127.0.0.1:$port_b/healthz"
start register-a ctl register --cluster backend --id backend-a --address "127.0.0.1:$port_a" --ttl 10s
start register-b ctl register --cluster backend --id backend-b --address "127.0.0.1:$port_b" --ttl 10s

start proxy-1 run --etcd-endpoints "http://$etcd_client" --node-id proxy-1 --admin "$admin1" \
  --cache-file "$dir/proxy-1/last-good.json" --wasm-cache-dir "$dir/wasm-cache/proxy-1" --drain-timeout 5s
start proxy-2 run --etcd-endpoints "http://$etcd_client" --node-id proxy-2 --admin "$admin2" \
  --cache-file "$dir/proxy-2/last-good.json" --wasm-cache-dir "$dir/wasm-cache/proxy-2" --drain-timeout 5s
await "http://$admin1/ready"
await "http://$admin2/ready"
# /ready says a proxy has its configuration; the registrations may land a
# moment later (until then the cluster has no endpoint: 503).
await "http://127.0.0.1:$port/"

cat <<MSG

wasmgate demo is up.

  proxies        http://127.0.0.1:$port  (both, SO_REUSEPORT)   admin http://$admin1  http://$admin2
  control plane  http://$api   etcd http://$etcd_client
  backends       127.0.0.1:$port_a  127.0.0.1:$port_b  (registered in cluster "backend")

Try:
  curl -i http://127.0.0.1:$port/            round robin over backend-a and backend-b
  curl http://127.0.0.1:$port/api/hello      prefix rewrite /api/ -> /
  curl http://$admin1/clusters               the endpoints proxy-1 received from the registry

Change a route (edit $dir/fleet.yaml first):
  export WASMGATE_SERVER=$WASMGATE_SERVER WASMGATE_TOKEN=\$(cat $dir/controlplane/admin.token)
  $bin ctl diff -f $dir/fleet.yaml
  $bin ctl apply -f $dir/fleet.yaml
  $bin ctl status

Ctrl-C stops everything.
MSG

# Run until interrupted (a signal ends the wait at once and runs the trap),
# or until one of the processes ends on its own.
while :; do
  sleep 1 &
  wait $!
  for i in "${!pids[@]}"; do
    if [ "$stopping" = 0 ] && ! kill -0 "${pids[i]}" 2>/dev/null; then
      echo "demo.sh: ${names[i]} exited on its own; see $dir/logs/${names[i]}.log" >&2
      exit 1
    fi
  done
done
