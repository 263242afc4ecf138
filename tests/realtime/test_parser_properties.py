"""Property tests of the edge of the protocol: whatever a client sends, the answer is a typed command
or a documented protocol error, never a crash.

Covers ``realtime.schemas.parse_command`` and ``validate_channel_name``, ``realtime.transports.http.parse_since``,
``realtime.storage.streams.Record.parse`` and ``realtime.fanout.hub.audience_allows``, then drives arbitrary frames
through a real consumer (in-process communicator, real Redis and database).
"""

from __future__ import annotations

import string
import uuid

import msgspec
import orjson
import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from realtime.fanout.hub import audience_allows
from realtime.schemas import COMMANDS, ProtocolError, parse_command, valid_id, validate_channel_name
from realtime.storage.streams import Record
from realtime.transports.http import parse_since
from renum.asgi import application
from tests.conftest import access_token_for

PARSE_ERROR_CODES = {"invalid_json", "invalid_message", "unknown_command"}
CHANNEL_CHARS = string.ascii_letters + string.digits + "_-.:@="

# ------------------------------------------------------------------ strategies

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
message_ids = st.none() | st.integers(-1000, 1000) | st.text(max_size=10) | st.booleans() | json_values
channel_like = st.sampled_from(["broadcast", "user:1", "team:1", "nosuch:x", "", "a b"]) | st.text(max_size=110)
command_types = st.sampled_from(sorted(COMMANDS)) | st.text(max_size=15)


