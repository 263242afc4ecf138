"""Admin of notifications: browse, mark read/unread, delete, and send to users, a group or everyone.

Every change goes through the services, so what staff do here reaches the users' open
sockets exactly like a change made by the app. Notifications are not edited in place: the
content is immutable once sent (the REST ETags rely on it).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from notifications.forms import NotificationSendForm
from notifications.models import Notification
from notifications.services import (
    notification_archive_many,
    notification_create_many,
    notification_delete_many,
    notification_mark_read_many,
    notification_mark_unread_many,
    notification_unarchive_many,
)


class ArchivedFilter(admin.SimpleListFilter):
    """Archived / in the inbox, on ``archived_at`` being set."""

    title = "archived"
    parameter_name = "archived"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        """The two choices."""
        return [("yes", "Archived"), ("no", "In the inbox")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        """Filter on ``archived_at`` being null or not."""
        if self.value() == "yes":
            return queryset.filter(archived_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(archived_at__isnull=True)
        return queryset


class ReadFilter(admin.SimpleListFilter):
    """Read / unread, on ``read_at`` being set (served by the partial unread index)."""

    title = "read"
    parameter_name = "read"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        """The two choices."""
        return [("yes", "Read"), ("no", "Unread")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> QuerySet[Notification]:
        """Filter on ``read_at`` being null or not."""
        if self.value() == "yes":
            return queryset.filter(read_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(read_at__isnull=True)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Changelist with filters and bulk read/unread; a "Send notification" page for staff."""

    list_display = ("title", "user", "type", "is_read", "is_archived", "created_at")
    list_filter = ("type", ReadFilter, ArchivedFilter, "created_at")
    date_hierarchy = "created_at"
    search_fields = ("title", "user__username")
    list_select_related = ("user",)
    actions = ["mark_read", "mark_unread", "archive", "unarchive"]
    readonly_fields = ("id", "user", "type", "title", "message", "action", "read_at", "archived_at", "created_at")
    change_list_template = "admin/notifications/notification/change_list.html"
    # Skips the extra COUNT(*) of the whole table behind "(N total)" on every filtered page.
    show_full_result_count = False

    @admin.display(boolean=True, description="read", ordering="read_at")
    def is_read(self, obj: Notification) -> bool:
        """Whether the user has read it."""
        return obj.read_at is not None

    @admin.display(boolean=True, description="archived", ordering="archived_at")
    def is_archived(self, obj: Notification) -> bool:
        """Whether the user archived it."""
        return obj.archived_at is not None

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Notifications are sent from the send page (to many users at once), not added one by one."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        """Sent content is immutable; the change page is read-only."""
        return False

    def has_mark_permission(self, request: HttpRequest) -> bool:
        """Who may run the read/unread actions: holders of the model's change permission."""
        return request.user.has_perm("notifications.change_notification")

    @admin.action(description="Mark selected notifications as read", permissions=["mark"])
    def mark_read(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Mark read through the service, which tells each affected user live."""
        changed = len(notification_mark_read_many(notification_ids=queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{changed} notification(s) marked as read.", messages.SUCCESS)

    @admin.action(description="Mark selected notifications as unread", permissions=["mark"])
    def mark_unread(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Mark unread through the service, which tells each affected user live (``notification_unread``)."""
        changed = len(notification_mark_unread_many(notification_ids=queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{changed} notification(s) marked as unread.", messages.SUCCESS)

    @admin.action(description="Archive selected notifications", permissions=["mark"])
    def archive(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Archive through the service, which tells each affected user live (``notification_archived``)."""
        changed = len(notification_archive_many(notification_ids=queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{changed} notification(s) archived.", messages.SUCCESS)

    @admin.action(description="Unarchive selected notifications", permissions=["mark"])
    def unarchive(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Unarchive through the service, which tells each affected user live (``notification_unarchived``)."""
        changed = len(notification_unarchive_many(notification_ids=queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{changed} notification(s) unarchived.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Notification) -> None:
        """Delete through the service so the user's tabs drop it (``notification_deleted``) and the count follows."""
        notification_delete_many(notification_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Bulk delete through the service so every affected user's tabs drop them and their counts follow."""
        notification_delete_many(notification_ids=queryset.values_list("pk", flat=True))

    def get_urls(self) -> list[URLPattern]:
        """Add the send page before the model's own routes (which would take "send/" as an id)."""
        send = path(
            "send/",
            self.admin_site.admin_view(self.send_view),
            name="notifications_notification_send",
        )
        return [send, *super().get_urls()]

    def send_view(self, request: HttpRequest) -> HttpResponse:
        """Send one notification to selected users, a group or everyone, delivered live after commit."""
        if not request.user.has_perm("notifications.add_notification"):
            raise PermissionDenied
        form = NotificationSendForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            sent = notification_create_many(
                **form.recipients(),
                type=form.cleaned_data["type"],
                title=form.cleaned_data["title"],
                message=form.cleaned_data["message"],
                action=form.action(),
            )
            self.message_user(request, f"Notification sent to {sent} user(s).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:notifications_notification_changelist"))
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Send notification",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/notifications/notification/send.html", context)
