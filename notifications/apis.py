"""REST API of notifications: thin views that validate input, call a selector or service, and answer.

Users read and manage their own inbox (JWT or session). Services (``Authorization: ApiKey
<key>`` with the ``notifications`` scope) and staff create notifications with
``POST /api/notifications/``. The list and the unread count are what pollers hit, so they
answer conditional requests (``ETag`` / ``If-None-Match`` -> 304) and tell clients how often
to poll (``X-Poll-Interval``). No GET changes state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from executions.selectors import team_member_ids
from notifications.conf import setting
from notifications.models import Notification, NotificationType
from notifications.selectors import (
    active_user_ids,
    notification_get,
    notification_list,
    notification_list_version,
    notification_unread_count,
)
from notifications.services import (
    MAX_MESSAGE_CHARS,
    IdempotencyKeyReused,
    idempotent_request,
    notification_archive_many,
    notification_create_many,
    notification_delete,
    notification_delete_many,
    notification_mark_all_read,
    notification_mark_read,
    notification_mark_read_many,
    notification_mark_unread_many,
    notification_unarchive_many,
)
from realtime.serializers import WireDateTimeField
from realtime.service_auth import ServiceKeyAuthentication, request_service

POLL_INTERVAL_S = 30
SERVICE_SCOPE = "notifications"


@extend_schema_serializer(component_name="Notification")
class NotificationOutputSerializer(serializers.Serializer):
    """The design's Notification, field for field what a ``notification`` socket message carries
    (``notifications.events.NotificationPayload``; a test fails when the two differ)."""

    @extend_schema_serializer(component_name="NotificationAction")
    class ActionSerializer(serializers.Serializer):
        """What the front end does on click."""

        type = serializers.CharField()
        payload = serializers.JSONField(allow_null=True)

    id = serializers.UUIDField()
    user_id = serializers.CharField()
    type = serializers.ChoiceField(choices=NotificationType.choices)
    title = serializers.CharField()
    message = serializers.CharField()
    read = serializers.BooleanField()
    created_at = WireDateTimeField()
    action = ActionSerializer(allow_null=True)
    archived = serializers.BooleanField()


@extend_schema_serializer(component_name="NotificationPage")
class NotificationPageOutputSerializer(serializers.Serializer):
    """One page of notifications: follow ``next`` (a full URL with a cursor) until it is null."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = NotificationOutputSerializer(many=True)


@extend_schema_serializer(component_name="UnreadCount")
class UnreadCountOutputSerializer(serializers.Serializer):
    """``{"count": n}``, as in the ``unread_count`` socket message."""

    count = serializers.IntegerField()


