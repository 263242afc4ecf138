"""The admin's realtime monitoring panel: live sockets of every process, rates, breaker, security.

Nothing of the panel lives in the database, so it is added to the default admin site by
extending ``get_urls`` (its pages, all behind ``admin_view``: active staff only) and
``get_app_list`` (a "Realtime / Live monitor" entry on the index and in the sidebar). Each
page and action also needs its own permission, granted in the admin like any other
(``realtime.models.RealtimeAccess``): ``realtime.view_monitor`` to see the panel,
``realtime.disconnect`` to close sockets, ``realtime.broadcast`` to send a system event to
everyone. Being staff is not enough: a staff user who may only edit, say, teams must not be
able to message every user or cut everyone off.

The page renders server-side and then refreshes itself: a small script polls the JSON
endpoint every few seconds and swaps in the panel HTML it carries, so the rows are rendered
(and escaped) by one template. Actions are plain POST forms that redirect back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.sites import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from realtime.ops import probes, stats

REFRESH_MS = 3000
_CODE_CHOICES = [(code, f"{code}: {meaning}") for code, meaning in probes.CLOSE_CODES.items()]


class DisconnectForm(forms.Form):
    """One socket, named by its process and connection id (as the registry stores them)."""

    process = forms.CharField(max_length=200)
    connection_id = forms.CharField(max_length=64)
    code = forms.TypedChoiceField(choices=_CODE_CHOICES, coerce=int, initial=probes.DEFAULT_CLOSE_CODE)


class DisconnectUserForm(forms.Form):
    """Every socket of one user."""

    user_id = forms.CharField(max_length=64)
    code = forms.TypedChoiceField(choices=_CODE_CHOICES, coerce=int, initial=probes.DEFAULT_CLOSE_CODE)


class SystemEventForm(forms.Form):
    """A ``system_event`` for everyone connected."""

    level = forms.ChoiceField(choices=[(v, v) for v in ("info", "success", "warning", "error")], initial="info")
    title = forms.CharField(max_length=200)
    message = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}))


VIEW, DISCONNECT, BROADCAST = "realtime.view_monitor", "realtime.disconnect", "realtime.broadcast"


def _requires(permission: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """403 unless the user holds ``permission`` (superusers hold every one)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied(f"this needs the {permission} permission")
            return view(request, *args, **kwargs)

        return checked

    return decorate


def _actor(request: HttpRequest) -> str:
    return f"{request.user.get_username()} (id {request.user.pk})"


def _back(request: HttpRequest) -> HttpResponseRedirect:
    url = reverse("admin:realtime_monitor")
    query = request.POST.get("q", "")
    return HttpResponseRedirect(f"{url}?{urlencode({'q': query})}" if query else url)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _panel_context(request: HttpRequest) -> dict[str, Any]:
    query = request.GET.get("q", "").strip()[:100]
    snapshot = stats.monitor_snapshot(query=query)
    # Registry and security timestamps are epoch seconds; the template wants datetimes.
    connections = [{**entry, "connected": _when(entry["connected_at"]), "active": _when(entry["last_activity"])}
                   for entry in snapshot["connections"]]
    events = [{**event, "when": _when(event["at"])} for event in snapshot["security_events"]]
    return {"snapshot": snapshot, "connections": connections, "events": events, "query": query,
            "default_code": probes.DEFAULT_CLOSE_CODE, "can_disconnect": request.user.has_perm(DISCONNECT),
            "can_broadcast": request.user.has_perm(BROADCAST)}


@_requires(VIEW)
def monitor(request: HttpRequest) -> HttpResponse:
    """The panel page."""
    context = {
        **admin.site.each_context(request),
        **_panel_context(request),
        "title": "Realtime monitor",
        "refresh_ms": REFRESH_MS,
        "close_codes": _CODE_CHOICES,
        "system_event_form": SystemEventForm(),
    }
    return TemplateResponse(request, "admin/realtime/monitor.html", context)


@_requires(VIEW)
def monitor_data(request: HttpRequest) -> JsonResponse:
    """The panel's data as JSON, with the panel HTML rendered from it (polled by the page)."""
    context = _panel_context(request)
    html = render_to_string("admin/realtime/monitor_panel.html", context, request=request)
    return JsonResponse({**context["snapshot"], "html": html})


@_requires(DISCONNECT)
@require_POST
def disconnect(request: HttpRequest) -> HttpResponseRedirect:
    """Close one socket."""
    form = DisconnectForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Invalid request: {form.errors.as_text()}")
    elif probes.connection_disconnect(**form.cleaned_data, actor=_actor(request)):
        messages.success(request, f"Connection {form.cleaned_data['connection_id']} asked to close "
                                  f"with {form.cleaned_data['code']}.")
    else:
        messages.warning(request, f"Connection {form.cleaned_data['connection_id']} is no longer live.")
    return _back(request)


@_requires(DISCONNECT)
@require_POST
def disconnect_user(request: HttpRequest) -> HttpResponseRedirect:
    """Close every socket of a user."""
    form = DisconnectUserForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Invalid request: {form.errors.as_text()}")
    else:
        probes.user_disconnect(**form.cleaned_data, actor=_actor(request))
        messages.success(request, f"Every connection of user {form.cleaned_data['user_id']} asked to close "
                                  f"with {form.cleaned_data['code']}.")
    return _back(request)


@_requires(BROADCAST)
@require_POST
def broadcast(request: HttpRequest) -> HttpResponseRedirect:
    """Send a system_event to everyone."""
    form = SystemEventForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not sent: {form.errors.as_text()}")
    elif (published := probes.system_event_broadcast(payload=form.cleaned_data, actor=_actor(request))) is None:
        messages.error(request, "Not sent: Redis is unavailable (see the log).")
    else:
        messages.success(request, f"Sent a system_event to broadcast (offset {published.offset}).")
    return _back(request)


def _urls(site: AdminSite) -> list[URLPattern]:
    return [
        path("realtime/monitor/", site.admin_view(monitor), name="realtime_monitor"),
        path("realtime/monitor/data/", site.admin_view(monitor_data), name="realtime_monitor_data"),
        path("realtime/monitor/disconnect/", site.admin_view(disconnect), name="realtime_monitor_disconnect"),
        path("realtime/monitor/disconnect-user/", site.admin_view(disconnect_user),
             name="realtime_monitor_disconnect_user"),
        path("realtime/monitor/broadcast/", site.admin_view(broadcast), name="realtime_monitor_broadcast"),
    ]


def _app_entry(site: AdminSite) -> dict[str, Any]:
    url = reverse("admin:realtime_monitor", current_app=site.name)
    return {
        "name": "Realtime",
        "app_label": "realtime",
        "app_url": url,
        "has_module_perms": True,
        "models": [{
            "name": "Live monitor", "object_name": "Monitor", "perms": {"view": True},
            "admin_url": url, "add_url": None, "view_only": True,
        }],
    }


def install(site: AdminSite) -> None:
    """Add the panel's URLs and index entry to an admin site (idempotent)."""
    if getattr(site, "_realtime_monitor_installed", False):
        return
    site._realtime_monitor_installed = True
    original_urls, original_app_list = site.get_urls, site.get_app_list

    def get_urls() -> list[URLPattern]:
        return _urls(site) + original_urls()

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        app_list = original_app_list(request, app_label)
        if app_label in (None, "realtime") and site.has_permission(request) and request.user.has_perm(VIEW):
            app_list = sorted([*app_list, _app_entry(site)], key=lambda app: app["name"].lower())
        return app_list

    site.get_urls = get_urls
    site.get_app_list = get_app_list


install(admin.site)
