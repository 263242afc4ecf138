"""Management commands of the load tool."""
