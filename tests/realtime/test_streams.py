"""realtime.storage.streams: offsets, epochs, history and idempotency, through its Lua scripts on a real Redis."""

from __future__ import annotations

import pytest

from realtime.storage import redis as rt_redis
from realtime.storage import streams
from tests.conftest import read_history


def publish(channel: str, n: int, *, audience: str = "", key: str = "", idempotency: str = "") -> list:
    """Run PUBLISH_LUA for a message whose payload is ``{"n": n}``; its reply ``[offset, epoch, duplicate]``."""
    head = f'{{"type":"system_event","channel":"{channel}","payload":{{"n":{n}}},"offset":'.encode()
    keys, args = streams.publish_args(channel, head, b"}", audience, key, idempotency)
    return rt_redis.sync_script(streams.PUBLISH_LUA)(keys=keys, args=args)


def read(channel: str, since: int) -> streams.ReadResult:
    return streams.parse_read(rt_redis.sync_script(streams.READ_LUA)(*streams.read_args(channel, since)))


def test_offsets_grow_by_one_per_message_in_one_epoch():
    replies = [publish("user:1", n) for n in range(3)]

    assert [offset for offset, _, _ in replies] == [1, 2, 3]
    assert len({epoch for _, epoch, _ in replies}) == 1
    assert [r.offset for r in read_history("user:1")] == [1, 2, 3]


def test_a_record_carries_offset_epoch_audience_key_and_the_envelope_with_its_position():
    offset, epoch, _ = publish("team:4", 7, audience="-2,3", key="exec:9")

    [record] = read_history("team:4")
    assert (record.offset, record.epoch, record.audience, record.key) == (offset, epoch.decode(), b"-2,3", b"exec:9")
    assert record.body == (b'{"type":"system_event","channel":"team:4","payload":{"n":7},"offset":1,"epoch":"'
                           + epoch + b'"}')
    assert streams.Record.parse(record.raw) == record


def test_a_channel_never_seen_gets_an_epoch_on_its_first_read_and_keeps_it():
    first = read("user:5", -1)
    again = read("user:5", -1)

    assert first.offset == 0 and first.records == []
    assert again.epoch == first.epoch
    assert publish("user:5", 1)[1].decode() == first.epoch


def test_a_read_returns_the_records_after_since():
    for n in range(5):
        publish("user:6", n)

    result = read("user:6", 2)

    assert result.offset == 5
    assert [r.offset for r in result.records] == [3, 4, 5]
    assert read("user:6", -1).records == []  # a position-only read


def test_recover_is_all_or_nothing():
    for n in range(4):
        publish("user:7", n)
    result = read("user:7", 1)

    assert [r.offset for r in streams.recover(result, result.epoch, 1)] == [2, 3, 4]
    assert streams.recover(result, result.epoch, 4) == []
    assert streams.recover(result, "another-epoch", 1) is None
    assert streams.recover(result, result.epoch, 9) is None  # ahead of the channel
    trimmed = streams.ReadResult(result.epoch, result.offset, result.records[1:])
    assert streams.recover(trimmed, result.epoch, 1) is None  # history lost its oldest: no partial replay


