#!/usr/bin/env bash
# Run the failure scenarios and rewrite docs/reliability.md with what they measured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest tests/realtime/test_failures.py tests/realtime/test_outbox_faults.py \
  tests/realtime/test_sentinel.py -q -p no:cacheprovider \
  --reliability-report docs/reliability.md "$@"
