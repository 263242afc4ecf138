"""Transports: the codecs that carry a session over a wire.

The v1 WebSocket consumer (``consumers``, served by ``routing`` and uvicorn's protocol in
``wsprotocol``), the HTTP long poll and server-sent events (``http``), and Engine.IO 4 /
Socket.IO 5 (``socketio``). Each knows its wire (handshake, framing, close codes) and hands
everything else to the session core (``realtime.core``).
"""
