"""Results of a run and their markdown summary (metrics as rows, servers as columns, then ratios)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    """What was measured for one server in one scenario."""

    server: str
    kind: str
    scenario: str
    clients: int
    connected: int = 0
    connect_s: float = 0.0
    connect_p99_s: float = 0.0
    connect_errors: int = 0
    connect_cpu_s: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    rss_before: int = 0
    rss_idle: int = 0
    published: int = 0
    publish_failed: int = 0
    rate_target: float = 0.0
    rate_achieved: float = 0.0
    publisher_cpu_s: float = 0.0
    publisher_elapsed_s: float = 0.0
    expected: int = 0
    delivered: int = 0
    dropped_connections: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    window_s: float = 0.0
    cpu_s: float = 0.0
    load_before: float = 0.0
    note: str = ""
    # INFO commandstats differences (``loadtest.redisstats``), with --redis-stats only.
    redis_connect: dict[str, tuple[int, int]] = field(default_factory=dict)
    redis_publish: dict[str, tuple[int, int]] = field(default_factory=dict)
    runs: list[Result] = field(default_factory=list)  # every run of this server, with --repeat

    @property
    def lost(self) -> int:
        """Deliveries that did not arrive within the drain window."""
        return max(0, self.expected - self.delivered)

    @property
    def rss_per_connection(self) -> float:
        """(RSS with all clients idle - RSS before) / clients connected, in bytes."""
        return (self.rss_idle - self.rss_before) / self.connected if self.connected else 0.0

    @property
    def cpu_per_connect_us(self) -> float:
        """Server CPU time from the first handshake to the last welcome per client connected, in us."""
        return self.connect_cpu_s / self.connected * 1e6 if self.connected else 0.0

    @property
    def cpu_per_delivery_us(self) -> float:
        """Server CPU time over the measured window per delivery, in microseconds."""
        return self.cpu_s / self.delivered * 1e6 if self.delivered else 0.0

    @property
    def deliveries_per_s(self) -> float:
        """Deliveries over the measured window (first publish to last delivery or drain end)."""
        return self.delivered / self.window_s if self.window_s else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (nearest rank), 0 when nothing was delivered."""
        data = self.latencies_ms
        if not data:
            return 0.0
        return data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))]

    @property
    def publishes(self) -> bool:
        """Whether the scenario published anything."""
        return self.rate_target > 0


def headline(result: Result) -> float:
    """The figure a run is ranked by: CPU per delivery when the scenario publishes, else connect time."""
    return result.cpu_per_delivery_us if result.publishes else result.connect_s


