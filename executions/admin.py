"""Admin of teams and executions.

Membership changes made here go through the services, so members' live connections follow
them. Executions are read-only here (their state changes only through the services, which
validate and publish); the admin can cancel them with an action.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from executions import services
from executions.models import Execution, Team, TeamMembership


class TeamMembershipInline(admin.TabularInline):
    """Members of a team, edited in the team's page."""

    model = TeamMembership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Teams with their memberships inline."""

    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TeamMembershipInline]

    def save_model(self, request: HttpRequest, obj: Team, form: Any, change: bool) -> None:
        """A rename goes through the service, so the team's members hear ``team_renamed``."""
        if change and "name" in form.changed_data:
            new_name = obj.name
            obj.name = Team.objects.values_list("name", flat=True).get(pk=obj.pk)
            super().save_model(request, obj, form, change)  # the other fields, the old name
            services.team_rename(team=obj, name=new_name)
            return
        super().save_model(request, obj, form, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Save memberships through the services instead of the formset, so subscriptions follow."""
        if formset.model is not TeamMembership:
            super().save_formset(request, form, formset, change)
            return
        team = form.instance
        # The admin's change message reads these three lists, which formset.save() would fill.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            deleted = bool(formset.can_delete and formset._should_delete_form(inline_form))
            if not deleted and not inline_form.has_changed():
                continue
            existing = TeamMembership.objects.filter(pk=inline_form.instance.pk).select_related("user").first()
            user = inline_form.cleaned_data.get("user")
            if existing is not None and (deleted or existing.user != user):
                services.team_membership_remove(team=team, user=existing.user)
                formset.deleted_objects.append(existing)
            if not deleted and user is not None:
                membership = services.team_membership_add(team=team, user=user, role=inline_form.cleaned_data["role"])
                if existing is not None and existing.user == user:
                    formset.changed_objects.append((membership, inline_form.changed_data))
                else:
                    formset.new_objects.append(membership)


class ProgressBucketFilter(admin.SimpleListFilter):
    """Executions by how far they got, in quarters."""

    title = "progress"
    parameter_name = "progress_bucket"
    BUCKETS = {"0-25": (0, 25), "25-50": (25, 50), "50-75": (50, 75), "75-100": (75, 100), "100": (100, 101)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The buckets: lower bound included, upper bound excluded; 100 on its own."""
        return [(key, f"{key}%") for key in self.BUCKETS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Execution]) -> QuerySet[Execution]:
        """Executions whose progress falls in the chosen bucket."""
        bounds = self.BUCKETS.get(self.value() or "")
        if bounds is None:
            return queryset
        return queryset.filter(progress__gte=bounds[0], progress__lt=bounds[1])


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    """Executions, read-only, with a cancel action."""

    list_display = ["id", "team", "status", "progress", "current_step", "updated_at"]
    list_filter = ["status", "team", ProgressBucketFilter]
    list_select_related = ["team"]
    search_fields = ["id", "current_step", "error"]
    ordering = ["-updated_at"]
    actions = ["cancel_executions"]
    readonly_fields = [
        "id", "team", "status", "progress", "current_step", "result", "error",
        "external_id", "demo", "created_by", "created_at", "started_at", "finished_at", "cancelled_at", "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Executions are created by runners and the API, not by hand."""
        return False

    @admin.action(description="Cancel selected executions")
    def cancel_executions(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        """Cancel each queued or running selected execution as the admin user.

        Admins need not be team members; the cancel is the same as a member's (``cancelled_at``
        set, so the engine running it learns of it).
        """
        cancelled = 0
        for execution in queryset.exclude(status__in=Execution.TERMINAL_STATUSES):
            try:
                services.execution_cancel(execution=execution, user=request.user, as_staff=True)
            except services.ExecutionTransitionError:
                continue  # it ended meanwhile
            cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} execution(s).", messages.SUCCESS)
