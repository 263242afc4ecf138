"""Reference server (a): a bare ``websockets`` server fed by Redis pub/sub: the practical limit.

No framework: the JWT is checked with PyJWT (no database), one ``redis.asyncio`` pub/sub
connection per process carries ``user:<id>`` and ``broadcast``, and every message is written
to its sockets with ``websockets.broadcast`` (no task per delivery). Speaks just enough of the
protocol for the load tool: ``welcome`` first, ``pong`` to ``ping``.

    python -m loadtest.reference_bare --port 8765   # SECRET_KEY and REDIS_URL from the environment
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import jwt
import orjson
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

PREFIX = "lt:bare:"  # the pub/sub prefix unless --prefix says otherwise
PONG = '{"type":"pong"}'


class BareServer:
    """Sockets by channel, one pub/sub reader."""

    def __init__(self, redis_url: str, secret: str, prefix: str = PREFIX) -> None:
        self.secret = secret
        self.prefix = prefix
        self.client = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.channels: dict[str, set[ServerConnection]] = {"broadcast": set()}

    async def start(self) -> None:
        """Subscribe to the broadcast channel and start the reader."""
        await self.pubsub.subscribe(self.prefix + "broadcast")
        self.reader = asyncio.ensure_future(self.read_forever())

    async def read_forever(self) -> None:
        """Write every pub/sub message to the sockets of its channel."""
        cut = len(self.prefix)
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None:
                continue
            sockets = self.channels.get(message["channel"][cut:].decode())
            if sockets:
                broadcast(sockets, message["data"].decode())

    def user_id(self, ws: ServerConnection) -> str | None:
        """The user of the ``bearer.<jwt>`` subprotocol, or None."""
        for header in ws.request.headers.get_all("Sec-WebSocket-Protocol"):
            for proto in header.split(","):
                proto = proto.strip()
                if proto.startswith("bearer."):
                    try:
                        claims = jwt.decode(proto[7:], self.secret, algorithms=["HS256"])
                    except jwt.PyJWTError:
                        return None
                    if claims.get("token_type") != "access" or claims.get("user_id") is None:
                        return None
                    return str(claims["user_id"])
        return None

    async def handler(self, ws: ServerConnection) -> None:
        """One socket: authenticate, subscribe, answer pings, clean up."""
        user_id = self.user_id(ws)
        if user_id is None:
            await ws.close(4001, "invalid token")
            return
        own = "user:" + user_id
        sockets = self.channels.get(own)
        if sockets is None:
            sockets = self.channels[own] = set()
            await self.pubsub.subscribe(self.prefix + own)
        sockets.add(ws)
        self.channels["broadcast"].add(ws)
        try:
            welcome = {"type": "welcome", "payload": {"user_id": user_id, "heartbeat_s": 25}}
            await ws.send(orjson.dumps(welcome).decode())
            async for message in ws:
                if '"ping"' in message:
                    await ws.send(PONG)
        except ConnectionClosed:
            pass
        finally:
            self.channels["broadcast"].discard(ws)
            sockets.discard(ws)
            if not sockets and self.channels.get(own) is sockets:
                del self.channels[own]
                await self.pubsub.unsubscribe(self.prefix + own)


def _select_renum(connection: Any, subprotocols: Any) -> Any:
    return "renum.v1" if "renum.v1" in subprotocols else None


async def main(host: str, port: int, backlog: int, prefix: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = BareServer(os.environ["REDIS_URL"], os.environ["SECRET_KEY"], prefix)
    await server.start()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(server.handler, host, port, backlog=backlog, compression=None,
                     select_subprotocol=_select_renum, max_size=64 * 1024):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--prefix", default=PREFIX, help="pub/sub name prefix")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("the reference server binds loopback addresses only")
    import uvloop

    from realtime.ops.runtime import tune_gc

    # The same collector tuning as the project's server, so the comparison is like for like.
    tune_gc(os.environ.get("REALTIME_GC_THRESHOLDS"))
    uvloop.run(main(args.host, args.port, args.backlog, args.prefix))
