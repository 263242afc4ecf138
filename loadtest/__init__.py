"""Load tool for the realtime layer, and the two reference servers it is measured against.

``manage.py loadtest`` (a thin command) drives ``loadtest.runner``: it provisions users,
starts each server under test on a loopback port, connects many authenticated clients from
worker processes (``loadtest.clients``), publishes at a target rate from a separate process
(``loadtest.publisher``) and prints a markdown summary (``loadtest.report``).

The reference servers: ``reference_bare`` (a bare ``websockets`` server fed by Redis pub/sub,
the practical limit for Python) and ``reference_textbook`` (a textbook Channels consumer on
channels_redis, the baseline). See docs/performance.md.
"""
