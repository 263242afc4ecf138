"""REST API of executions: thin views that validate input, call a selector or a service, and shape output.

Users (JWT or session) list and follow their teams' executions, cancel them, and start demo
runs where the demo runner is on. Services (``Authorization: ApiKey <key>`` with the
``executions`` scope, or the older ``Runner <key>``) create queued executions for an engine,
read any execution (to poll ``cancelled_at``) and report progress.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from executions.conf import setting
from executions.models import Execution
from executions.runner import DemoBoundsError, DemoDisabledError, DemoLimitError, demo_execution_create
from executions.selectors import (
    execution_get,
    execution_get_for_user,
    execution_list,
    team_get,
    team_get_for_user,
    team_list_for_user,
)
from executions.services import (
    ExecutionCancelledError,
    ExecutionConflictError,
    ExecutionError,
    ExecutionTransitionError,
    execution_cancel,
    execution_create,
    execution_report,
)
from realtime.serializers import WireDateTimeField
from realtime.service_auth import HasServiceScope, ServiceKey, ServiceKeyAuthentication, request_service

SERVICE_SCOPE = "executions"


def runner_service_keys() -> list[ServiceKey]:
    """The runner keys (``RENUM_EXECUTIONS["RUNNER_KEYS"]``) as service keys of the executions
    scope only; ``ExecutionsConfig.ready`` registers this with ``realtime.service_auth``."""
    return [ServiceKey(entry.strip().encode(), frozenset({SERVICE_SCOPE}))
            for entry in setting("RUNNER_KEYS") if entry.strip()]


class ExecutionChangeRefused(APIException):
    """400: the rules of executions refuse the change (ended execution, progress going down...)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The execution cannot change this way."
    default_code = "invalid_state"


class ExecutionConflict(APIException):
    """409: the execution was cancelled (a runner should stop), or an external id is taken."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The execution is in conflict with this request."
    default_code = "conflict"


class DemoLimited(APIException):
    """429: the team, the user or the server already has its maximum of demo runs going."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "Too many demo runs in progress."
    default_code = "demo_limit"


class UserOrServiceScope(BasePermission):
    """Users for every method; services whose key has the executions scope for ``view.service_methods``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """A service key is checked for its scope and the method; a user needs only to be signed in."""
        service = request_service(request)
        if service is not None:
            return request.method in view.service_methods and service.has_scope(SERVICE_SCOPE)
        return bool(request.user and request.user.is_authenticated)


_USER_AND_SERVICE_AUTH = [ServiceKeyAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]


@extend_schema_serializer(component_name="Execution")
class ExecutionOutputSerializer(serializers.ModelSerializer):
    """An execution as the API shows it; blank ``current_step`` and ``error`` are null, as in the socket payload."""

    # Timestamps as the wire writes them (``updated_at`` equal to the socket payload's).
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping,
                                models.DateTimeField: WireDateTimeField}

    current_step = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    external_id = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id", "team", "external_id", "status", "progress", "current_step", "result", "error",
            "created_by", "created_at", "started_at", "finished_at", "cancelled_at", "updated_at",
        ]

    def get_current_step(self, execution: Execution) -> str | None:
        """The step, or null before the first one."""
        return execution.current_step or None

    def get_error(self, execution: Execution) -> str | None:
        """The error of a failed execution, else null."""
        return execution.error or None

    def get_external_id(self, execution: Execution) -> str | None:
        """The engine's id of the run, or null for executions no engine created."""
        return execution.external_id or None


