"""``realtime.schemas``: time on the wire, the registry of event types, the typed frames and
control messages (the inbound commands have their properties in ``test_parser_properties``)."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import orjson
import pytest

from realtime.schemas import _EVENT_SCHEMAS as REGISTRY
from realtime.schemas import (
    FRAMES,
    ChannelPosition,
    ControlDisconnect,
    ControlSubscribe,
    ControlUnsubscribe,
    ErrorPayload,
    PublishedFrame,
    Subscribed,
    Welcome,
    control_message,
    event_types,
    frame,
    now_iso,
    parse_control_message,
    register_event_type,
    validate_payload,
    validate_payload_json,
    wire_time,
    wire_time_or_none,
    within_wire_precision,
)
from tests.live import ROOT

WIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# ---------------------------------------------------------------- time on the wire


@pytest.mark.parametrize("moment, written", [
    (datetime(2026, 11, 24, 21, 30, 0, 123456, tzinfo=UTC), "2026-11-24T21:30:00.123Z"),
    (datetime(2026, 11, 24, 21, 30, 0, tzinfo=UTC), "2026-11-24T21:30:00.000Z"),  # never without its fraction
    (datetime(2026, 11, 24, 23, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2))), "2026-11-24T21:30:00.999Z"),
    (datetime(2026, 11, 24, 21, 30, 0, 5000), "2026-11-24T21:30:00.005Z"),  # naive: UTC
])
def test_wire_time_is_utc_with_milliseconds_and_a_z(moment, written):
    assert wire_time(moment) == written


def test_every_timestamp_helper_writes_the_one_form():
    assert WIRE_TIME.match(now_iso())
    assert wire_time_or_none(None) is None
    assert wire_time_or_none(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


def test_a_wire_time_read_back_stands_for_its_whole_millisecond():
    created = datetime(2026, 11, 24, 21, 30, 0, 123456, tzinfo=UTC)
    echoed = datetime.fromisoformat(wire_time(created))

    bound = within_wire_precision(echoed)

    assert echoed < created <= bound == datetime(2026, 11, 24, 21, 30, 0, 123999, tzinfo=UTC)
    assert within_wire_precision(bound) == bound
    assert wire_time(bound) == wire_time(created)


# ---------------------------------------------------------------- the registry of event types


def test_the_domain_apps_register_their_event_types_at_startup():
    registered = event_types()

    assert {"notification", "notification_read", "unread_count", "execution_update", "team_renamed"} <= set(registered)
    assert "system_event" not in registered and "command" not in registered  # the transport's own, free-form
    assert registered["notification"].__module__ == "notifications.events"
    assert registered["execution_update"].__module__ == "executions.events"


class Ping(msgspec.Struct, forbid_unknown_fields=True):
    n: int


@pytest.fixture
def ping_type():
    yield "test_ping"
    REGISTRY.pop("test_ping", None)


def test_a_registered_type_is_checked_and_an_unregistered_one_is_not(ping_type):
    validate_payload(ping_type, {"anything": True})  # not registered yet: any JSON value

    register_event_type(ping_type, Ping)
    register_event_type(ping_type, Ping)  # again, the same schema: nothing changes

    validate_payload(ping_type, {"n": 1})
    validate_payload_json(ping_type, b'{"n":1}')
    with pytest.raises(ValueError, match="invalid test_ping payload"):
        validate_payload(ping_type, {"n": "one"})
    with pytest.raises(ValueError, match="invalid test_ping payload"):
        validate_payload_json(ping_type, b'{"n":1,"m":2}')


def test_a_type_cannot_change_schema_nor_take_a_transport_type(ping_type):
    class Other(msgspec.Struct):
        n: int

    register_event_type(ping_type, Ping)

    with pytest.raises(ValueError, match="already registered"):
        register_event_type(ping_type, Other)
    with pytest.raises(ValueError, match="transport type"):
        register_event_type("system_event", Other)
    assert event_types()[ping_type] is Ping


def test_an_execution_update_out_of_range_is_refused():
    update = {"execution_id": "e", "team_id": "1", "status": "running", "progress": 101,
              "updated_at": "2026-11-24T21:30:00.000Z"}

    with pytest.raises(ValueError, match="invalid execution_update payload"):
        validate_payload("execution_update", update)
    with pytest.raises(ValueError, match="invalid execution_update payload"):
        validate_payload_json("execution_update", orjson.dumps(update))
    validate_payload("execution_update", {**update, "progress": 100})


# ---------------------------------------------------------------- frames and control messages


def test_typed_frames_are_written_as_the_dicts_were():
    welcome = Welcome(user_id="42", connection_id="c1", expires_at="2026-11-24T22:00:00.000Z", heartbeat_s=25,
                      channels={"user:42": ChannelPosition("e1", 17)})

    assert frame("welcome", welcome) == orjson.dumps({"type": "welcome", "payload": {
        "user_id": "42", "connection_id": "c1", "expires_at": "2026-11-24T22:00:00.000Z", "heartbeat_s": 25,
        "channels": {"user:42": {"epoch": "e1", "offset": 17}}}}).decode()
    assert orjson.loads(frame("subscribed", Subscribed("team:1", "e1", 3, True, 2), 7)) == {
        "type": "subscribed", "reply_to": 7,
        "payload": {"channel": "team:1", "epoch": "e1", "offset": 3, "recovered": True, "replayed": 2}}
    assert orjson.loads(frame("published", PublishedFrame("room:1", 4, "e2"), "a")) == {
        "type": "published", "reply_to": "a", "payload": {"channel": "room:1", "offset": 4, "epoch": "e2"}}
    assert orjson.loads(frame("error", ErrorPayload("forbidden", "no"))) == {
        "type": "error", "payload": {"code": "forbidden", "message": "no"}}
    assert frame("pong", None, 1) == '{"type":"pong","reply_to":1}'


@pytest.mark.parametrize("message, carried", [
    (ControlSubscribe("team:1"), {"type": "rt.subscribe", "channel": "team:1"}),
    (ControlUnsubscribe("team:1"), {"type": "rt.unsubscribe", "channel": "team:1"}),
    (ControlDisconnect(4001, "gone"), {"type": "rt.disconnect", "code": 4001, "reason": "gone"}),
    (ControlDisconnect(4001, "", auth="session", session="s1"),
     {"type": "rt.disconnect", "code": 4001, "reason": "", "auth": "session", "session": "s1"}),
    (ControlDisconnect(1000, "admin", connection_id="c9"),
     {"type": "rt.disconnect", "code": 1000, "reason": "admin", "connection_id": "c9"}),
])
def test_control_messages_travel_as_dicts_and_read_back_typed(message, carried):
    assert control_message(message) == carried
    # The relay adds the user's id when it sends to the user's group: read back, it is ignored.
    assert parse_control_message({**carried, "user_id": "7"}) == message


@pytest.mark.parametrize("carried", [
    {"type": "rt.subscribe"},
    {"type": "rt.reboot", "channel": "x"},
    {"type": "rt.disconnect", "code": "soon", "reason": ""},
])
def test_a_malformed_control_message_is_refused(carried):
    with pytest.raises(msgspec.ValidationError):
        parse_control_message(carried)


def test_every_frame_the_server_sends_is_listed_and_built_from_its_struct():
    sent = []
    for path in sorted((ROOT / "realtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "frame" and node.args:
                kind = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
                payload = node.args[1] if len(node.args) > 1 else None
                built_by = getattr(payload.func, "id", None) if isinstance(payload, ast.Call) else None
                sent.append((f"{path.name}:{node.lineno}", kind, built_by))

    assert len(sent) >= 8
    assert [(where, kind) for where, kind, _ in sent if kind not in FRAMES] == []
    assert [(where, kind, built_by) for where, kind, built_by in sent
            if FRAMES[kind] is not None and built_by != FRAMES[kind].__name__] == []
