"""Management commands of the executions app."""
