"""Socket commands: named domain actions that apps register, routed to their services.

A client sends ``{"type": "command", "id": 7, "payload": {"name": "notification.mark_read",
"args": {"id": "..."}}}``; the handler registered for the name runs with the authenticated
user (never a user id from the payload) and its return value is the ``command_result``.
Handlers are plain sync functions that call services (run in Django's database thread) or
async functions. They raise ``CommandError`` for answers such as ``not_found``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from realtime.schemas import ProtocolError

logger = logging.getLogger("realtime.core.commands")


class CommandError(ProtocolError):
    """A handler's refusal, sent to the client as an ``error`` frame with this code."""


Handler = Callable[[Any, dict[str, Any]], Any]
Permission = Callable[[Any, dict[str, Any]], bool]


@dataclass(frozen=True)
class RegisteredCommand:
    """A command name with its handler and optional permission check."""

    name: str
    handler: Handler
    permission: Permission | None = None


_commands: dict[str, RegisteredCommand] = {}


def register_command(name: str, handler: Handler, *, permission: Permission | None = None) -> None:
    """Register ``handler(user, args) -> JSON-serializable result`` under ``name``.

    ``permission(user, args) -> bool`` runs first; false answers ``forbidden``.
    """
    _commands[name] = RegisteredCommand(name, handler, permission)


def registered_commands() -> list[str]:
    """Names of every registered command (for docs and the admin)."""
    return sorted(_commands)


async def _call(func: Callable, user: Any, args: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(func):
        return await func(user, args)
    return await database_sync_to_async(func)(user, args)


async def run_command(user: Any, name: str, args: dict[str, Any]) -> Any:
    """Run a registered command for a user; raise ProtocolError on any refusal."""
    command = _commands.get(name)
    if command is None:
        raise ProtocolError("unknown_command", f"no command named {name[:100]!r}")
    if command.permission is not None and not await _call(command.permission, user, args):
        raise ProtocolError("forbidden", f"not allowed to run {name}")
    try:
        return await _call(command.handler, user, args)
    except ProtocolError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError("invalid_message", f"{name}: {exc}") from None