@extend_schema_serializer(component_name="ExecutionPage")
class ExecutionPageOutputSerializer(serializers.Serializer):
    """One page of executions: follow ``next`` (a full URL with a cursor) until it is null."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ExecutionOutputSerializer(many=True)


class ExecutionPagination(CursorPagination):
    """Newest first; cursors stay stable while new executions are created."""

    ordering = ("-created_at", "-id")

    def get_page_size(self, request: Request) -> int:
        """Page size from RENUM_EXECUTIONS["PAGE_SIZE"]."""
        return setting("PAGE_SIZE")


def _refused(exc: ExecutionError) -> APIException:
    if isinstance(exc, ExecutionCancelledError):
        return ExecutionConflict(detail=str(exc), code="cancelled")
    if isinstance(exc, ExecutionConflictError):
        return ExecutionConflict(detail=str(exc), code="external_id_taken")
    return ExecutionChangeRefused(detail=str(exc), code="invalid_state" if isinstance(
        exc, ExecutionTransitionError) else "invalid")


class ExecutionListCreateApi(APIView):
    """``GET``: executions of the caller's teams. ``POST``: a queued execution (services) or a demo run (users)."""

    authentication_classes = _USER_AND_SERVICE_AUTH
    permission_classes = [UserOrServiceScope]
    service_methods = {"POST"}

    class FilterSerializer(serializers.Serializer):
        """Query parameters of the list."""

        # Bounded by the id column's range: a larger number is a 400, not a database overflow (500).
        team = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
        status = serializers.ChoiceField(choices=Execution.Status.choices, required=False)

    @extend_schema_serializer(component_name="ExecutionCreateInput")
    class InputSerializer(serializers.Serializer):
        """Services give ``team`` and optionally ``external_id``; users give ``team`` and optionally a demo pace."""

        team = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
        external_id = serializers.CharField(required=False, allow_blank=False, max_length=200,
                                            help_text="Services only: the engine's own id of the run.")
        steps = serializers.IntegerField(required=False, min_value=1, max_value=1000,
                                         help_text="Users only (demo run): how many steps.")
        interval_s = serializers.FloatField(required=False, min_value=0.0, max_value=60.0,
                                            help_text="Users only (demo run): seconds between steps.")

    @extend_schema(
        operation_id="executions_list",
        auth=[{"jwtAuth": []}, {"cookieAuth": []}],  # users only: services read one execution at a time
        parameters=[
            OpenApiParameter("team", int, description="Only this team's executions."),
            OpenApiParameter("status", str, enum=Execution.Status.values, description="Only this status."),
            OpenApiParameter("cursor", str, description="The cursor of a page, from a previous `next` or `previous`."),
        ],
        responses={200: ExecutionPageOutputSerializer},
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
        return Response(ExecutionPageOutputSerializer({
            "next": paginator.get_next_link(), "previous": paginator.get_previous_link(), "results": page,
        }).data)

    @extend_schema(request=InputSerializer, responses={201: ExecutionOutputSerializer})
    def post(self, request: Request) -> Response:
        """Services: create a queued execution for an engine. Users: start a demo run (where enabled)."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if request_service(request) is not None:
            return self._create_for_engine(data)
        if "external_id" in data:
            raise ValidationError({"external_id": ["Only services set an external id."]})
        team = team_get_for_user(user=request.user, team_id=data["team"])
        if team is None:
            raise NotFound("No such team.")
        try:
            execution = demo_execution_create(
                team=team,
                created_by=request.user,
                steps=data.get("steps", setting("DEMO_STEPS")),
                interval_s=data.get("interval_s", setting("DEMO_INTERVAL_S")),
            )
        except DemoDisabledError as exc:
            raise PermissionDenied(str(exc)) from None
        except DemoBoundsError as exc:
            raise ValidationError({"steps": [str(exc)]}) from None
        except DemoLimitError as exc:
            raise DemoLimited(str(exc)) from None
        return Response(ExecutionOutputSerializer(execution).data, status=status.HTTP_201_CREATED)

    def _create_for_engine(self, data: dict[str, Any]) -> Response:
        if "steps" in data or "interval_s" in data:
            raise ValidationError({"steps": ["steps and interval_s are for demo runs, which users start."]})
        team = team_get(team_id=data["team"])
        if team is None:
            raise NotFound("No such team.")
        try:
            execution = execution_create(team=team, external_id=data.get("external_id", ""))
        except ExecutionError as exc:
            raise _refused(exc) from None
        return Response(ExecutionOutputSerializer(execution).data, status=status.HTTP_201_CREATED)


class ExecutionDetailApi(APIView):
    """One execution: of the caller's teams for users (404 for any other), any for services."""

    authentication_classes = _USER_AND_SERVICE_AUTH
    permission_classes = [UserOrServiceScope]
    service_methods = {"GET"}

    @extend_schema(responses=ExecutionOutputSerializer)
    def get(self, request: Request, execution_id: Any) -> Response:
        """The execution's current state; an engine polls ``cancelled_at`` here."""
        if request_service(request) is not None:
            execution = execution_get(execution_id=execution_id)
        else:
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
    """A report of a service that runs executions (``executions`` scope), not of a user."""

    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [HasServiceScope]
    service_scope = SERVICE_SCOPE

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
        """Apply the report; 400 when the rules refuse it, 409 once cancelled, 404 for an unknown execution."""
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
        created_at = WireDateTimeField()

    @extend_schema(responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Every team the caller belongs to (not paginated: a user is in few teams)."""
        teams = team_list_for_user(user=request.user)
        return Response(self.OutputSerializer(teams, many=True).data)
