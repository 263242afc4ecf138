#!/usr/bin/env bash
# One command for a fresh machine: venv, install, migrate, demo data, serve HTTP + WebSocket.
# Embedded defaults: SQLite under var/ and a private Redis started on var/redis.sock.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py demo_setup
PORT=${PORT:-8000}
echo "Serving on http://127.0.0.1:${PORT}/ (WebSocket at ws://127.0.0.1:${PORT}/ws/)"
exec .venv/bin/python manage.py runserver "127.0.0.1:${PORT}"
