"""Notifications: a domain app of Renum realtime."""