def median_run(runs: list[Result]) -> Result:
    """The run with the median headline figure (the lower middle one of an even count), holding all runs."""
    chosen = sorted(runs, key=headline)[(len(runs) - 1) // 2]
    chosen.runs = list(runs)
    return chosen


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _kb(value: float) -> str:
    return f"{value / 1024:.1f} KB"


def rows(results: list[Result]) -> list[tuple[str, list[str]]]:
    """The summary rows (name, one cell per server)."""
    out: list[tuple[str, list[str]]] = [
        ("clients connected", [f"{r.connected}/{r.clients}" for r in results]),
        ("connect time, all welcomed", [f"{r.connect_s:.2f} s" for r in results]),
        ("connect p99 (handshake to welcome)", [f"{r.connect_p99_s * 1000:.0f} ms" for r in results]),
        ("connect errors (retried)", [str(r.connect_errors) + (f" {r.error_kinds}" if r.error_kinds else "")
                                      for r in results]),
        ("server CPU per connect", [f"{r.cpu_per_connect_us:.0f} us" if r.connected else "-" for r in results]),
        ("server RSS per idle connection", [_kb(r.rss_per_connection) for r in results]),
    ]
    if any(r.publishes for r in results):
        out += [
            ("published (achieved rate)", [f"{r.published} ({r.rate_achieved:.0f}/s)" if r.publishes else "-"
                                           for r in results]),
            ("publisher CPU busy (1 process)", [f"{r.publisher_cpu_s / r.publisher_elapsed_s * 100:.0f} %"
                                               if r.publisher_elapsed_s else "-" for r in results]),
            ("delivered / expected", [f"{r.delivered}/{r.expected}" if r.publishes else "-" for r in results]),
            ("lost", [str(r.lost) if r.publishes else "-" for r in results]),
            ("latency p50 / p90 / p99 / max (ms)",
             [" / ".join(_ms(r.percentile(q)) for q in (0.5, 0.9, 0.99)) + f" / {_ms(max(r.latencies_ms))}"
              if r.latencies_ms else "-" for r in results]),
            ("deliveries/s", [f"{r.deliveries_per_s:.0f}" if r.publishes else "-" for r in results]),
            ("server CPU per delivery", [f"{r.cpu_per_delivery_us:.1f} us" if r.delivered else "-" for r in results]),
            ("server CPU busy in window", [f"{r.cpu_s / r.window_s * 100:.0f} %" if r.window_s else "-"
                                           for r in results]),
            ("connections dropped", [str(r.dropped_connections) + (f" {r.close_codes}" if r.close_codes else "")
                                     for r in results]),
        ]
    if any(len(r.runs) > 1 for r in results):
        out += [
            ("runs, in order (the median run is shown): connect time",
             [" / ".join(f"{run.connect_s:.2f}" for run in r.runs) + " s" for r in results]),
            ("runs: server CPU per connect",
             [" / ".join(f"{run.cpu_per_connect_us:.0f}" for run in r.runs) + " us" for r in results]),
        ]
        if any(r.publishes for r in results):
            out += [
                ("runs: server CPU per delivery",
                 [" / ".join(f"{run.cpu_per_delivery_us:.1f}" for run in r.runs) + " us" for r in results]),
                ("runs: achieved rate", [" / ".join(f"{run.rate_achieved:.0f}" for run in r.runs) + " /s"
                                         for r in results]),
                ("runs: lost", [" / ".join(str(run.lost) for run in r.runs) for r in results]),
                ("runs: latency p99", [" / ".join(_ms(run.percentile(0.99)) if run.latencies_ms else "-"
                                                  for run in r.runs) + " ms" for r in results]),
            ]
    if any(r.redis_connect or r.redis_publish for r in results):
        from loadtest.redisstats import summary

        out += [
            ("Redis per connect (commands, Redis CPU; most run)",
             [summary(r.redis_connect, r.connected) for r in results]),
            ("Redis per message published (commands, Redis CPU; most run)",
             [summary(r.redis_publish, r.published) for r in results]),
        ]
    out.append(("load average before", [f"{r.load_before:.2f}" for r in results]))
    return out


def _ratio(a: float, b: float) -> str:
    if not (a and b):
        return "-"
    ratio = a / b
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3f}x"


def ratio_rows(results: list[Result]) -> list[tuple[str, list[str]]]:
    """Ours (``ours``, ``ours-sio``) against each reference (``bare``, ``textbook``, ``node-sio``,
    ``pysio``): CPU per delivery, p99, connect time, memory per connection."""
    ours = [r for r in results if r.kind in ("ours", "ours-sio")]
    refs = [r for r in results if r.kind not in ("ours", "ours-sio")]
    if not ours or not refs:
        return []
    table = []
    for mine in ours:
        for ref in refs:
            cells = [_ratio(mine.connect_s, ref.connect_s),
                     _ratio(mine.cpu_per_connect_us, ref.cpu_per_connect_us),
                     _ratio(mine.rss_per_connection, ref.rss_per_connection)]
            if mine.publishes and ref.publishes:
                cells += [_ratio(mine.cpu_per_delivery_us, ref.cpu_per_delivery_us),
                          _ratio(mine.percentile(0.99), ref.percentile(0.99))]
            else:
                cells += ["-", "-"]
            table.append((f"{mine.server} / {ref.server}", cells))
    return table


def markdown(results: list[Result], title: str, command: str = "") -> str:
    """The summary table (and the ratio table) as markdown."""
    lines = [f"### {title}", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines.append("| metric | " + " | ".join(r.server for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for name, cells in rows(results):
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratios = ratio_rows(results)
    if ratios:
        lines += ["",
                  "| ratio | connect time | CPU per connect | RSS per connection | CPU per delivery | p99 latency |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in ratios]
    notes = [f"{r.server}: {r.note}" for r in results if r.note]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_section(path: Path, key: str, text: str) -> None:
    """Put ``text`` between ``<!-- loadtest:key -->`` markers in ``path`` (replacing, or appended)."""
    begin, end = f"<!-- loadtest:{key} -->", f"<!-- /loadtest:{key} -->"
    block = f"{begin}\n{text}{end}"
    old = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
