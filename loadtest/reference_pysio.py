"""Reference server (c): python-socketio's ASGI server with its Redis manager, under uvicorn.

What a Python team would run instead of ours: ``socketio.AsyncServer`` (ASGI mode) with an
``AsyncRedisManager`` on the run's own pub/sub channel, fed from the publisher process by a
write-only ``socketio.RedisManager``. The CONNECT ``auth`` carries the access JWT, checked
with PyJWT as the bare reference does (no database); each socket enters the room
``user:<id>``, and a broadcast is an emit to the whole namespace. Compression off.

    uvicorn loadtest.reference_pysio:application   # SECRET_KEY, REDIS_URL, PYSIO_CHANNEL from the environment

python-socketio is imported here only: the project's server does not need it.
"""

from __future__ import annotations

import os

import jwt
import socketio

SECRET = os.environ["SECRET_KEY"]

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["REDIS_URL"], channel=os.environ["PYSIO_CHANNEL"]),
    cors_allowed_origins="*",
    http_compression=False,
    ping_interval=25,
    ping_timeout=20,
    max_http_buffer_size=1_000_000,
    logger=False,
    engineio_logger=False,
)


@sio.event
async def connect(sid: str, environ: dict, auth: dict | None) -> bool:
    """Accept a valid access token; the socket joins its user's room."""
    try:
        claims = jwt.decode((auth or {}).get("token", ""), SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        return False
    if claims.get("token_type") != "access" or claims.get("user_id") is None:
        return False
    await sio.enter_room(sid, f"user:{claims['user_id']}")
    return True


application = socketio.ASGIApp(sio, socketio_path="socket.io")
