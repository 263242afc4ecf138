#!/usr/bin/env bash
# Production-style serving on one host: N uvicorn processes on consecutive ports, supervised.
#
#   PROCESSES=4 PORT=8000 DJANGO_SETTINGS_MODULE=renum.settings_production ... scripts/serve.sh
#
# serves on 127.0.0.1:8000..8003; put a reverse proxy in front (docs/operations.md has an
# nginx upstream for it). Every process shares Redis (registry, pub/sub, limits), so a client
# may land on any of them. The script
#   - points PROMETHEUS_MULTIPROC_DIR at a directory of its own (default var/prometheus),
#     emptied of old values at start, so /metrics on any port reports the whole host;
#   - restarts a process that dies, after telling prometheus-client it is dead (its live
#     gauges, e.g. open connections, stop counting);
#   - on SIGTERM/SIGINT stops every process gracefully (sockets are closed with 1012, clients
#     reconnect elsewhere) and exits.
# Environment: PROCESSES (default: number of cores), PORT (first port, default 8000), HOST
# (default 127.0.0.1), FORWARDED_ALLOW_IPS (proxies trusted for X-Forwarded-For, default
# 127.0.0.1), GRACEFUL_S (seconds to drain on stop, default 10), UVICORN_ARGS (extra flags).
set -euo pipefail
cd "$(dirname "$0")/.."

PROCESSES=${PROCESSES:-$(nproc)}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
GRACEFUL_S=${GRACEFUL_S:-10}
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
# Values of a previous run would be summed with the new ones: start from an empty directory.
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete

declare -a pids
stopping=0

start() {
  local i=$1
  # shellcheck disable=SC2086 # UVICORN_ARGS is a list of flags
  .venv/bin/uvicorn renum.asgi:application --host "$HOST" --port $((PORT + i)) \
    --loop uvloop --http httptools --ws realtime.transports.wsprotocol:WebSocketProtocol --ws-max-size 262144 --ws-per-message-deflate false --lifespan off \
    --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
    --timeout-graceful-shutdown "$GRACEFUL_S" ${UVICORN_ARGS:-} &
  pids[i]=$!
  echo "serve.sh: process $i (pid ${pids[i]}) on $HOST:$((PORT + i))"
}

mark_dead() {
  .venv/bin/python -c "import sys; from prometheus_client import multiprocess; multiprocess.mark_process_dead(int(sys.argv[1]))" "$1" || true
}

stop_all() {
  stopping=1
  echo "serve.sh: stopping ${#pids[@]} process(es)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; mark_dead "$pid"; done
  exit 0
}
trap stop_all TERM INT

for ((i = 0; i < PROCESSES; i++)); do start "$i"; done

while true; do
  sleep 1 & wait $! || true   # a background sleep lets the trap run at once
  for ((i = 0; i < PROCESSES; i++)); do
    if ! kill -0 "${pids[i]}" 2>/dev/null && [ "$stopping" = 0 ]; then
      wait "${pids[i]}" 2>/dev/null && code=0 || code=$?
      echo "serve.sh: process $i (pid ${pids[i]}) exited with $code; restarting"
      mark_dead "${pids[i]}"
      start "$i"
    fi
  done
done
