"""Transport layer of Renum realtime: sockets, channels, publishing, history and limits.

Domain apps publish through :mod:`realtime.publish` only; consumers hold no domain logic.
"""
