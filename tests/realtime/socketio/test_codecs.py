"""The Engine.IO 4 and Socket.IO 5 packet codecs (realtime/transports/socketio/engineio.py, parser.py)."""

import pytest

from realtime.transports.socketio import engineio, parser
from realtime.transports.socketio.engineio import Packet


def test_engineio_frames_round_trip():
    assert engineio.encode(Packet(engineio.PING)) == "2"
    assert engineio.encode(Packet(engineio.PING, "probe")) == "2probe"
    assert engineio.encode(Packet(engineio.MESSAGE, "hello")) == "4hello"
    assert engineio.encode(Packet(engineio.MESSAGE, b"\x01\x02")) == b"\x01\x02"
    assert engineio.decode("3probe") == Packet(engineio.PONG, "probe")
    assert engineio.decode("6") == Packet(engineio.NOOP, None)
    assert engineio.decode(b"\x01") == Packet(engineio.MESSAGE, b"\x01")


@pytest.mark.parametrize("frame", ["", "7", "x", "abc"])
def test_engineio_refuses_unknown_packet_types(frame):
    with pytest.raises(engineio.PacketError):
        engineio.decode(frame)


def test_engineio_payload_joins_packets_and_base64_binary():
    packets = [Packet(engineio.MESSAGE, "hello"), Packet(engineio.PING), Packet(engineio.MESSAGE, b"\x01\x02\x03\x04")]
    body = engineio.encode_payload(packets)
    assert body == "4hello\x1e2\x1ebAQIDBA=="
    assert engineio.decode_payload(body) == packets


def test_engineio_payload_refuses_bad_base64():
    with pytest.raises(engineio.PacketError):
        engineio.decode_payload("4a\x1eb!!!")


def test_socketio_encodes_each_packet_type():
    assert parser.encode(parser.Packet(parser.CONNECT, "/", {"sid": "x"})) == ['0{"sid":"x"}']
    assert parser.encode(parser.Packet(parser.CONNECT, "/admin", {"sid": "x"})) == ['0/admin,{"sid":"x"}']
    assert parser.encode(parser.Packet(parser.DISCONNECT, "/admin")) == ["1/admin,"]
    assert parser.encode(parser.Packet(parser.EVENT, "/", ["hi", 1], id=12)) == ['212["hi",1]']
    assert parser.encode(parser.Packet(parser.ACK, "/", [{"a": 1}], id=3)) == ['33[{"a":1}]']
    assert parser.encode(parser.Packet(parser.CONNECT_ERROR, "/", {"message": "no"})) == ['4{"message":"no"}']


def test_socketio_binary_event_is_split_into_attachments():
    parts = parser.encode(parser.Packet(parser.EVENT, "/", ["up", b"\x01", {"f": b"\x02"}], id=4))
    assert parts == ['52-4["up",{"_placeholder":true,"num":0},{"f":{"_placeholder":true,"num":1}}]',
                     b"\x01", b"\x02"]


def test_socketio_decoder_reassembles_attachments():
    decoder = parser.Decoder()
    assert decoder.feed('452-/ns,7["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'[1:]) is None
    assert decoder.feed(b"\x01") is None
    packet = decoder.feed(b"\x02")
    assert (packet.type, packet.namespace, packet.id, packet.data) == (parser.EVENT, "/ns", 7, ["up", b"\x01", b"\x02"])


def test_socketio_decodes_namespace_ack_id_and_data():
    packet, count = parser.decode_text('2/chat,42["msg",{"a":[1]}]')
    assert (packet.type, packet.namespace, packet.id, packet.data, count) == (parser.EVENT, "/chat", 42,
                                                                           ["msg", {"a": [1]}], 0)
    packet, _ = parser.decode_text("0/custom")
    assert (packet.type, packet.namespace, packet.data) == (parser.CONNECT, "/custom", None)
    packet, _ = parser.decode_text('0{"token":"t"}')
    assert (packet.namespace, packet.data) == ("/", {"token": "t"})


@pytest.mark.parametrize("text", ["", "9", "abc", "2{}", "2[]", '2abc["x"]', "0[1]", '1{"a":1}', "3{}",
                                  '2["x"', "5x-[]", '52-["x"]'[:3]])
def test_socketio_refuses_malformed_packets(text):
    with pytest.raises(parser.PacketError):
        parser.Decoder().feed(text)


def test_socketio_decoder_refuses_unexpected_binary():
    with pytest.raises(parser.PacketError):
        parser.Decoder().feed(b"\x00")


def test_encode_event_reuses_serialized_arguments():
    assert parser.encode_event("notification", ['{"type":"notification"}', '"c1"']) == \
        '2["notification",{"type":"notification"},"c1"]'
    assert parser.encode_event("x", [], ack_id=5, namespace="/a") == '2/a,5["x"]'
