"""Storage: what the realtime layer keeps in Redis.

Channel streams with offsets, epochs and history (``streams``), the connection registry
(``registry``), and the Redis plumbing under them: which Redis (``topology``), its clients
(``redis``; sharded pub/sub on a Cluster in ``sharded``), the channel layer (``layers``),
Django's cache (``cache``), and cheap random ids (``randomness``). The outbox table is
``realtime.models``; its relay, part of publishing, is ``realtime.relay``.
"""
