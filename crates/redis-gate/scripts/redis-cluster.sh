#!/usr/bin/env bash
# A 3-master Redis Cluster on loopback for the admission gate: `up` starts it (ports from
# REDIS_CLUSTER_PORT, default 7000, 7001, 7002; bus ports +10000) and prints each node as
# 127.0.0.1:PORT; `down` stops it and removes its directory. Nothing is kept on disk but the
# nodes' cluster files. The gate's URL is then redis+cluster://127.0.0.1:7000,127.0.0.1:7001,...
set -euo pipefail
base="${REDIS_CLUSTER_PORT:-7000}"
dir="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/stockguard-redis-cluster-$base}"
ports=("$base" "$((base + 1))" "$((base + 2))")

up() {
  mkdir -p "$dir"
  for port in "${ports[@]}"; do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
      echo "port $port already answers; run '$0 down' first" >&2
      exit 1
    fi
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --dir "$dir/$port" --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/create.log"
  for port in "${ports[@]}"; do
    for _ in $(seq 1 200); do
      redis-cli -h 127.0.0.1 -p "$port" cluster info | grep -q cluster_state:ok && break
      sleep 0.05
    done
    redis-cli -h 127.0.0.1 -p "$port" cluster info | grep -q cluster_state:ok \
      || { echo "node $port never reached cluster_state:ok" >&2; exit 1; }
    echo "127.0.0.1:$port"
  done
}

down() {
  for port in "${ports[@]}"; do
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