class NotificationPagination(CursorPagination):
    """Newest first; a cursor stays stable while new notifications arrive (unlike page numbers)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("-created_at", "id")


def _etag(*parts: Any) -> str:
    return '"' + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32] + '"'


def _conditional(request: Request, etag: str, render: Callable[[], Response]) -> Response:
    """304 when the client already holds ``etag``; otherwise the rendered response. Both carry the poll headers."""
    # If-None-Match uses weak comparison (RFC 9110 13.1.2): W/"x" matches "x".
    held = {tag.removeprefix("W/") for tag in parse_etags(request.headers.get("If-None-Match", ""))}
    response = Response(status=status.HTTP_304_NOT_MODIFIED) if etag in held or "*" in held else render()
    response["ETag"] = etag
    response["X-Poll-Interval"] = str(POLL_INTERVAL_S)
    response["Cache-Control"] = "private, no-cache"
    return response


_IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="An ETag from a previous answer: 304 when nothing changed.",
)
_POLL_HEADERS = [
    OpenApiParameter(
        "ETag",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description="Fingerprint of the answer; send it back in If-None-Match.",
    ),
    OpenApiParameter(
        "X-Poll-Interval",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description="Seconds a poller should wait before the next request.",
    ),
]


class UsersOnlyExceptServicePost(BasePermission):
    """GET: a signed-in user. POST: a key with the ``notifications`` scope, or staff who may add notifications."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """Services may only create; users may read their own, and staff with the permission create."""
        service = request_service(request)
        if request.method == "POST":
            if service is not None:
                return service.has_scope(SERVICE_SCOPE)
            user = request.user
            return bool(user and user.is_authenticated and user.is_staff
                        and user.has_perm("notifications.add_notification"))
        return service is None and bool(request.user and request.user.is_authenticated)


_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Up to 255 printable ASCII characters, unique per logical request: a retry with the same key "
                "(and body) answers exactly the first answer and creates nothing more. Kept for a day.",
)


class NotificationListApi(APIView):
    """GET /api/notifications/: the user's notifications, newest first, cursor-paginated.

    POST /api/notifications/: a service or staff sends one notification to users, a team or everyone.
    """

    pagination_class = NotificationPagination
    authentication_classes = [ServiceKeyAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    permission_classes = [UsersOnlyExceptServicePost]

    class FilterSerializer(serializers.Serializer):
        """Query parameters of the list."""

        unread = serializers.BooleanField(required=False, allow_null=True, default=None,
                                          help_text="true: only unread; false: only read; absent: both.")
        archived = serializers.BooleanField(required=False, default=False,
                                            help_text="true: the archive instead of the inbox.")
        type = serializers.MultipleChoiceField(choices=NotificationType.choices, required=False,
                                               help_text="Only these types (repeat the parameter for several).")
        created_after = WireDateTimeField(required=False, help_text="Created at or after this instant.")
        created_before = WireDateTimeField(required=False, help_text="Created at or before this instant.")

    @extend_schema_serializer(component_name="NotificationCreateInput")
    class InputSerializer(serializers.Serializer):
        """Exactly one audience (``users``, ``team`` or ``everyone``), and the content of a Notification."""

        users = serializers.ListField(
            child=serializers.RegexField(r"^[0-9]{1,18}$", help_text="A user id."), required=False,
            min_length=1, help_text="User ids (strings or numbers).",
        )
        team = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1,
                                        help_text="Every active member of this team.")
        everyone = serializers.BooleanField(required=False, default=False, help_text="Every active user.")
        type = serializers.ChoiceField(choices=NotificationType.choices, default=NotificationType.INFO)
        title = serializers.CharField(max_length=200)
        message = serializers.CharField(allow_blank=True, default="", max_length=MAX_MESSAGE_CHARS,
                                        trim_whitespace=False)
        action = serializers.JSONField(required=False, allow_null=True, default=None,
                                       help_text='Optional {"type": str, "payload": any}, at most 8 KiB as JSON.')

        def validate_users(self, value: list[str]) -> list[str]:
            """At most MAX_USERS_PER_REQUEST ids."""
            limit = setting("MAX_USERS_PER_REQUEST")
            if len(value) > limit:
                raise serializers.ValidationError(f"At most {limit} users per request.")
            return value

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            """Exactly one audience."""
            audiences = [name for name in ("users", "team") if name in attrs] + (["everyone"] if attrs["everyone"]
                                                                                 else [])
            if len(audiences) != 1:
                raise serializers.ValidationError("Give exactly one audience: users, team or everyone=true.")
            return attrs

    @extend_schema_serializer(component_name="NotificationCreateOutput")
    class CreateOutputSerializer(serializers.Serializer):
        """How many notifications were created (one per recipient)."""

        created = serializers.IntegerField()

    @extend_schema(
        operation_id="notifications_list",
        auth=[{"jwtAuth": []}, {"cookieAuth": []}],  # users only: a service key is refused here
        parameters=[FilterSerializer, _IF_NONE_MATCH, *_POLL_HEADERS],
        responses={200: NotificationPageOutputSerializer, 304: OpenApiResponse(description="Not modified")},
    )
    def get(self, request: Request) -> Response:
        """The inbox (or ``?archived=true`` the archive), filtered; pages follow the ``next`` cursor."""
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        values = filters.validated_data
        # The page depends on the cursor and filters as well as on the data.
        etag = _etag(notification_list_version(user=request.user), request.get_full_path())

        def render() -> Response:
            paginator = self.pagination_class()
            queryset = notification_list(
                user=request.user, unread=values["unread"], archived=values["archived"],
                types=values.get("type", ()), created_after=values.get("created_after"),
                created_before=values.get("created_before"),
            )
            page = paginator.paginate_queryset(queryset, request, view=self)
            return Response(NotificationPageOutputSerializer({
                "next": paginator.get_next_link(), "previous": paginator.get_previous_link(), "results": page,
            }).data)

        return _conditional(request, etag, render)

    @extend_schema(
        operation_id="notifications_create",
        auth=[{"ServiceApiKey": []}, {"jwtAuth": []}, {"cookieAuth": []}],  # a service, or staff
        parameters=[_IDEMPOTENCY_KEY],
        request=InputSerializer,
        responses={
            201: CreateOutputSerializer,
            422: OpenApiResponse(description="The Idempotency-Key was used with another body."),
        },
    )
    def post(self, request: Request) -> Response:
        """Persist one notification per recipient and deliver each live after commit."""
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
            raise ValidationError({"Idempotency-Key": ["Must be 1-255 printable ASCII characters."]})
        service = request_service(request)
        caller = f"service:{service.key_id}" if service is not None else f"user:{request.user.pk}"
        try:
            answer = idempotent_request(caller=caller, key=key, body=request.body,
                                        perform=lambda: self._create(request))
        except IdempotencyKeyReused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        response = Response(answer.body, status=answer.status_code)
        if answer.replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    def _create(self, request: Request) -> tuple[int, dict[str, Any]]:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "team" in data:
            recipients = team_member_ids(team_id=data["team"])
            if recipients is None:
                raise ValidationError({"team": ["No such team."]})
        elif "users" in data:
            wanted = list(dict.fromkeys(int(user_id) for user_id in data["users"]))
            known = active_user_ids(user_ids=wanted)
            unknown = [str(user_id) for user_id in wanted if user_id not in known]
            if unknown:
                raise ValidationError({"users": [f"Unknown or inactive users: {', '.join(unknown[:20])}"
                                                 + (" ..." if len(unknown) > 20 else "")]})
            recipients = wanted
        else:
            recipients = None
        try:
            created = notification_create_many(
                users=recipients, everyone=data["everyone"], type=data["type"], title=data["title"],
                message=data["message"], action=data["action"],
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}) \
                from None
        return status.HTTP_201_CREATED, dict(self.CreateOutputSerializer({"created": created}).data)


class NotificationDetailApi(APIView):
    """GET or DELETE /api/notifications/<id>/: one of the user's notifications."""

    @extend_schema(operation_id="notifications_retrieve", responses={200: NotificationOutputSerializer})
    def get(self, request: Request, notification_id: Any) -> Response:
        """One notification; another user's id answers 404 exactly like a missing one."""
        try:
            notification = notification_get(user=request.user, notification_id=notification_id)
        except Notification.DoesNotExist:
            raise NotFound() from None
        return Response(NotificationOutputSerializer(notification).data)

    @extend_schema(operation_id="notifications_destroy", responses={204: None})
    def delete(self, request: Request, notification_id: Any) -> Response:
        """Delete it; every tab of the user hears ``notification_deleted`` and the new unread count."""
        try:
            notification_delete(user=request.user, notification_id=notification_id)
        except Notification.DoesNotExist:
            raise NotFound() from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationUnreadCountApi(APIView):
    """GET /api/notifications/unread-count/: ``{"count": n}`` for badges and pollers."""

    @extend_schema(
        operation_id="notifications_unread_count",
        parameters=[_IF_NONE_MATCH, *_POLL_HEADERS],
        responses={200: UnreadCountOutputSerializer, 304: OpenApiResponse(description="Not modified")},
    )
    def get(self, request: Request) -> Response:
        """The count, with an ETag derived from it (the count is the whole answer)."""
        count = notification_unread_count(user=request.user)
        etag = _etag(request.user.pk, count)
        return _conditional(request, etag, lambda: Response(UnreadCountOutputSerializer({"count": count}).data))


