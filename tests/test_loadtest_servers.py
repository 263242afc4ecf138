"""How the load tool names and configures the servers it measures (no processes started)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtest.servers import ServerSpec, server_env


@pytest.mark.parametrize(("name", "label", "gc"), [
    ("bare", "bare", None),
    ("bare:defaultgc", "bare (CPython GC defaults)", "off"),
    ("ours", "ours (uvicorn renum)", None),
    ("ours:websockets-sansio", "ours (uvicorn websockets-sansio)", None),
    ("textbook", "textbook (uvicorn websockets-sansio)", None),
    ("ours:daphne", "ours (daphne)", None),
])
def test_each_server_gets_its_label_and_collector_settings(name, label, gc):
    spec = ServerSpec.parse(name)
    env = server_env(spec, {}, database_url="postgres://x", redis_url="redis://x", secret_key="s", layer_prefix="p")

    assert spec.label == label
    assert env.get("REALTIME_GC_THRESHOLDS") == gc
    # every server is measured with the limits on, set high enough for one client IP
    assert int(env["REALTIME_CONNECTS_PER_IP_PER_MINUTE"]) > 0


@pytest.mark.parametrize("name", ["bare:fast", "ours:gunicorn", "nginx"])
def test_unknown_servers_are_refused_with_the_choices(name):
    with pytest.raises(ValueError, match="unknown"):
        ServerSpec.parse(name)


def test_ours_can_serve_another_app_for_an_ab_run():
    from loadtest.servers import ServerProcess

    spec = ServerSpec.parse("ours@var.exp.variant:application")
    process = ServerProcess(spec, {}, Path("/nonexistent"))

    assert (spec.kind, spec.runner, spec.ws) == ("ours", "uvicorn", "renum")
    assert spec.label == "ours (uvicorn renum) [var.exp.variant:application]"
    assert "var.exp.variant:application" in process.command()
    # ``renum`` is served with the project's protocol class, as scripts/serve.sh does
    command = process.command()
    assert command[command.index("--ws") + 1] == "realtime.transports.wsprotocol:WebSocketProtocol"
    assert ServerSpec.parse("ours:daphne@m:app").app == "m:app"


@pytest.mark.parametrize("name", ["bare@m:app", "textbook@m:app", "bare@HEAD", "ours@module-without-attribute"])
def test_only_ours_takes_another_app(name):
    with pytest.raises(ValueError, match="only ours takes another app"):
        ServerSpec.parse(name)


def test_ours_can_serve_the_project_at_another_commit_for_an_ab_run(tmp_path):
    from loadtest.servers import ServerProcess, short_commit, source_at

    base = short_commit("HEAD")
    spec = ServerSpec.parse(f"ours-sio@{base}")
    process = ServerProcess(spec, {}, tmp_path)

    assert (spec.kind, spec.runner, spec.ws, spec.app, spec.commit) == ("ours-sio", "uvicorn", "renum", "", base)
    assert spec.label == f"ours-sio (uvicorn renum) at {base}"
    assert "renum.asgi:application" in process.command()
    # the commit's own files, unpacked once, are what the server imports
    source = source_at(base, tmp_path)
    assert (source / "realtime" / "transports" / "socketio" / "binding.py").read_bytes() == subprocess.run(
        ["git", "show", f"{base}:realtime/transports/socketio/binding.py"], capture_output=True, check=True).stdout
    assert source_at(base, tmp_path) == source


@pytest.mark.parametrize(("layout", "expected"), [
    ("realtime/transports/wsprotocol.py", "realtime.transports.wsprotocol:WebSocketProtocol"),
    ("realtime/wsprotocol.py", "realtime.wsprotocol:WebSocketProtocol"),  # before realtime/ had packages
])
def test_an_older_commit_is_served_with_its_own_protocol_class(tmp_path, layout, expected):
    from loadtest.servers import ws_class

    (tmp_path / layout).parent.mkdir(parents=True)
    (tmp_path / layout).write_text("")

    assert ws_class("renum", tmp_path) == expected
    assert ws_class("websockets-sansio", tmp_path) == "websockets-sansio"
    with pytest.raises(FileNotFoundError, match="no protocol class"):
        ws_class("renum", tmp_path / "empty")


def test_the_http_scenarios_refuse_repeat_instead_of_ignoring_it():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--repeat is for the socket scenarios"):
        call_command("loadtest", "--scenario", "longpoll", "--repeat", "3")
