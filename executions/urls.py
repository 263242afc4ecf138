"""REST routes of executions (mounted under /api/ by renum.urls)."""

urlpatterns: list = []
