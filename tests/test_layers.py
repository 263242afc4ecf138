"""The layers point one way: the realtime layer imports no domain app, nor the load tool, nor the tests.

Domain apps (``notifications``, ``executions``) use ``realtime``; where the realtime layer needs
something of theirs (event types, channels, socket commands, service keys) they register it from
``AppConfig.ready``. A new import the other way fails here, with the file and line.
"""

from __future__ import annotations

import ast

from tests.live import ROOT

FORBIDDEN = {"notifications", "executions", "loadtest", "tests"}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import, and of every ``import_module("...")`` /
    ``__import__("...")`` with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def test_realtime_imports_no_domain_app_nor_the_load_tool():
    sources = sorted((ROOT / "realtime").rglob("*.py"))
    assert len(sources) > 30  # the walk found the package

    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources
        for line, module in imported_modules(ast.parse(path.read_text(), filename=str(path)))
        if module.split(".")[0] in FORBIDDEN
    ]

    assert offending == []


def test_the_check_sees_every_kind_of_import():
    source = ("import executions.models\nfrom notifications import services\n"
              "def later():\n    from loadtest.runner import run\n    return import_module('tests.live')\n")

    found = [module for _, module in imported_modules(ast.parse(source))]

    assert found == ["executions.models", "notifications", "loadtest.runner", "tests.live"]


def test_realtime_names_no_domain_event_type():
    """The transport keeps the envelope, frames and commands; the domain's message types and
    their payloads belong to their apps (``notifications/events.py``, ``executions/events.py``),
    which register them. A domain type written as a string in ``realtime/`` fails here."""
    from executions.events import EVENT_TYPES as EXECUTION_EVENTS
    from notifications.events import EVENT_TYPES as NOTIFICATION_EVENTS

    domain_types = set(NOTIFICATION_EVENTS) | set(EXECUTION_EVENTS)
    sources = sorted((ROOT / "realtime").rglob("*.py"))

    named = [
        f"{path.relative_to(ROOT)}:{node.lineno} names {node.value!r}"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Constant) and node.value in domain_types
    ]

    assert named == []


# Inside realtime, the packages are layers (docs/architecture.md): transports (codecs) over the
# session core over the node and its fan-out over storage. What a layer may import of the
# others, by package; the metrics, logs and runtime modules of ops are leaves anyone may use,
# and the top-level modules (the API the domain apps call: publish, schemas, conf, ...) are
# not constrained here.
LAYERS = ("transports", "core", "fanout", "storage", "ops")
LEAVES = {"realtime.ops.metrics", "realtime.ops.logs", "realtime.ops.runtime"}
MAY_IMPORT = {
    "transports": {"core", "fanout", "storage", "ops"},
    "core": {"fanout", "storage"},
    "fanout": {"storage"},
    "storage": set(),
    "ops": {"core", "storage"},
}


def realtime_imports(path) -> list[tuple[int, str]]:  # noqa: ANN001
    """(line, module) of each import of a realtime module, ``from realtime.core import auth`` as
    ``realtime.core.auth``."""
    found = []
    for line, module in imported_modules(ast.parse(path.read_text(), filename=str(path))):
        if module.split(".")[0] == "realtime":
            found.append((line, module))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in {
                f"realtime.{layer}" for layer in LAYERS}:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_the_realtime_packages_point_one_way():
    offending = []
    for layer in LAYERS:
        for path in sorted((ROOT / "realtime" / layer).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for line, module in realtime_imports(path):
                parts = module.split(".")
                if len(parts) < 3 or parts[1] not in LAYERS or parts[1] == layer or module in LEAVES:
                    continue
                if parts[1] not in MAY_IMPORT[layer]:
                    offending.append(f"{where}:{line} ({layer}) imports {module}")

    assert offending == []


def test_the_layer_check_sees_an_arrow_pointing_up(tmp_path):
    source = tmp_path / "streams.py"
    source.write_text("from realtime.core import session\nfrom realtime.ops import metrics\n")

    found = realtime_imports(source)

    assert found == [(1, "realtime.core"), (2, "realtime.ops"), (1, "realtime.core.session"),
                     (2, "realtime.ops.metrics")]
    assert "core" not in MAY_IMPORT["storage"] and "realtime.ops.metrics" in LEAVES
