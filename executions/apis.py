"""REST API of executions: thin views that validate input, call a selector or a service, and shape output."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.authentication import IsRunner, RunnerKeyAuthentication
from executions.conf import setting
from executions.models import Execution
from executions.runner import demo_execution_create
from executions.selectors import (
    execution_get,
    execution_get_for_user,
    execution_list,
    team_get_for_user,
    team_list_for_user,
)
from executions.services import ExecutionError, ExecutionTransitionError, execution_cancel, execution_report


class ExecutionChangeRefused(APIException):
    """400: the rules of executions refuse the change (ended execution, progress going down...)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The execution cannot change this way."
    default_code = "invalid_state"


@extend_schema_serializer(component_name="Execution")
class ExecutionOutputSerializer(serializers.ModelSerializer):
    """An execution as the API shows it; blank ``current_step`` and ``error`` are null, as in the socket payload."""

    current_step = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id", "team", "status", "progress", "current_step", "result", "error",
            "created_by", "created_at", "started_at", "finished_at", "updated_at",
        ]

    def get_current_step(self, execution: Execution) -> str | None:
        """The step, or null before the first one."""
        return execution.current_step or None

    def get_error(self, execution: Execution) -> str | None:
        """The error of a failed execution, else null."""
        return execution.error or None


class ExecutionPagination(CursorPagination):
    """Newest first; cursors stay stable while new executions are created."""

    ordering = ("-created_at", "-id")

    def get_page_size(self, request: Request) -> int:
        """Page size from RENUM_EXECUTIONS["PAGE_SIZE"]."""
        return setting("PAGE_SIZE")


def _refused(exc: ExecutionError) -> ExecutionChangeRefused:
    return ExecutionChangeRefused(detail=str(exc), code="invalid_state" if isinstance(
        exc, ExecutionTransitionError) else "invalid")


class ExecutionListCreateApi(APIView):
    """``GET``: executions of the caller's teams. ``POST``: start a demo execution of one of them."""

    class FilterSerializer(serializers.Serializer):
        """Query parameters of the list."""

        # Bounded by the id column's range: a larger number is a 400, not a database overflow (500).
        team = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
        status = serializers.ChoiceField(choices=Execution.Status.choices, required=False)

    @extend_schema_serializer(component_name="ExecutionDemoInput")
    class InputSerializer(serializers.Serializer):
        """Body of a demo execution request."""

        team = serializers.IntegerField(min_value=1)
        steps = serializers.IntegerField(required=False, min_value=1, max_value=1000)
        interval_s = serializers.FloatField(required=False, min_value=0.0, max_value=60.0)

    @extend_schema(
        parameters=[
            OpenApiParameter("team", int, description="Only this team's executions."),
            OpenApiParameter("status", str, enum=Execution.Status.values, description="Only this status."),
        ],
        responses=ExecutionOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        """List the executions of the caller's teams, newest first (cursor pagination)."""
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        executions = execution_list(
            user=request.user, team_id=filters.validated_data.get("team"), status=filters.validated_data.get("status")
        )
        paginator = ExecutionPagination()
        page = paginator.paginate_queryset(executions, request, view=self)
        return paginator.get_paginated_response(ExecutionOutputSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: ExecutionOutputSerializer})
    def post(self, request: Request) -> Response:
        """Create and start a demo execution that a background runner walks to 100%."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = team_get_for_user(user=request.user, team_id=data["team"])
        if team is None:
            raise NotFound("No such team.")
        execution = demo_execution_create(
            team=team,
            created_by=request.user,
            steps=data.get("steps", setting("DEMO_STEPS")),
            interval_s=data.get("interval_s", setting("DEMO_INTERVAL_S")),
        )
        return Response(ExecutionOutputSerializer(execution).data, status=status.HTTP_201_CREATED)


class ExecutionDetailApi(APIView):
    """One execution of the caller's teams; 404 for any other."""

    @extend_schema(responses=ExecutionOutputSerializer)
    def get(self, request: Request, execution_id: Any) -> Response:
        """The execution's current state."""
        execution = execution_get_for_user(user=request.user, execution_id=execution_id)
        if execution is None:
            raise NotFound("No such execution.")
        return Response(ExecutionOutputSerializer(execution).data)


class ExecutionCancelApi(APIView):
    """Cancel a queued or running execution of one of the caller's teams."""

    @extend_schema(request=None, responses=ExecutionOutputSerializer)
    def post(self, request: Request, execution_id: Any) -> Response:
        """The execution ends as failed with ``cancelled by <username>``; 400 when it already ended."""
        execution = execution_get_for_user(user=request.user, execution_id=execution_id)
        if execution is None:
            raise NotFound("No such execution.")
        try:
            execution = execution_cancel(execution=execution, user=request.user)
        except ExecutionError as exc:
            raise _refused(exc) from None
        except PermissionError:
            raise NotFound("No such execution.") from None
        return Response(ExecutionOutputSerializer(execution).data)


class ExecutionProgressApi(APIView):
    """A report of an external runner (``Authorization: Runner <key>``), not of a user."""

    authentication_classes = [RunnerKeyAuthentication]
    permission_classes = [IsRunner]

    @extend_schema_serializer(component_name="ExecutionRunnerReport")
    class InputSerializer(serializers.Serializer):
        """What a runner reports: any of a status change, progress, step, result, error."""

        status = serializers.ChoiceField(
            choices=[Execution.Status.RUNNING, Execution.Status.COMPLETED, Execution.Status.FAILED], required=False
        )
        progress = serializers.IntegerField(required=False, min_value=0, max_value=100)
        current_step = serializers.CharField(required=False, allow_blank=True, max_length=255)
        result = serializers.JSONField(required=False, allow_null=True)
        error = serializers.CharField(required=False, max_length=10_000)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            """Refuse empty reports, and a result or error that does not go with the status."""
            if not attrs:
                raise serializers.ValidationError("Report at least one of status, progress, current_step.")
            reported = attrs.get("status")
            if "error" in attrs and reported != Execution.Status.FAILED:
                raise serializers.ValidationError({"error": "Only a report with status 'failed' has an error."})
            if reported == Execution.Status.FAILED and not attrs.get("error"):
                raise serializers.ValidationError({"error": "A report with status 'failed' needs an error."})
            if "result" in attrs and reported != Execution.Status.COMPLETED:
                raise serializers.ValidationError({"result": "Only a report with status 'completed' has a result."})
            return attrs

    @extend_schema(request=InputSerializer, responses=ExecutionOutputSerializer)
    def post(self, request: Request, execution_id: Any) -> Response:
        """Apply the report; 400 when the rules refuse it, 404 for an unknown execution."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        execution = execution_get(execution_id=execution_id)
        if execution is None:
            raise NotFound("No such execution.")
        try:
            execution = execution_report(execution=execution, **serializer.validated_data)
        except ExecutionError as exc:
            raise _refused(exc) from None
        return Response(ExecutionOutputSerializer(execution).data)


class TeamListApi(APIView):
    """The caller's teams, with their role in each."""

    @extend_schema_serializer(component_name="Team")
    class OutputSerializer(serializers.Serializer):
        """A team as its members see it."""

        id = serializers.IntegerField()
        name = serializers.CharField()
        slug = serializers.CharField()
        role = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Every team the caller belongs to (not paginated: a user is in few teams)."""
        teams = team_list_for_user(user=request.user)
        return Response(self.OutputSerializer(teams, many=True).data)
