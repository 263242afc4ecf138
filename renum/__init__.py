"""Renum realtime: the real-time layer of the Renum platform (project package)."""
