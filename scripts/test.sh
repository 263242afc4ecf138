#!/usr/bin/env bash
# The whole test suite (installs first when needed): the front-end packages' unit tests
# (vitest, clients/js), then pytest, last, so that its summary closes the output.
# Extra arguments go to pytest. JS_TESTS=0 skips the front-end tests (e.g. one pytest module).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "${JS_TESTS:-1}" != "0" ]; then
  if command -v npm >/dev/null; then
    bash scripts/bootstrap_node.sh
    npm test --silent
  elif [ -n "${CI:-}" ]; then
    echo "the front-end tests need Node.js 20+ and npm" >&2
    exit 1
  else
    echo "== front-end tests skipped: no npm on PATH (Node.js 20+ runs them)" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
