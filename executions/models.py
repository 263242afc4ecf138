"""Teams, their members, and the executions (agent-team runs) whose progress members follow live.

Rows are written only through ``executions.services`` so that every change is validated and
published to the team's and the execution's channels after commit.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Team(models.Model):
    """A group of users who see each other's executions."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="TeamMembership", related_name="teams", blank=True
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMembership(models.Model):
    """One user's membership of one team, with a role."""

    class Role(models.TextChoices):
        """What a member may do; both roles may follow and cancel the team's executions."""

        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="executions_unique_team_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Execution(models.Model):
    """One run of an agent team: queued, then running with progress, then completed or failed."""

    class Status(models.TextChoices):
        """The protocol's execution statuses; completed and failed are terminal."""

        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="executions")
    # The engine's own id of the run, when a service created it; unique within a team.
    external_id = models.CharField(max_length=200, blank=True, default="")
    # Walked by the in-process demo runner (counted against its bounds), not by an engine.
    demo = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    current_step = models.CharField(max_length=255, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when a member or staff cancelled it (it is then failed): what an engine polls for.
    cancelled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "-created_at"], name="executions_team_created"),
            # The demo runner's bounds count its live runs on every request: this index holds
            # only those few rows.
            models.Index(
                fields=["team", "created_by"], condition=models.Q(demo=True, status__in=["queued", "running"]),
                name="executions_demo_active",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__gte=0, progress__lte=100), name="executions_progress_0_100"
            ),
            models.UniqueConstraint(
                fields=["team", "external_id"], condition=~models.Q(external_id=""),
                name="executions_unique_team_external_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status}, {self.progress}%)"

    @property
    def is_terminal(self) -> bool:
        """Whether the execution has ended (completed or failed) and can no longer change."""
        return self.status in self.TERMINAL_STATUSES
