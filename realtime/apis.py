"""HTTP side of the transport: connection tickets and service publishing (long polls and event
streams are in ``realtime.transports``)."""

from __future__ import annotations

import hmac
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime import auth
from realtime.conf import setting
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
    """``POST /api/realtime/publish/``: other services publish to any channel with a server API key."""

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