class NotificationReadApi(APIView):
    """POST /api/notifications/<id>/read/: mark one notification read (idempotent)."""

    @extend_schema(operation_id="notifications_read", request=None, responses={200: NotificationOutputSerializer})
    def post(self, request: Request, notification_id: Any) -> Response:
        """Mark it read; doing so twice answers 200 both times and publishes once."""
        try:
            notification = notification_mark_read(user=request.user, notification_id=notification_id)
        except Notification.DoesNotExist:
            raise NotFound() from None
        return Response(NotificationOutputSerializer(notification).data)


class NotificationReadAllApi(APIView):
    """POST /api/notifications/read-all/: mark everything up to ``before`` (default now) read."""

    # Explicit component names: nested Input/Output classes of every app would all be "Input".
    @extend_schema_serializer(component_name="NotificationReadAllInput")
    class InputSerializer(serializers.Serializer):
        """Optional cutoff: notifications created after it stay unread (GitHub's last_read_at)."""

        before = WireDateTimeField(required=False, allow_null=True, default=None)

    @extend_schema_serializer(component_name="NotificationReadAllOutput")
    class OutputSerializer(serializers.Serializer):
        """How many changed, and the unread count afterwards."""

        updated = serializers.IntegerField()
        count = serializers.IntegerField()

    @extend_schema(operation_id="notifications_read_all", request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request: Request) -> Response:
        """Mark read in batches; answers ``{"updated": n, "count": unread_after}``."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = notification_mark_all_read(user=request.user, before=serializer.validated_data["before"])
        count = notification_unread_count(user=request.user)
        return Response(self.OutputSerializer({"updated": updated, "count": count}).data)


_INBOX_ACTIONS = {
    "read": notification_mark_read_many,
    "unread": notification_mark_unread_many,
    "archive": notification_archive_many,
    "unarchive": notification_unarchive_many,
    "delete": notification_delete_many,
}


@extend_schema_serializer(component_name="NotificationBulkOutput")
class BulkOutputSerializer(serializers.Serializer):
    """Which of the given ids changed (ids already in that state, or not the user's, did not), and the unread count."""

    action = serializers.ChoiceField(choices=sorted(_INBOX_ACTIONS))
    changed = serializers.ListField(child=serializers.UUIDField())
    count = serializers.IntegerField()


class NotificationBulkApi(APIView):
    """POST /api/notifications/bulk/: one inbox action on selected notifications of the user."""

    @extend_schema_serializer(component_name="NotificationBulkInput")
    class InputSerializer(serializers.Serializer):
        """The action and the ids it applies to (at most 1000)."""

        action = serializers.ChoiceField(choices=sorted(_INBOX_ACTIONS))
        ids = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=1000)

    @extend_schema(operation_id="notifications_bulk", request=InputSerializer, responses={200: BulkOutputSerializer})
    def post(self, request: Request) -> Response:
        """Apply it; every tab of the user hears one event with the changed ids, and the unread count."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        action = serializer.validated_data["action"]
        changed = _INBOX_ACTIONS[action](notification_ids=serializer.validated_data["ids"], user=request.user)
        count = notification_unread_count(user=request.user)
        return Response(BulkOutputSerializer({"action": action, "changed": changed, "count": count}).data)


class _InboxActionApi(APIView):
    """POST /api/notifications/<id>/<action>/: one inbox action on one notification (idempotent)."""

    action = ""

    def post(self, request: Request, notification_id: Any) -> Response:
        """Apply the action and answer the notification; another user's id is 404 like a missing one."""
        try:
            notification_get(user=request.user, notification_id=notification_id)
        except Notification.DoesNotExist:
            raise NotFound() from None
        _INBOX_ACTIONS[self.action](notification_ids=[notification_id], user=request.user)
        try:
            notification = notification_get(user=request.user, notification_id=notification_id)
        except Notification.DoesNotExist:  # deleted meanwhile
            raise NotFound() from None
        return Response(NotificationOutputSerializer(notification).data)