def test_the_history_keeps_the_last_history_size_records(settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HISTORY_SIZE": 3}
    for n in range(5):
        publish("user:8", n)

    assert [r.offset for r in read_history("user:8")] == [3, 4, 5]
    assert streams.recover(read("user:8", 1), read("user:8", -1).epoch, 1) is None


def test_an_idempotency_key_seen_before_is_not_appended_again():
    first = publish("user:9", 1, idempotency="row-a:0")
    retried = publish("user:9", 1, idempotency="row-a:0")
    other = publish("user:9", 2, idempotency="row-b:0")

    assert first[2] == 0 and retried[2] == 1
    assert retried[0] == first[0]  # the offset it got the first time
    assert other[0] == 2
    assert [r.offset for r in read_history("user:9")] == [1, 2]


def test_a_lost_meta_hash_gives_a_new_epoch_and_offsets_start_over():
    _, old_epoch, _ = publish("user:10", 1)
    rt_redis.sync_client().delete(streams.meta_key("user:10"))

    offset, new_epoch, _ = publish("user:10", 2)

    assert new_epoch != old_epoch
    assert offset == 1
    assert streams.recover(read("user:10", 1), old_epoch.decode(), 1) is None


def test_another_generation_of_the_data_set_gives_every_channel_a_new_epoch():
    _, old_epoch, _ = publish("user:11", 1)
    client = rt_redis.sync_client()
    generation = client.get(streams.generation_key())
    client.set(streams.generation_key(), streams.new_epoch())  # a generation of its own, as a replaced server's

    try:
        _, new_epoch, _ = publish("user:11", 2)
    finally:
        client.set(streams.generation_key(), generation)

    assert new_epoch != old_epoch
    assert read_history("user:11")[-1].epoch == new_epoch.decode()


def test_rotate_gives_a_new_epoch_at_the_same_offset_and_drops_the_history():
    for n in range(2):
        _, old_epoch, _ = publish("user:12", n)
    pubsub = rt_redis.sync_client().pubsub()
    pubsub.subscribe(streams.pubsub_name("user:12"))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"

    keys, args = streams.rotate_args("user:12")
    offset = rt_redis.sync_script(streams.ROTATE_LUA)(keys=keys, args=args)

    assert offset == 2
    result = read("user:12", -1)
    assert result.epoch != old_epoch.decode() and result.offset == 2
    assert read_history("user:12") == []
    notice = pubsub.get_message(timeout=1)
    assert notice["data"] == f"2\t{result.epoch}\t\t\t".encode()  # an empty record: the hubs close with 1012
    pubsub.close()


@pytest.mark.parametrize("channel", ["user:1", "team:x", "broadcast"])
def test_keys_of_a_channel_share_one_hash_tag(channel):
    tags = {key.split("{", 1)[1].split("}", 1)[0]
            for key in (streams.meta_key(channel), streams.history_key(channel), streams.idempotency_key(channel))}
    assert tags == {channel}
    assert streams.pubsub_name(channel).startswith(streams.pubsub_prefix())


async def test_reads_of_many_channels_go_out_as_evalsha_alone_and_survive_a_lost_script():
    """``realtime.storage.redis.evalsha_many`` (the long poll's catch-up): no SCRIPT EXISTS round trip
    per pipeline, and a Redis that lost its scripts (restart, SCRIPT FLUSH) still answers once."""
    for n in range(3):
        publish("user:20", n)
    client = rt_redis.sync_client()

    def exists_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_script|exists", {}).get("calls", 0))

    reads = [streams.read_args("user:20", 1), streams.read_args("broadcast", -1)]
    await rt_redis.evalsha_many(streams.READ_LUA, reads)  # the script is loaded now
    before = exists_calls()
    replies = await rt_redis.evalsha_many(streams.READ_LUA, reads)
    assert exists_calls() == before
    assert [r.offset for r in streams.parse_read(replies[0]).records] == [2, 3]

    client.script_flush()
    again = await rt_redis.evalsha_many(streams.READ_LUA, reads)

    assert [streams.parse_read(r).offset for r in again] == [3, 0]
    assert [r.offset for r in read_history("user:20")] == [1, 2, 3]  # reads only, nothing appended


def test_epochs_are_twelve_hex_digits_and_do_not_repeat():
    epochs = [streams.new_epoch() for _ in range(5000)]  # several refills of the random buffer

    assert all(len(e) == 12 and int(e, 16) >= 0 for e in epochs)
    assert len(set(epochs)) == len(epochs)


def test_a_forked_child_does_not_offer_its_parent_s_next_epochs():
    import os

    streams.new_epoch()  # the buffer holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next epochs, to the parent
        os.close(read)
        os.write(write, ",".join(streams.new_epoch() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 1000).decode().split(",")
    os.waitpid(pid, 0)
    os.close(read)

    parent = [streams.new_epoch() for _ in range(3)]
    assert not set(child) & set(parent)
