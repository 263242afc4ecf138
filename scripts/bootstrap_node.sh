#!/usr/bin/env bash
# Install the front-end packages from package-lock.json (npm ci) when node_modules is missing or
# was installed from another lockfile; quiet when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.renum-lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
