"""The payload structs, the REST serializers, the OpenAPI schema and the TypeScript types agree.

The structs of ``notifications/events.py``, ``executions/events.py`` and the transport's frames
(``realtime/schemas.py``) are the source; the DRF output serializers, the OpenAPI components
derived from them (``/api/schema/``) and the client's TypeScript types (``clients/js/realtime/src/types.ts``
and the served ``static/renum/realtime.d.ts``) are checked against them field by field, with
each field's type written the TypeScript way (``string``, ``"info" | "success"``, ``X | null``).
A field added to, removed from or retyped in one and not the others fails here, and every datetime
of the REST API is written as the socket writes it (``WireDateTimeField``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import msgspec
import orjson
import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers

from executions import apis as execution_apis
from executions.apis import ExecutionOutputSerializer
from executions.events import EVENT_TYPES as EXECUTION_EVENTS
from executions.events import (
    ExecutionUpdatePayload,
    TeamMemberPayload,
    TeamMemberRoleChangedPayload,
    TeamRenamedPayload,
    execution_update_payload,
)
from executions.services import execution_create, team_create
from notifications import apis as notification_apis
from notifications.apis import NotificationOutputSerializer, UnreadCountOutputSerializer
from notifications.events import EVENT_TYPES as NOTIFICATION_EVENTS
from notifications.events import (
    NotificationAction,
    NotificationIdsPayload,
    NotificationPayload,
    UnreadCountPayload,
    notification_payload,
)
from notifications.models import Notification
from notifications.payloads import new_notification_payloads_json
from notifications.services import notification_create
from realtime import apis as realtime_apis
from realtime.schemas import (
    AuthRefreshed,
    ChannelPosition,
    ErrorPayload,
    PublishedFrame,
    Subscribed,
    Welcome,
    event_types,
)
from realtime.serializers import WireDateTimeField
from tests.live import ROOT

TS_SOURCES = [ROOT / "clients/js/realtime/src/types.ts", ROOT / "static/renum/realtime.d.ts"]
# Struct -> the TypeScript interface that mirrors it (nested structs are written by these names).
TS_NAMES: dict[type[msgspec.Struct], str] = {
    NotificationPayload: "Notification",
    NotificationAction: "NotificationAction",
    NotificationIdsPayload: "NotificationIds",
    ExecutionUpdatePayload: "ExecutionUpdate",
    TeamMemberPayload: "TeamMemberEvent",
    TeamMemberRoleChangedPayload: "TeamRoleChangedEvent",
    TeamRenamedPayload: "TeamRenamedEvent",
    Welcome: "Welcome",
    ChannelPosition: "Position",
    Subscribed: "Subscribed",
    PublishedFrame: "Published",
    AuthRefreshed: "AuthRefreshed",
    ErrorPayload: "ErrorPayload",
}
# Struct -> (OpenAPI component, DRF output serializer) of the REST answers that carry it.
REST_SHAPES: dict[type[msgspec.Struct], tuple[str, Any]] = {
    NotificationPayload: ("Notification", NotificationOutputSerializer),
    NotificationAction: ("NotificationAction", NotificationOutputSerializer.ActionSerializer),
    UnreadCountPayload: ("UnreadCount", UnreadCountOutputSerializer),
}

Shape = dict[str, frozenset[str]]


# ---------------------------------------------------------------- the three readers


def _types(members: set[str]) -> frozenset[str]:
    return frozenset({"unknown"} if "unknown" in members else members)  # unknown includes null


def struct_shape(struct: type[msgspec.Struct]) -> Shape:
    """Each field of a struct and its type, written as TypeScript writes it."""

    def ts(info: msgspec.inspect.Type) -> set[str]:
        match info:
            case msgspec.inspect.StrType():
                return {"string"}
            case msgspec.inspect.IntType() | msgspec.inspect.FloatType():
                return {"number"}
            case msgspec.inspect.BoolType():
                return {"boolean"}
            case msgspec.inspect.NoneType():
                return {"null"}
            case msgspec.inspect.AnyType():
                return {"unknown"}
            case msgspec.inspect.LiteralType():
                return {orjson.dumps(value).decode() for value in info.values}
            case msgspec.inspect.UnionType():
                return set().union(*(ts(member) for member in info.types))
            case msgspec.inspect.ListType():
                return {" | ".join(sorted(ts(info.item_type))) + "[]"}
            case msgspec.inspect.DictType():
                return {f"Record<string, {' | '.join(sorted(ts(info.value_type)))}>"}
            case msgspec.inspect.StructType():
                return {TS_NAMES.get(info.cls, info.cls.__name__)}
        raise AssertionError(f"no TypeScript form for {info!r}")

    return {field.name: _types(ts(field.type)) for field in msgspec.inspect.type_info(struct).fields}


def _strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", source, flags=re.S))


def ts_interfaces(source: str) -> dict[str, Shape]:
    """The exported interfaces of a TypeScript source or declaration file, with ``extends``
    followed and one-line type aliases resolved."""
    source = _strip_comments(source)
    aliases = dict(re.findall(r"^export (?:declare )?type (\w+) = ([^;\n]+);", source, flags=re.M))
    raw: dict[str, tuple[str | None, dict[str, str]]] = {}
    for name, base, body in re.findall(r"^export (?:declare )?interface (\w+)(?: extends (\w+))? \{(.*?)^\}",
                                       source, flags=re.M | re.S):
        fields = dict(re.findall(r"^\s*(?:readonly\s+)?(\w+)\??:\s*([^;]+);", body, flags=re.M))
        raw[name] = (base, fields)

    def resolve(type_text: str) -> frozenset[str]:
        members: set[str] = set()
        for member in (part.strip() for part in type_text.split("|")):
            members |= set(resolve(aliases[member])) if member in aliases else {member}
        return _types(members)

    def shape(name: str) -> Shape:
        base, fields = raw[name]
        inherited = shape(base) if base else {}
        return {**inherited, **{field: resolve(text) for field, text in fields.items()}}

    return {name: shape(name) for name in raw}


def openapi_shape(components: dict[str, Any], name: str) -> Shape:
    """Each property of an OpenAPI component and its type, written as TypeScript writes it."""

    def ts(schema: dict[str, Any]) -> set[str]:
        nullable = {"null"} if schema.get("nullable") else set()
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return ts(schema["allOf"][0]) | nullable
        if "$ref" in schema:
            target = schema["$ref"].rsplit("/", 1)[1]
            referenced = components[target]
            return (ts(referenced) if "enum" in referenced else {target}) | nullable
        if "enum" in schema:
            return {orjson.dumps(value).decode() for value in schema["enum"]} | nullable
        kind = schema.get("type")
        if kind is None:
            return {"unknown"}
        if kind == "array":
            return {" | ".join(sorted(ts(schema["items"]))) + "[]"} | nullable
        return {{"string": "string", "integer": "number", "number": "number", "boolean": "boolean"}[kind]} | nullable

    return {prop: _types(ts(schema)) for prop, schema in components[name]["properties"].items()}


def differences(source: Shape, other: Shape) -> list[str]:
    """What differs between two shapes: fields missing on either side, and field types."""
    found = [f"{field}: only in the struct" for field in source.keys() - other.keys()]
    found += [f"{field}: not in the struct" for field in other.keys() - source.keys()]
    found += [f"{field}: {sorted(source[field])} != {sorted(other[field])}"
              for field in source.keys() & other.keys() if source[field] != other[field]]
    return sorted(found)


@pytest.fixture(scope="module")
def components():
    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]


# ---------------------------------------------------------------- structs against TypeScript


@pytest.mark.parametrize("path", TS_SOURCES, ids=lambda path: path.name)
@pytest.mark.parametrize("struct", list(TS_NAMES), ids=lambda struct: struct.__name__)
def test_typescript_types_match_the_structs(path, struct):
    interfaces = ts_interfaces(path.read_text())

    assert differences(struct_shape(struct), interfaces[TS_NAMES[struct]]) == []


def test_the_client_listens_for_every_event_type_the_server_registers():
    source = _strip_comments((ROOT / "clients/js/realtime/src/client.ts").read_text())
    listed = set(re.findall(r'"(\w+)"', re.search(r"const PROTOCOL_TYPES = \[(.*?)\];", source, re.S).group(1)))

    assert set(event_types()) - listed == set()


# ---------------------------------------------------------------- structs against REST and OpenAPI


@pytest.mark.parametrize("struct", list(REST_SHAPES), ids=lambda struct: struct.__name__)
def test_openapi_components_match_the_structs(components, struct):
    component, _ = REST_SHAPES[struct]

    assert differences(struct_shape(struct), openapi_shape(components, component)) == []
    # The server always writes every field, so clients may rely on each.
    assert set(components[component]["required"]) == set(struct_shape(struct))


@pytest.mark.parametrize("struct", list(REST_SHAPES), ids=lambda struct: struct.__name__)
def test_drf_output_serializers_have_the_structs_fields_in_order(struct):
    _, serializer = REST_SHAPES[struct]

    assert list(serializer().fields) == list(struct_shape(struct))


@pytest.mark.django_db
def test_a_notification_is_the_same_object_over_rest_the_socket_and_the_many_path(user):
    notification = notification_create(user=user, type="info", title="t", message="m",
                                       action={"type": "open", "payload": {"id": 1}})
    notification = Notification.objects.get(pk=notification.pk)

    rest = NotificationOutputSerializer(notification).data
    live = notification_payload(notification)
    many = new_notification_payloads_json(ids=[str(notification.id)], user_ids=[user.pk], type="info", title="t",
                                          message="m", action={"type": "open", "payload": {"id": 1}},
                                          created_at=notification.created_at)[0]

    assert orjson.loads(orjson.dumps(rest)) == live == orjson.loads(many)
    assert msgspec.convert(live, NotificationPayload) == msgspec.json.decode(many, type=NotificationPayload)


@pytest.mark.django_db
def test_an_executions_rest_fields_are_its_updates_fields(user):
    team = team_create(name="Drift", slug="drift", owner=user)
    execution = execution_create(team=team, created_by=user)

    rest = ExecutionOutputSerializer(execution).data
    live = execution_update_payload(execution=execution)
    renamed = {"execution_id": "id", "team_id": "team"}  # REST names of the payload's two ids

    assert {renamed.get(field, field) for field in struct_shape(ExecutionUpdatePayload)} <= set(rest)
    assert {field: rest[renamed.get(field, field)] for field in live if field not in renamed} == \
        {field: value for field, value in live.items() if field not in renamed}


def test_every_registered_event_type_is_a_domains_own():
    assert event_types() == {**NOTIFICATION_EVENTS, **EXECUTION_EVENTS}


# ---------------------------------------------------------------- the checks see drift


def test_a_field_added_to_a_struct_alone_is_reported():
    class Grown(NotificationPayload):
        priority: int = 0

    typescript = ts_interfaces(TS_SOURCES[0].read_text())["Notification"]

    assert differences(struct_shape(Grown), typescript) == ["priority: only in the struct"]


def test_a_field_added_or_retyped_in_typescript_alone_is_reported():
    source = textwrap.dedent("""
    export type Level = "a" | "b";
    /** docs { with braces } */
    export interface Base {
      id: string; // a comment
    }
    export interface Item extends Base {
      level: Level;
      note?: string | null;
    }
    """)

    class Item(msgspec.Struct):
        id: str
        level: str

    assert ts_interfaces(source)["Item"] == {"id": {"string"}, "level": {'"a"', '"b"'}, "note": {"string", "null"}}
    assert differences(struct_shape(Item), ts_interfaces(source)["Item"]) == [
        "level: ['string'] != ['\"a\"', '\"b\"']", "note: not in the struct"]


def test_a_field_dropped_from_an_openapi_component_is_reported(components):
    trimmed = {**components, "UnreadCount": {"properties": {}}}

    assert differences(struct_shape(UnreadCountPayload), openapi_shape(trimmed, "UnreadCount")) == [
        "count: only in the struct"]


def _serializers_of(module: Any) -> list[type]:
    """Every serializer class a module defines, nested ones (``InputSerializer`` of a view) included."""
    found, todo = [], list(vars(module).values())
    while todo:
        item = todo.pop()
        if isinstance(item, type) and item.__module__ == module.__name__:
            if issubclass(item, serializers.BaseSerializer):
                found.append(item)
            todo += [value for value in vars(item).values() if isinstance(value, type)]
    return found


def test_every_datetime_of_the_rest_api_is_written_as_the_wire_writes_it():
    classes = [cls for module in (notification_apis, execution_apis, realtime_apis) for cls in _serializers_of(module)]
    datetimes = {f"{cls.__qualname__}.{name}": type(field)
                 for cls in classes for name, field in cls().fields.items()
                 if isinstance(field, serializers.DateTimeField)}

    assert len(classes) > 10 and "NotificationOutputSerializer.created_at" in datetimes
    assert {name: kind for name, kind in datetimes.items() if kind is not WireDateTimeField} == {}
