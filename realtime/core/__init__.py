"""The session core: one client's session of the protocol, whatever transport carries it.

Who the client is (``auth``, ``tokens``, ``users``, cookie sessions in ``sessions``), which
channels it may follow and publish to (``channels``), the commands it may run (``commands``),
its limits (``limits``), suspicious-pattern accounting (``security``) and catching it up on
a channel (``recovery``), brought together in ``session.Session``. Nothing here knows a wire.
"""