@st.composite
def command_shaped(draw: st.DrawFn) -> dict:
    """A JSON object that looks like a command: a known or random type, plausible and random fields."""
    data: dict = {"type": draw(command_types)}
    optional = {
        "id": message_ids,
        "channel": channel_like,
        "since": st.fixed_dictionaries({"epoch": st.text(max_size=8), "offset": st.integers(-5, 10)}) | json_values,
        "token": st.text(max_size=40) | json_values,
        "payload": st.fixed_dictionaries({"name": st.text(max_size=20)}, optional={"args": json_values}) | json_values,
        "event": st.text(max_size=10),
        st.text(max_size=6): json_values,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            name = draw(key) if isinstance(key, st.SearchStrategy) else key
            data[name] = draw(strategy)
    if draw(st.integers(0, 9)) == 0:  # now and then a type that is not a string
        data["type"] = draw(json_values)
    return data


frames_text = st.text(max_size=200) | json_values.map(lambda v: orjson.dumps(v).decode()) | command_shaped().map(
    lambda v: orjson.dumps(v).decode())
frames_bytes = st.binary(max_size=200) | command_shaped().map(orjson.dumps)


def _reply_to_of(data: object) -> object:
    """What the parser attaches as ``reply_to``: the id when it is a string or a (non-bool) int."""
    if isinstance(data, dict):
        message_id = data.get("id")
        if isinstance(message_id, (str, int)) and not isinstance(message_id, bool):
            return message_id
    return None


def _check_parse(raw: str | bytes) -> None:
    try:
        command = parse_command(raw)
    except ProtocolError as error:
        assert error.code in PARSE_ERROR_CODES, (error.code, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert error.code == "invalid_json"
            assert error.reply_to is None
            return
        assert error.code != "invalid_json"
        assert error.reply_to == _reply_to_of(data)
        return
    data = orjson.loads(raw)
    assert type(command) is COMMANDS[data["type"]]
    assert command.type == data["type"]
    assert command.id == data.get("id")


# ------------------------------------------------------------------ parse_command


@given(frames_text)
@example("")
@example("\ud800")  # a lone surrogate cannot be encoded: invalid_json, not UnicodeEncodeError
@example('{"type": "ping", "id": 99999999999999999999999999}')
@example("[" * 5000)
@example('{"type": "subscribe", "channel": "broadcast", "since": {"epoch": "e", "offset": 1.5}}')
def test_any_text_frame_parses_or_is_a_documented_protocol_error(raw):
    _check_parse(raw)


@given(frames_bytes)
@example(b"\xff\xfe{}")
@example(b'{"type": "ping", "id": 1}\x00')
def test_any_binary_frame_parses_or_is_a_documented_protocol_error(raw):
    _check_parse(raw)


@given(command_shaped())
@example({"type": "ping", "id": []})  # a list id: msgspec would accept it, the id rule does not
def test_valid_commands_round_trip_into_their_struct(data):
    raw = orjson.dumps(data)
    # A frame whose id cannot be echoed (not a short string or an integer) is refused as a whole.
    schema = COMMANDS.get(data["type"]) if isinstance(data["type"], str) and valid_id(data.get("id")) else None
    try:
        expected = msgspec.convert(data, type=schema) if schema is not None else None
    except msgspec.ValidationError:
        expected = None

    if expected is None:
        with pytest.raises(ProtocolError) as raised:
            parse_command(raw)
        assert raised.value.code in {"invalid_message", "unknown_command"}
    else:
        assert parse_command(raw) == expected


# ------------------------------------------------------------------ validate_channel_name


@given(st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=100))
def test_channel_names_of_the_documented_charset_and_length_are_accepted(name):
    assert validate_channel_name(name) == name


@given(st.one_of(
    st.text(max_size=130),
    st.text(alphabet=CHANNEL_CHARS, min_size=101, max_size=200),
    st.text(alphabet=CHANNEL_CHARS, max_size=50).flatmap(
        lambda ok: st.characters(exclude_characters=CHANNEL_CHARS).map(lambda bad: ok + bad + ok)),
    json_values,
))
def test_anything_else_is_refused_as_invalid_message(value):
    documented = (isinstance(value, str) and 1 <= len(value) <= 100 and all(c in CHANNEL_CHARS for c in value))
    if documented:
        assert validate_channel_name(value) == value
    else:
        with pytest.raises(ProtocolError) as raised:
            validate_channel_name(value)
        assert raised.value.code == "invalid_message"


@pytest.mark.parametrize("name", ["broadcast\n", "user:1\n", "team:1\n"])
def test_a_trailing_newline_is_not_a_valid_channel_name(name):
    with pytest.raises(ProtocolError):
        validate_channel_name(name)


# ------------------------------------------------------------------ parse_since


@given(st.text(min_size=1, max_size=30), st.integers(0, 2**63))
def test_parse_since_round_trips_epoch_and_offset(epoch, offset):
    assert parse_since(f"{epoch}:{offset}") == (epoch, offset)


@given(st.text(max_size=40))
@example("nocolon")
@example(":5")
@example("e:")
@example("e:-1")
@example("e:²")
def test_parse_since_answers_a_position_none_or_value_error(raw):
    try:
        parsed = parse_since(raw)
    except ValueError:
        return
    if not raw:
        assert parsed is None
        return
    epoch, offset = parsed
    assert epoch and raw == f"{epoch}:{raw.rpartition(':')[2]}"
    assert isinstance(offset, int) and offset >= 0


@pytest.mark.parametrize("raw", ["e:\u0661\u0662", "e:\uff11"])
def test_parse_since_accepts_only_ascii_digits(raw):
    with pytest.raises(ValueError):
        parse_since(raw)


# ------------------------------------------------------------------ Record.parse


@given(
    st.integers(-(2**63), 2**63),
    st.text(max_size=20).filter(lambda s: "\t" not in s),
    st.binary(max_size=30).filter(lambda b: b"\t" not in b),
    st.binary(max_size=30).filter(lambda b: b"\t" not in b),
    st.binary(max_size=200),
)
def test_record_parse_round_trip(offset, epoch, audience, key, body):
    raw = b"\t".join([str(offset).encode(), epoch.encode(), audience, key, body])

    record = Record.parse(raw)

    assert (record.offset, record.epoch, record.audience, record.key, record.body, record.raw) == (
        offset, epoch, audience, key, body, raw)


# ------------------------------------------------------------------ audience_allows

user_ids = st.integers(1, 10**6).map(str)


@given(user_ids)
def test_empty_audience_lets_everyone_receive(user_id):
    assert audience_allows(b"", user_id.encode()) is True


@given(st.lists(user_ids, max_size=10), user_ids)
def test_minus_audience_excludes_exactly_the_listed_users(listed, user_id):
    audience = ("-" + ",".join(listed)).encode()

    assert audience_allows(audience, user_id.encode()) is (user_id not in listed)


@given(st.lists(user_ids, max_size=10), user_ids)
def test_plus_audience_admits_exactly_the_listed_users(listed, user_id):
    audience = ("+" + ",".join(listed)).encode()

    assert audience_allows(audience, user_id.encode()) is (user_id in listed)


@given(user_ids, user_ids)
def test_a_listed_id_never_matches_a_longer_or_shorter_id(user_id, other):
    assume(user_id != other)
    # "+12" must not admit user 1 or 123: ids are compared whole, not as prefixes.
    assert audience_allows(f"+{user_id}".encode(), other.encode()) is False
    assert audience_allows(f"-{user_id}".encode(), other.encode()) is True


# ------------------------------------------------------------------ through a real consumer



REPLY_TYPES = {"pong", "subscribed", "unsubscribed", "published", "auth.refreshed", "command_result", "error"}
ERROR_CODES = {"invalid_json", "invalid_message", "unknown_command", "forbidden", "not_found", "rate_limited",
               "too_large", "unauthorized", "limit_exceeded", "unavailable", "invalid_state"}


@pytest.mark.django_db(transaction=True)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=st.one_of(frames_text.map(lambda t: ("text", t)), frames_bytes.map(lambda b: ("bytes", b))))
async def test_arbitrary_frames_through_a_consumer_get_an_answer_and_the_socket_stays_open(
        close_thread_connections, user, frame):
    kind, raw = frame
    # A WebSocket text frame is valid UTF-8 on the wire, so it never carries a lone surrogate.
    assume(kind == "bytes" or not any(0xD800 <= ord(c) <= 0xDFFF for c in raw))
    communicator = WebsocketCommunicator(
        application, "/ws/", subprotocols=["renum.v1", "bearer." + access_token_for(user)])
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert orjson.loads(await communicator.receive_from(3))["type"] == "welcome"
        probe = f"probe-{uuid.uuid4().hex}"

        # send_input, not send_to: empty frames are legal on the wire and must be answered too.
        await communicator.send_input({"type": "websocket.receive", kind: raw})
        await communicator.send_to(text_data=orjson.dumps({"type": "ping", "id": probe}).decode())

        answers = []
        while True:
            output = await communicator.receive_output(3)
            assert output["type"] == "websocket.send", output  # never a close
            message = orjson.loads(output["text"])
            if message.get("reply_to") == probe:
                assert message == {"type": "pong", "reply_to": probe}
                break
            if "channel" in message and "offset" in message:  # a replayed or live channel message
                continue
            answers.append(message)
        assert len(answers) == 1, answers  # exactly one answer to the frame
        answer = answers[0]
        assert answer["type"] in REPLY_TYPES, answer
        if answer["type"] == "error":
            assert answer["payload"]["code"] in ERROR_CODES, answer
        try:
            sent_id = _reply_to_of(orjson.loads(raw))
        except orjson.JSONDecodeError:
            sent_id = None
        if sent_id is not None:
            assert answer.get("reply_to") == sent_id
    finally:
        await communicator.disconnect()


# ------------------------------------------------------------------ JWT segments


@given(st.binary(max_size=12) | st.text(alphabet=string.ascii_letters + string.digits + "-_=+/!. ", max_size=12).map(
    str.encode))
@example(b"")
@example(b"QQ==")
@example(b"QQ=")
@example(b"Q===")
@example(b"!!!!")
def test_fast_jwt_segment_check_agrees_with_pyjwt(segment):
    from jwt.api_jws import PyJWS
    from jwt.exceptions import DecodeError

    from realtime.core.tokens import _PyJWS

    def outcome(decode):
        try:
            return decode(segment, "payload")
        except DecodeError as exc:
            return ("error", str(exc))

    assert outcome(_PyJWS._decode_base64url_segment) == outcome(PyJWS._decode_base64url_segment)
