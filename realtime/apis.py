"""HTTP side of the transport: connection tickets and service publishing (long polls and event
streams are in ``realtime.transports.http``)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.core import auth
from realtime.publish import publish_rollback_unsafe
from realtime.schemas import ProtocolError, validate_channel_name
from realtime.service_auth import HasServiceScope, ServiceKeyAuthentication

__all__ = ["PublishApi", "ServiceKeyAuthentication", "TicketApi"]


class TicketApi(APIView):
    """``POST /api/realtime/ticket/``: a one-time ticket for ``/ws/?ticket=`` (valid ~30 s)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={201: inline_serializer("Ticket", {
        "ticket": serializers.CharField(), "expires_in": serializers.IntegerField()})})
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
    permission_classes = [HasServiceScope]
    service_scope = "publish"

    class InputSerializer(serializers.Serializer):
        channel = serializers.CharField(max_length=100)
        type = serializers.CharField(max_length=64)
        payload = serializers.JSONField()
        # A service names itself within its own namespace; "system", "admin", "operator" and
        # "user:<id>" are the server's to say, so a key cannot forge them.
        sender = serializers.RegexField(r"\Aservice(:[A-Za-z0-9_.\-]{1,64})?\Z", default="service", error_messages={
            "invalid": "sender must be 'service' or 'service:<name>' (letters, digits, _ . -)",
            "blank": "sender must be 'service' or 'service:<name>' (letters, digits, _ . -)"})
        exclude_users = serializers.ListField(child=serializers.CharField(), required=False, default=list)
        target = serializers.JSONField(required=False, default=None)

    @extend_schema(request=InputSerializer, responses={201: inline_serializer("Published", {
        "channel": serializers.CharField(), "offset": serializers.IntegerField(), "epoch": serializers.CharField()})})
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
