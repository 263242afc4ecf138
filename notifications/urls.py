"""REST routes of notifications (mounted under /api/ by renum.urls)."""

urlpatterns: list = []
