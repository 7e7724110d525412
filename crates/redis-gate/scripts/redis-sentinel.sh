#!/usr/bin/env bash
# A Redis primary, one replica and three sentinels on loopback for the admission gate's
# failover: `up` starts them (primary on REDIS_SENTINEL_PORT, default 7100, replica +1,
# sentinels +2..+4; quorum 2, a primary is down after 1 s), waits until the sentinels see
# the replica and each other, and prints each process as 127.0.0.1:PORT and the gate's URL;
# `down` stops them and removes their directory. `failover` SIGKILLs the primary. Nothing is
# kept on disk but the sentinels' config files.
set -euo pipefail
base="${REDIS_SENTINEL_PORT:-7100}"
dir="${REDIS_SENTINEL_DIR:-${TMPDIR:-/tmp}/stockguard-redis-sentinel-$base}"
primary="$base"
replica="$((base + 1))"
sentinels=("$((base + 2))" "$((base + 3))" "$((base + 4))")
name=stockguard

wait_ping() {
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "port $1 never answered" >&2
  exit 1
}

node() {
  local port="$1"
  shift
  mkdir -p "$dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/$port" \
    --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" "$@"
  wait_ping "$port"
}

up() {
  for port in "$primary" "$replica" "${sentinels[@]}"; do
    if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
      echo "port $port already answers; run '$0 down' first" >&2
      exit 1
    fi
  done
  node "$primary"
  node "$replica" --replicaof 127.0.0.1 "$primary"
  for port in "${sentinels[@]}"; do
    mkdir -p "$dir/$port"
    cat >"$dir/$port/sentinel.conf" <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/$port/sentinel.pid
logfile $dir/$port/sentinel.log
sentinel monitor $name 127.0.0.1 $primary 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 10000
CONF
    redis-server "$dir/$port/sentinel.conf" --sentinel
    wait_ping "$port"
  done
  for port in "${sentinels[@]}"; do
    for _ in $(seq 1 200); do
      info=$(redis-cli -h 127.0.0.1 -p "$port" sentinel master "$name" | paste -sd' ')
      [[ "$info" == *"num-slaves 1"* && "$info" == *"num-other-sentinels 2"* ]] && break
      sleep 0.05
    done
    [[ "$info" == *"num-slaves 1"* && "$info" == *"num-other-sentinels 2"* ]] \
      || { echo "sentinel $port never saw the replica and the others" >&2; exit 1; }
  done
  echo "primary 127.0.0.1:$primary"
  echo "replica 127.0.0.1:$replica"
  for port in "${sentinels[@]}"; do echo "sentinel 127.0.0.1:$port"; done
  echo "redis+sentinel://127.0.0.1:${sentinels[0]},127.0.0.1:${sentinels[1]},127.0.0.1:${sentinels[2]}/$name"
}

failover() {
  local current
  current=$(redis-cli -h 127.0.0.1 -p "${sentinels[0]}" sentinel get-master-addr-by-name "$name" | sed -n 2p)
  kill -9 "$(cat "$dir/$current/redis.pid")"
  echo "SIGKILLed the primary on 127.0.0.1:$current; the sentinels promote the replica in a few seconds"
}

down() {
  for port in "${sentinels[@]}" "$primary" "$replica"; do
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  failover) failover ;;
  *) echo "usage: $0 up|down|failover" >&2; exit 2 ;;
esac
