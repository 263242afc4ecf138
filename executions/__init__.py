"""Executions: a domain app of Renum realtime."""
