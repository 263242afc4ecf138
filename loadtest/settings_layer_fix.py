"""``renum.settings`` with the channel-layer fix proposed in docs/performance.md (A/B runs only).

redis-py 8 gives every connection ``socket_timeout=5`` and a pool that raises past 100
connections. channels_redis blocks in BZPOPMIN for ``brpop_timeout`` = 5 s, so the read times
out together with the server's reply and the consumer that holds the receive lock dies
(its socket closes with 1006); under a connect storm ``group_add`` raises
``MaxConnectionsError``. Here the layer's reads wait longer than BZPOPMIN blocks and the
pool is large enough for a storm. Use with ``manage.py loadtest --ours-settings loadtest.settings_layer_fix``.
"""

from renum.settings import *  # noqa: F403
from renum.settings import CHANNEL_LAYERS, REDIS_URL

CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [
    {"address": REDIS_URL, "socket_timeout": 15, "max_connections": 1000},
]
