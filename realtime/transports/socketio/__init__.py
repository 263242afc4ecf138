"""The Socket.IO binding: Engine.IO 4 and Socket.IO 5 at ``/socket.io/`` over the session core.

Layers, each its own module: ``engineio`` and ``parser`` are the pure packet codecs of the two
protocols; ``engine`` is the Engine.IO server (WebSocket and HTTP long-polling transports, the
upgrade, heartbeats); ``binding`` carries one ``realtime.core.session.Session`` per Socket.IO
connection, translating its v1 frames to events and acks and client events to v1 commands.
"""
