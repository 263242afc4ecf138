"""REST API of notifications: thin views that validate input, call a selector or service, and answer.

The list and the unread count are what pollers hit, so they answer conditional requests
(``ETag`` / ``If-None-Match`` -> 304) and tell clients how often to poll (``X-Poll-Interval``).
No GET changes state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.utils.http import parse_etags
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from notifications.models import Notification, NotificationType
from notifications.payloads import notification_payload
from notifications.selectors import (
    notification_get,
    notification_list,
    notification_list_version,
    notification_unread_count,
)
from notifications.services import notification_delete, notification_mark_all_read, notification_mark_read

POLL_INTERVAL_S = 30


@extend_schema_serializer(component_name="Notification")
class NotificationOutputSerializer(serializers.Serializer):
    """The design's Notification; the fields document the schema, ``notification_payload`` renders it."""

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
    created_at = serializers.DateTimeField()
    action = ActionSerializer(allow_null=True)

    def to_representation(self, instance: Notification) -> dict[str, Any]:
        """The same dict the socket carries, so REST and live clients see identical objects."""
        return notification_payload(instance)


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


class NotificationListApi(APIView):
    """GET /api/notifications/: the user's notifications, newest first, cursor-paginated."""

    pagination_class = NotificationPagination

    class FilterSerializer(serializers.Serializer):
        """Query parameters of the list."""

        unread = serializers.BooleanField(required=False, allow_null=True, default=None)

    @extend_schema(
        operation_id="notifications_list",
        parameters=[FilterSerializer, _IF_NONE_MATCH, *_POLL_HEADERS],
        responses={200: NotificationOutputSerializer(many=True), 304: OpenApiResponse(description="Not modified")},
    )
    def get(self, request: Request) -> Response:
        """List, filtered with ``?unread=true|false``; pages follow the ``next`` cursor."""
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        # The page depends on the cursor and filters as well as on the data.
        etag = _etag(notification_list_version(user=request.user), request.get_full_path())

        def render() -> Response:
            paginator = self.pagination_class()
            queryset = notification_list(user=request.user, unread=filters.validated_data["unread"])
            page = paginator.paginate_queryset(queryset, request, view=self)
            return paginator.get_paginated_response(NotificationOutputSerializer(page, many=True).data)

        return _conditional(request, etag, render)


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
        """Delete it; the user's other connections get the new unread count."""
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

        before = serializers.DateTimeField(required=False, allow_null=True, default=None)

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
