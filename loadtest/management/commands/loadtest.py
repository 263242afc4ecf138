"""``manage.py loadtest --scenario broadcast``: load the realtime layer and compare with the references.

Thin: the options become a ``loadtest.runner.LoadConfig``; the work is in the ``loadtest``
package (see docs/performance.md for the scenarios, the reference servers and the results).
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from loadtest.report import markdown, write_section
from loadtest.runner import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, LoadConfig, run
from loadtest.scenarios import SCENARIOS
from loadtest.servers import UVICORN_WS


class Command(BaseCommand):
    """Run one load scenario against our server and the reference servers; print a summary table."""

    help = "Load test: N authenticated clients, a publisher at a target rate, ours vs bare vs textbook."

    def add_arguments(self, parser) -> None:  # noqa: ANN001 - argparse parser
        """Declare the command's options."""
        parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="broadcast")
        parser.add_argument("--clients", type=int, help="number of clients (default: the scenario's)")
        parser.add_argument("--rate", type=float, help="messages per second published (default: the scenario's)")
        parser.add_argument("--duration", type=float, help="seconds of publishing (default: the scenario's)")
        parser.add_argument("--servers", default="ours,bare,textbook",
                            help="comma-separated: ours, ours:daphne, ours:<uvicorn ws>, bare, textbook; "
                                 "over Socket.IO: ours-sio, node-sio (Node.js socket.io), pysio (python-socketio)")
        parser.add_argument("--server-cmd", choices=["uvicorn", "daphne"], default="uvicorn",
                            help="how `ours` (and `textbook`) is served")
        parser.add_argument("--ws", choices=UVICORN_WS, default="renum",
                            help="uvicorn --ws (renum: the protocol class scripts/serve.sh serves with)")
        parser.add_argument("--workers", type=int, default=2, help="client worker processes")
        parser.add_argument("--connect-concurrency", type=int, default=500, help="handshakes in flight, in total")
        parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
        parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
        parser.add_argument("--publisher-threads", type=int, help="publisher threads (default 1; 4 for notify)")
        parser.add_argument("--drain-timeout", type=float, help="seconds to wait for deliveries after publishing")
        parser.add_argument("--compression", action="store_true", help="clients offer permessage-deflate")
        parser.add_argument("--client-protocol", choices=["v1", "socketio"], default="v1",
                            help="socketio: Socket.IO clients on /socket.io/ (servers: ours only; "
                                 "the same as --servers ours-sio)")
        parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy record the server into DIR")
        parser.add_argument("--output", type=Path, help="markdown file whose section for this run is written/updated")
        parser.add_argument("--section", help="section key in --output (default: the scenario)")
        parser.add_argument("--title", help="section title (default: scenario and parameters)")
        parser.add_argument("--ours-settings", default="renum.settings",
                            help="DJANGO_SETTINGS_MODULE of `ours` (A/B runs of a settings change)")
        parser.add_argument("--ours-app", default="renum.asgi:application",
                            help="ASGI application of `ours` (A/B runs of a code change)")
        parser.add_argument("--repeat", type=int, default=1,
                            help="runs per server, taken in turn; the table shows each server's median run")
        parser.add_argument("--redis-stats", action="store_true",
                            help="count Redis commands and Redis CPU per connect and per message "
                                 "(INFO commandstats; only meaningful on a Redis of the run's own)")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--team-size", type=int, default=50,
                            help="longpoll/sse/events: users per team (each client follows its team's channel)")

    def handle(self, *args, **o) -> None:
        """Run and report."""
        config = LoadConfig(
            scenario=o["scenario"], secret_key=settings.SECRET_KEY, clients=o["clients"], rate=o["rate"],
            duration=o["duration"], servers=[s for s in o["servers"].split(",") if s.strip()],
            server_cmd=o["server_cmd"], ws=o["ws"], workers=o["workers"],
            connect_concurrency=o["connect_concurrency"], database_url=o["database_url"],
            redis_url=o["redis_url"], publisher_threads=o["publisher_threads"], drain_timeout=o["drain_timeout"],
            compression=o["compression"], profile_dir=o["profile"], progress=not o["no_progress"],
            ours_settings=o["ours_settings"], ours_app=o["ours_app"], repeat=o["repeat"],
            redis_stats=o["redis_stats"], client_protocol=o["client_protocol"],
        )
        scenario, clients, rate, duration = config.resolved()
        if scenario.transport == "http":
            return self._http(o, scenario, clients, rate, duration)
        if config.client_protocol == "socketio" and any(s.partition("@")[0].partition(":")[0] != "ours"
                                                         for s in config.servers):
            raise CommandError("--client-protocol socketio runs on ours only (--servers ours)")
        # SIGTERM unwinds like Ctrl-C, so the servers and workers this run started are stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            results = run(config)
        except (ValueError, RuntimeError, TimeoutError) as exc:
            raise CommandError(str(exc)) from exc
        title = o["title"] or (f"{scenario.name}: {clients} clients"
                               + (f", {rate:g} messages/s for {duration:g} s" if scenario.publish else ""))
        command = "python manage.py loadtest " + shlex.join(sys.argv[2:])
        text = markdown(results, title, command)
        self.stdout.write(text)
        if o["output"]:
            write_section(o["output"], o["section"] or scenario.name, text)
            self.stdout.write(f"written to {o['output']}")

    def _http(self, o: dict, scenario, clients: int, rate: float, duration: float) -> None:  # noqa: ANN001
        """The HTTP fallback scenarios (``longpoll``, ``sse``, ``events``): loadtest.http_fallback."""
        from loadtest import http_fallback

        servers = [s.strip() for s in o["servers"].split(",") if s.strip()]
        if o["servers"] == "ours,bare,textbook":  # the option's default is for the socket scenarios
            servers = ["ours"]
        for name in servers:
            if name.partition("@")[0] != "ours":
                raise CommandError(f"{scenario.name} runs on ours or ours@<commit> only, not {name!r}")
        if o["repeat"] != 1:
            raise CommandError(f"--repeat is for the socket scenarios; {scenario.name} runs each server once "
                               "(run the command again for more turns)")
        config = http_fallback.HttpConfig(
            mode=scenario.name, secret_key=settings.SECRET_KEY, clients=clients, rate=rate, duration=duration,
            servers=servers, workers=o["workers"], database_url=o["database_url"], redis_url=o["redis_url"],
            team_size=o["team_size"], progress=not o["no_progress"],
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            results = http_fallback.run(config)
        except (ValueError, RuntimeError, TimeoutError) as exc:
            raise CommandError(str(exc)) from exc
        title = o["title"] or f"{scenario.name}: {clients} clients, {rate:g} notifications/s for {duration:g} s"
        text = http_fallback.markdown(results, title, "python manage.py loadtest " + shlex.join(sys.argv[2:]))
        self.stdout.write(text)
        if o["output"]:
            write_section(o["output"], o["section"] or scenario.name, text)
            self.stdout.write(f"written to {o['output']}")
