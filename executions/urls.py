"""REST routes of executions (mounted under /api/ by renum.urls)."""

from django.urls import path

from executions import apis

urlpatterns = [
    path("executions/", apis.ExecutionListCreateApi.as_view(), name="execution-list"),
    path("executions/<uuid:execution_id>/", apis.ExecutionDetailApi.as_view(), name="execution-detail"),
    path("executions/<uuid:execution_id>/cancel/", apis.ExecutionCancelApi.as_view(), name="execution-cancel"),
    path("executions/<uuid:execution_id>/progress/", apis.ExecutionProgressApi.as_view(), name="execution-progress"),
    path("teams/", apis.TeamListApi.as_view(), name="team-list"),
]