class NotificationUnreadApi(_InboxActionApi):
    """POST /api/notifications/<id>/unread/: mark it unread again (``notification_unread`` to every tab)."""

    action = "unread"

    @extend_schema(operation_id="notifications_unread", request=None, responses={200: NotificationOutputSerializer})
    def post(self, request: Request, notification_id: Any) -> Response:
        """Mark it unread; doing so twice answers 200 both times and publishes once."""
        return super().post(request, notification_id)


class NotificationArchiveApi(_InboxActionApi):
    """POST /api/notifications/<id>/archive/: archive it (``notification_archived`` to every tab)."""

    action = "archive"

    @extend_schema(operation_id="notifications_archive", request=None, responses={200: NotificationOutputSerializer})
    def post(self, request: Request, notification_id: Any) -> Response:
        """Archive it; doing so twice answers 200 both times and publishes once."""
        return super().post(request, notification_id)


class NotificationUnarchiveApi(_InboxActionApi):
    """POST /api/notifications/<id>/unarchive/: back to the inbox (``notification_unarchived`` to every tab)."""

    action = "unarchive"

    @extend_schema(operation_id="notifications_unarchive", request=None, responses={200: NotificationOutputSerializer})
    def post(self, request: Request, notification_id: Any) -> Response:
        """Unarchive it; doing so twice answers 200 both times and publishes once."""
        return super().post(request, notification_id)
