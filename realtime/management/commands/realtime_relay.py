"""``manage.py realtime_relay``: deliver the outbox from a process of its own.

Server processes run a relay thread already (``RELAY_IN_PROCESS``); a deployment that wants
delivery separate from serving (or processes that publish without serving, with
``REALTIME_RELAY_IN_PROCESS=0``) runs this command. It claims every outbox row whose lease ran
out (with the relay thread off, rows are claimable as soon as their first attempt failed),
delivers them in order and deletes them, until stopped. Several may run at once: each row is
claimed by one of them (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL).
"""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime.relay import Relay


class Command(BaseCommand):
    """Run the outbox relay in the foreground (``--once``: deliver what waits, then exit)."""

    help = "Deliver the realtime outbox to Redis (runs until stopped; --once drains and exits)."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--once``."""
        parser.add_argument("--once", action="store_true", help="deliver what is claimable now, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        """Relay until SIGTERM/SIGINT, or once."""
        relay = Relay()
        if options["once"]:
            delivered = 0
            while relay.claim_expired():
                while relay.queued:
                    delivered += relay.drain_controls() + relay.drain_once()
            relay.observe()
            self.stdout.write(f"delivered {delivered} outbox rows")
            return
        signal.signal(signal.SIGTERM, lambda *_: relay.stop(timeout=0))
        self.stdout.write("relaying the realtime outbox (Ctrl-C to stop)")
        try:
            relay.run_forever()
        except KeyboardInterrupt:
            pass
