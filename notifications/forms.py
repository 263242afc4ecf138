"""The admin's "send notification" form: content plus exactly one audience."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from notifications.models import NotificationType
from notifications.services import notification_action_validate


class NotificationSendForm(forms.Form):
    """Who gets the notification (selected users, a group, or everyone) and what it says."""

    users = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 10}),
        help_text="Hold Ctrl or Cmd to select several users.",
    )
    group = forms.ModelChoiceField(queryset=Group.objects.order_by("name"), required=False)
    everyone = forms.BooleanField(required=False, help_text="Every active user.")
    type = forms.ChoiceField(choices=NotificationType.choices, initial=NotificationType.INFO)
    title = forms.CharField(max_length=200)
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False)
    action_type = forms.CharField(
        max_length=100, required=False, help_text='Optional click action, e.g. "open_execution".'
    )
    action_payload = forms.JSONField(required=False, help_text='JSON given to the action, e.g. {"id": "42"}.')

    def clean(self) -> dict[str, Any]:
        """Exactly one audience; an action payload needs an action type."""
        data = super().clean()
        audiences = [bool(data.get("users")), data.get("group") is not None, bool(data.get("everyone"))]
        if sum(audiences) != 1:
            raise ValidationError("Choose exactly one audience: users, a group, or everyone.")
        if data.get("action_payload") is not None and not data.get("action_type"):
            self.add_error("action_type", "An action payload needs an action type.")
        return data

    def action(self) -> dict[str, Any] | None:
        """The validated ``{"type", "payload"}`` action, or None."""
        action_type = self.cleaned_data.get("action_type")
        if not action_type:
            return None
        return notification_action_validate({"type": action_type, "payload": self.cleaned_data.get("action_payload")})

    def recipients(self) -> dict[str, Any]:
        """Keyword arguments of ``notification_create_many`` that select the audience."""
        if self.cleaned_data.get("everyone"):
            return {"everyone": True}
        group = self.cleaned_data.get("group")
        if group is not None:
            return {"users": group.user_set.filter(is_active=True).values_list("pk", flat=True)}
        return {"users": self.cleaned_data["users"]}
