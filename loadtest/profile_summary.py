"""Summarize a py-spy ``--format raw`` recording: where the server's time goes.

    python -m loadtest.profile_summary var/loadtest/profiles/broadcast-ours.txt [--top 25]

Prints two markdown tables: functions by *self* samples (the code running on the CPU) and by
*inclusive* samples (the code and everything it called), plus the share per package.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _short(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})", path


def _package(path: str) -> str:
    if not path:
        return "(native / idle)"
    head = path.split("/", 1)[0]
    return head.removesuffix(".py")


def summarize(path: Path, top: int = 25) -> str:
    """The markdown summary of one recording."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ") and
                  not f.startswith("thread ")]
        if not frames:
            continue
        leaf, leaf_path = frames[-1]
        own[leaf] += samples
        packages[_package(leaf_path)] += samples
        for name in {name for name, _ in frames}:
            inclusive[name] += samples
    if not total:
        return "(no samples)\n"

    def table(title: str, counter: Counter[str]) -> list[str]:
        lines = [f"| {title} | share |", "|---|---|"]
        lines += [f"| `{name}` | {n / total * 100:.1f} % |" for name, n in counter.most_common(top)]
        return lines + [""]

    out = [f"{total} samples", ""]
    out += table("package (self time)", packages)
    out += table("function (self time)", own)
    out += table("function (inclusive)", inclusive)
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.recording, args.top))
