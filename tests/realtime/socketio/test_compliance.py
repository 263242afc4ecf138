"""The protocols' public compliance suites against tests/socketio_compliance.py.

The suites are not part of the repository: fetch ``docs/engine.io-protocol/v4-test-suite`` and
``docs/socket.io-protocol/v5-test-suite`` of socketio/socket.io, run ``npm ci`` in each, and set
``SOCKETIO_SUITES_DIR`` to the directory that holds ``engine.io-protocol`` and
``socket.io-protocol``. The suites connect to port 3000.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT

SUITES = os.environ.get("SOCKETIO_SUITES_DIR")
pytestmark = [pytest.mark.live, pytest.mark.skipif(not SUITES or shutil.which("node") is None,
                                                   reason="SOCKETIO_SUITES_DIR (fetched suites) and node needed")]


@pytest.mark.parametrize(("mode", "suite", "cases"), [
    ("engineio", "engine.io-protocol/v4-test-suite", 25),
    ("socketio", "socket.io-protocol/v5-test-suite", 32),
])
def test_public_suite_passes_every_case(mode, suite, cases):
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.socketio_compliance:app", "--host", "127.0.0.1", "--port", "3000",
         "--ws", "websockets-sansio", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "SIO_COMPLIANCE": mode}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        directory = Path(SUITES) / suite
        result = subprocess.run(["npx", "mocha", "test-suite.js"], cwd=directory, capture_output=True, text=True,
                                timeout=180)
    finally:
        server.terminate()
        server.wait(10)
    passing = re.search(r"(\d+) passing", result.stdout)
    assert "failing" not in result.stdout, result.stdout[-4000:]
    assert passing is not None and int(passing.group(1)) == cases, result.stdout[-4000:]
