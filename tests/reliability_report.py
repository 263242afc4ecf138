"""Renders docs/reliability.md from the rows the failure tests recorded."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

COMMAND = "bash scripts/reliability.sh"


def render(rows: list[dict[str, Any]], exitstatus: int) -> str:
    """A markdown page: how it was produced, then one section per scenario."""
    lines = [
        "# Reliability: what the failure scenarios showed",
        "",
        f"Produced by `{COMMAND}` (the failure tests in `tests/realtime/test_failures.py`,",
        "`tests/realtime/test_outbox_faults.py` and `tests/realtime/test_sentinel.py`, which CI also runs), against",
        "real uvicorn server processes, real Redis servers (the Redis faults: servers, a TCP proxy and Sentinel sets",
        "of the tests' own) and the test database, with the",
        "reference client `tests/reference_client.py` (backoff 1, 2, 4, 8, 16 s plus jitter, at most 5 attempts,",
        "resume with `since`, de-duplication by `(channel, epoch, offset)`).",
        "",
        "In the `outbox:` rows a notification counts as lost when its client neither received it live nor",
        "was told to resync with a REST reload that holds it; `delivered twice` counts live deliveries.",
        "",
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, Python "
        f"{platform.python_version()}; test session exit status {exitstatus}.",
        "",
        "| scenario | clients | messages expected per client | lost | delivered twice to the app | "
        "reconnect time p50 / max | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reconnect = row.get("reconnect_s")
        reconnect_text = f"{reconnect[0]:.2f} s / {reconnect[1]:.2f} s" if reconnect else "-"
        lines.append(
            f"| {row['scenario']} | {row.get('clients', '-')} | {row.get('expected', '-')} | "
            f"{row.get('lost', '-')} | {row.get('twice', '-')} | {reconnect_text} | {row.get('result', '')} |"
        )
    lines += ["", "## Details", ""]
    for row in rows:
        lines.append(f"- **{row['scenario']}**: {row.get('details', '')}")
    lines.append("")
    return "\n".join(lines)
