"""HTTP side of the transport: connection tickets, service publishing, long-poll events."""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime import auth, streams
from realtime import redis as rt_redis
from realtime.channels import call_check, policy_for
from realtime.conf import setting
from realtime.hub import audience_allows
from realtime.publish import publish_rollback_unsafe
from realtime.schemas import ProtocolError, validate_channel_name


class ServiceKeyAuthentication(BaseAuthentication):
    """``Authorization: ApiKey <key>`` with a key from RENUM_REALTIME["API_KEYS"] (services, not users)."""

    keyword = "ApiKey"

    def authenticate(self, request: Request) -> tuple[Any, str] | None:
        """Return (None, key) for a valid service key; None when the header is absent."""
        header = request.headers.get("Authorization", "")
        if not header.startswith(self.keyword + " "):
            return None
        presented = header[len(self.keyword) + 1:].strip()
        if not any(hmac.compare_digest(presented, key) for key in setting("API_KEYS")):
            raise AuthenticationFailed("invalid service API key")
        return (None, presented)

    def authenticate_header(self, request: Request) -> str:
        """Tell clients which scheme this endpoint wants."""
        return self.keyword


class HasServiceKey(BasePermission):
    """Allows requests authenticated by ServiceKeyAuthentication."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """True when a service key was presented and accepted."""
        return isinstance(request.auth, str) and bool(request.auth)


class TicketApi(APIView):
    """``POST /api/realtime/ticket/``: a one-time ticket for ``/ws/?ticket=`` (valid ~30 s)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=inline_serializer("Ticket", {
        "ticket": serializers.CharField(), "expires_in": serializers.IntegerField()}))
    def post(self, request: Request) -> Response:
        """Issue a ticket for the authenticated user."""
        ticket, ttl = auth.ticket_issue(user=request.user)
        return Response({"ticket": ticket, "expires_in": ttl}, status=status.HTTP_201_CREATED)


class PublishApi(APIView):
    """``POST /api/realtime/publish/``: other services publish to any channel with a server API key.

    Not transactional and not through the outbox: the message is published at once
    (``publish_rollback_unsafe``). 201 with its offset and epoch means it is in the channel's
    stream; 503 means it is not and the caller must retry. The endpoint takes no idempotency
    key, so a retry after a lost 201 may append the message twice.
    """

    authentication_classes = [ServiceKeyAuthentication]
    permission_classes = [HasServiceKey]

    class InputSerializer(serializers.Serializer):
        channel = serializers.CharField(max_length=100)
        type = serializers.CharField(max_length=64)
        payload = serializers.JSONField()
        sender = serializers.CharField(max_length=100, default="service")
        exclude_users = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        target = serializers.JSONField(required=False, default=None)

    @extend_schema(request=InputSerializer, responses=inline_serializer("Published", {
        "channel": serializers.CharField(), "offset": serializers.IntegerField(), "epoch": serializers.CharField()}))
    def post(self, request: Request) -> Response:
        """Publish one message now and answer its position."""
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            validate_channel_name(values["channel"])
            published = publish_rollback_unsafe(
                values["channel"], values["type"], values["payload"], sender=values["sender"],
                target=values["target"], exclude_users=values["exclude_users"],
            )
        except ProtocolError as exc:
            return Response({"channel": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        except ValueError as exc:
            return Response({"payload": [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        if published is None:
            return Response({"detail": "Redis is unavailable; retry later."},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"channel": published.channel, "offset": published.offset, "epoch": published.epoch},
                        status=status.HTTP_201_CREATED)


def parse_since(raw: str | None) -> tuple[str, int] | None:
    """Parse ``<epoch>:<offset>``; None when absent; ValueError when malformed."""
    if not raw:
        return None
    epoch, sep, offset = raw.rpartition(":")
    if not sep or not epoch or not (offset.isascii() and offset.isdigit()):
        raise ValueError("since must be <epoch>:<offset>")
    return epoch, int(offset)


class EventsApi(APIView):
    """``GET /api/realtime/events/``: the channel stream over long polling (the WebSocket fallback)."""

    permission_classes = [IsAuthenticated]
    MAX_TIMEOUT_S = 30

    @extend_schema(parameters=[
        OpenApiParameter("channel", str, required=True),
        OpenApiParameter("since", str, description="<epoch>:<offset> of the last message seen"),
        OpenApiParameter("timeout", int, description="seconds to wait when nothing is new (0-30)"),
    ], responses=inline_serializer("Events", {
        "channel": serializers.CharField(), "epoch": serializers.CharField(),
        "offset": serializers.IntegerField(), "recovered": serializers.BooleanField(),
        "messages": serializers.ListField(child=serializers.DictField())}))
    def get(self, request: Request) -> Response:
        """Messages after ``since`` in the envelope, waiting up to ``timeout`` seconds for new ones."""
        channel = request.query_params.get("channel", "")
        try:
            validate_channel_name(channel)
            since = parse_since(request.query_params.get("since"))
            timeout = min(self.MAX_TIMEOUT_S, max(0, int(request.query_params.get("timeout", "25"))))
        except ProtocolError as exc:
            return Response({"channel": [exc.message]}, status=status.HTTP_400_BAD_REQUEST)
        except ValueError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        try:
            policy = policy_for(channel)
        except ProtocolError as exc:
            return Response({"detail": exc.message}, status=status.HTTP_404_NOT_FOUND)
        if not async_to_sync(call_check)(policy.can_subscribe, request.user, channel):
            return Response({"detail": f"not allowed to read {channel}"}, status=status.HTTP_403_FORBIDDEN)
        body = self._poll(channel, since, timeout, str(request.user.pk))
        response = Response(body)
        response["X-Poll-Interval"] = "0" if body["messages"] else "1"
        return response

    def _poll(self, channel: str, since: tuple[str, int] | None, timeout: int, user_id: str) -> dict:
        script = rt_redis.sync_script(streams.READ_LUA)
        deadline = time.monotonic() + timeout
        user_key = user_id.encode()
        while True:
            result = streams.parse_read(script(*streams.read_args(channel, since[1] if since else -1)))
            records = streams.recover(result, *since) if since else None
            recovered = records is not None
            if not since or not recovered or records or time.monotonic() >= deadline:
                break
            # Nothing new yet: wait for the stream to move (a short sleep keeps this simple and
            # bounded; a blocking XREAD would tie up a pooled Redis connection per poller).
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        messages = [r.body for r in records or () if audience_allows(r.audience, user_key)]
        return {
            "channel": channel, "epoch": result.epoch, "offset": result.offset, "recovered": recovered,
            "messages": [orjson.loads(m) for m in messages],
        }
