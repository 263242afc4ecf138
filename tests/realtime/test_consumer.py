"""The socket session over the real ASGI app (in-process), with real Redis and a real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework_simplejwt.tokens import AccessToken

from realtime.core.channels import register_channel
from realtime.core.commands import CommandError, register_command
from realtime.publish import (
    broadcast_on_commit,
    publish_on_commit,
    publish_rollback_unsafe,
    send_to_user_on_commit,
    subscribe_user_on_commit,
)
from tests.conftest import access_token_for

pytestmark = pytest.mark.django_db(transaction=True)

publish = sync_to_async(publish_rollback_unsafe)


# ------------------------------------------------------------------ connect and authenticate


async def test_after_the_handshake_the_scope_keeps_only_what_the_session_reads_again(connect, user):
    from realtime.fanout.node import get_node

    connected, sock, _ = await connect(user, path="/ws/?client_id=tab-9", headers=[
        (b"user-agent", b"scope-test/1.0"), (b"accept-language", b"fr")])
    assert connected
    [session] = [c for c in (await get_node()).hub.connections.values() if c.identity.user_id == str(user.pk)]

    scope = session.transport.scope
    assert scope["headers"] == [(b"user-agent", b"scope-test/1.0")]
    assert scope["subprotocols"] == ()  # the bearer token among them
    entry = session.registry_entry()  # what housekeeping writes to the registry, again and again
    assert (entry["user_agent"], entry["client_id"]) == ("scope-test/1.0", "tab-9")
    await sock.send({"type": "ping", "id": 1})
    assert (await sock.recv())["type"] == "pong"



async def test_welcome_comes_first_with_positions_of_auto_channels(connect, user):
    await publish("broadcast", "system_event", {"n": 1})

    connected, sock, subprotocol = await connect(user)

    assert connected and subprotocol == "renum.v1"
    payload = sock.welcome["payload"]
    assert payload["user_id"] == str(user.pk)
    assert payload["heartbeat_s"] == 25
    assert set(payload["channels"]) == {f"user:{user.pk}", "broadcast"}
    assert payload["channels"]["broadcast"]["offset"] == 1
    assert payload["channels"][f"user:{user.pk}"]["offset"] == 0
    assert payload["expires_at"].endswith("Z")


async def test_path_token_is_accepted_for_compatibility(connect, user):
    connected, sock, _ = await connect(path=f"/ws/{access_token_for(user)}/", subprotocols=[])

    assert connected
    assert sock.welcome["payload"]["user_id"] == str(user.pk)


@pytest.mark.parametrize("case", ["missing", "garbage", "forged", "expired", "inactive", "deleted"])
async def test_bad_credentials_are_accepted_then_closed_4001(connect, make_user, case):
    victim = await sync_to_async(make_user)()
    token = AccessToken.for_user(victim)
    if case == "forged":
        token = str(token)[:-4] + ("AAAA" if not str(token).endswith("AAAA") else "BBBB")
    elif case == "expired":
        token.set_exp(lifetime=-timedelta(seconds=5))
    elif case == "inactive":
        victim.is_active = False
        await sync_to_async(victim.save)()
    elif case == "deleted":
        await sync_to_async(victim.delete)()
    bearer = "bearer." + ("x.y.z" if case == "garbage" else str(token))
    subprotocols = ["renum.v1"] if case == "missing" else ["renum.v1", bearer]

    connected, sock, _ = await connect(subprotocols=subprotocols, expect_welcome=False)

    assert connected  # accepted, so that a browser can read the close code
    closed = await sock.communicator.receive_output(2)
    assert closed["type"] == "websocket.close"
    assert closed["code"] == 4001
    assert closed["reason"]


async def test_foreign_origin_is_refused_before_the_upgrade(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "ALLOWED_ORIGINS": ["https://app.renum.example"]}

    refused, _, _ = await connect(user, headers=[(b"origin", b"https://evil.example")], expect_welcome=False)
    allowed, _, _ = await connect(user, headers=[(b"origin", b"https://app.renum.example")])

    assert refused is False
    assert allowed is True


async def test_origin_defaults_to_allowed_hosts(connect, user):
    ok, _, _ = await connect(user, headers=[(b"origin", b"http://localhost:8000")])
    refused, _, _ = await connect(user, headers=[(b"origin", b"http://attacker.test")], expect_welcome=False)

    assert ok is True
    assert refused is False


# ------------------------------------------------------------------ delivery and isolation


async def test_personal_messages_reach_only_their_user(connect, make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    _, sock_a, _ = await connect(alice)
    _, sock_b, _ = await connect(bob)

    await sync_to_async(send_to_user_on_commit)(alice.pk, "system_event", {"secret": "for alice"})

    frame = await sock_a.recv()
    assert frame["channel"] == f"user:{alice.pk}"
    assert frame["payload"] == {"secret": "for alice"}
    assert frame["offset"] == 1
    assert await sock_b.nothing()


async def test_broadcast_skips_excluded_users(connect, make_user):
    users = [await sync_to_async(make_user)() for _ in range(3)]
    socks = [(await connect(u))[1] for u in users]

    await sync_to_async(broadcast_on_commit)("system_event", {"text": "hello"}, exclude_users=[users[1].pk])

    assert (await socks[0].recv())["payload"] == {"text": "hello"}
    assert (await socks[2].recv())["payload"] == {"text": "hello"}
    assert await socks[1].nothing()


async def test_every_connection_of_a_user_receives_its_messages(connect, user):
    _, first, _ = await connect(user)
    _, second, _ = await connect(user)

    await publish(f"user:{user.pk}", "system_event", {"n": 1})

    assert (await first.recv())["payload"] == {"n": 1}
    assert (await second.recv())["payload"] == {"n": 1}


async def test_envelope_has_every_field_and_offsets_grow_per_channel(connect, user):
    _, sock, _ = await connect(user)

    for n in range(3):
        await publish("broadcast", "system_event", {"n": n})
    await publish(f"user:{user.pk}", "system_event", {"n": "personal"})

    frames = [await sock.recv() for _ in range(4)]
    assert [(f["channel"], f["offset"]) for f in frames] == [
        ("broadcast", 1), ("broadcast", 2), ("broadcast", 3), (f"user:{user.pk}", 1)]
    assert set(frames[0]) == {"type", "channel", "offset", "epoch", "id", "timestamp", "sender", "payload"}
    assert frames[0]["epoch"] == sock.welcome["payload"]["channels"]["broadcast"]["epoch"]


def _create_in_rolled_back_transaction(user_id):
    with pytest.raises(RuntimeError), transaction.atomic():
        send_to_user_on_commit(user_id, "system_event", {"rolled": "back"})
        raise RuntimeError("business write failed")


def _create_in_committed_transaction(user_id):
    with transaction.atomic():
        send_to_user_on_commit(user_id, "system_event", {"committed": True})


async def test_rolled_back_transaction_publishes_nothing(connect, user):
    _, sock, _ = await connect(user)

    await sync_to_async(_create_in_rolled_back_transaction)(user.pk)
    await sync_to_async(_create_in_committed_transaction)(user.pk)

    frame = await sock.recv()
    assert frame["payload"] == {"committed": True}
    assert frame["offset"] == 1  # the rolled-back message never took an offset
    assert await sock.nothing()


def test_invalid_builtin_payload_fails_in_the_caller(user):
    with pytest.raises(ValueError, match="execution_update"):
        publish_on_commit("team:1", "execution_update", {"status": "exploded"})
    with pytest.raises(ValueError, match="channel"):
        publish_on_commit("bad channel name", "system_event", {})


# ------------------------------------------------------------------ subscriptions


async def test_subscribing_to_another_users_channel_is_forbidden(connect, make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    _, sock, _ = await connect(alice)

    await sock.send({"type": "subscribe", "id": 1, "channel": f"user:{bob.pk}"})
    error = await sock.recv()
    await publish(f"user:{bob.pk}", "system_event", {"secret": "bob's"})

    assert error == {"type": "error", "reply_to": 1, "payload": {
        "code": "forbidden", "message": f"not allowed to subscribe to user:{bob.pk}"}}
    assert await sock.nothing()


async def test_unknown_namespace_is_not_found(connect, user):
    _, sock, _ = await connect(user)

    await sock.send({"type": "subscribe", "id": "s", "channel": "nosuch:1"})

    error = await sock.recv()
    assert error["payload"]["code"] == "not_found"
    assert error["reply_to"] == "s"


async def test_custom_channel_with_client_publishing(connect, make_user, restore_registries):
    register_channel("room:", can_subscribe=lambda user, ch: ch != "room:private",
                     can_publish=lambda user, ch: ch == "room:lobby")
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    _, sock_a, _ = await connect(alice)
    _, sock_b, _ = await connect(bob)
    for sock in (sock_a, sock_b):
        await sock.send({"type": "subscribe", "id": 1, "channel": "room:lobby"})
        reply = await sock.recv()
        assert reply["payload"] == {
            "channel": "room:lobby", "epoch": await _epoch("room:lobby"), "offset": 0, "recovered": False,
            "replayed": 0}

    await sock_a.send({"type": "publish", "id": 2, "channel": "room:lobby", "payload": {"text": "hi"}})

    reply = await sock_a.recv_until(lambda f: f["type"] == "published")
    assert reply["reply_to"] == 2 and reply["payload"]["offset"] == 1
    message = await sock_b.recv()
    assert message["type"] == "publication"
    assert message["sender"] == f"user:{alice.pk}"
    assert message["payload"] == {"text": "hi"}


async def _epoch(channel):
    from realtime.storage import redis as rt_redis
    from realtime.storage import streams

    return (await rt_redis.async_client().hget(streams.meta_key(channel), "epoch")).decode()


async def test_publishing_where_clients_may_not_is_forbidden(connect, user):
    _, sock, _ = await connect(user)

    await sock.send({"type": "publish", "id": 9, "channel": f"user:{user.pk}", "payload": {}})

    assert (await sock.recv())["payload"]["code"] == "forbidden"


async def test_unsubscribe_stops_delivery(connect, user):
    _, sock, _ = await connect(user)

    await sock.send({"type": "unsubscribe", "id": 3, "channel": "broadcast"})
    reply = await sock.recv()
    await publish("broadcast", "system_event", {})

    assert reply == {"type": "unsubscribed", "reply_to": 3, "payload": {"channel": "broadcast"}}
    assert await sock.nothing()


async def test_server_side_subscribe_reaches_live_connections(connect, user, restore_registries):
    register_channel("room:", can_subscribe=lambda user, ch: False)
    _, sock, _ = await connect(user)

    await sync_to_async(subscribe_user_on_commit)(user.pk, "room:vip")
    subscribed = await sock.recv()
    await publish("room:vip", "system_event", {"vip": True})

    assert subscribed["type"] == "subscribed" and subscribed["payload"]["channel"] == "room:vip"
    assert (await sock.recv())["payload"] == {"vip": True}


async def test_control_group_holds_the_process_while_any_socket_of_the_user_is_connected(
        connect, user, restore_registries):
    from channels.layers import get_channel_layer

    from realtime.fanout.control import control_group

    register_channel("room:", can_subscribe=lambda user, ch: False)
    layer = get_channel_layer()
    group_key = layer._group_key(control_group(user.pk))
    _, first, _ = await connect(user)
    _, second, _ = await connect(user)
    members_with_two = await layer.connection(0).zrange(group_key, 0, -1)

    await sync_to_async(subscribe_user_on_commit)(user.pk, "room:a")
    both = [(await first.recv())["payload"]["channel"], (await second.recv())["payload"]["channel"]]
    await first.close()
    await sync_to_async(subscribe_user_on_commit)(user.pk, "room:b")
    remaining = (await second.recv())["payload"]["channel"]
    members_with_one = await layer.connection(0).zrange(group_key, 0, -1)
    await second.close()
    members_with_none = await layer.connection(0).zrange(group_key, 0, -1)

    assert len(members_with_two) == 1  # one channel per process, not per socket
    assert members_with_two[0].decode().startswith("rtcontrol.")
    assert both == ["room:a", "room:a"]
    assert remaining == "room:b"
    assert members_with_one == members_with_two
    assert members_with_none == []


async def test_the_control_membership_is_written_as_group_add_writes_it(connect, user):
    from channels.layers import get_channel_layer

    from realtime.fanout.control import control_group
    from realtime.fanout.node import get_node

    layer = get_channel_layer()
    await connect(user)  # its membership is written by the registry's script
    channel_name = (await get_node()).control.channel_name
    await layer.group_add("reference", channel_name)  # channels_redis's own write
    redis = layer.connection(0)
    key, reference = layer._group_key(control_group(user.pk)), layer._group_key("reference")

    [(member, score)] = await redis.zrange(key, 0, -1, withscores=True)
    [(reference_member, reference_score)] = await redis.zrange(reference, 0, -1, withscores=True)

    assert member == reference_member == channel_name.encode()
    assert abs(score - reference_score) < 5
    assert abs(await redis.ttl(key) - await redis.ttl(reference)) <= 1


def test_only_groups_in_the_realtime_redis_are_written_by_its_scripts(settings):
    from realtime.fanout.control import ControlPlane
    from realtime.storage.layers import RealtimeRedisChannelLayer

    elsewhere = ControlPlane(RealtimeRedisChannelLayer(hosts=[{"address": "redis://elsewhere:6379/0"}]), {})
    same_layer = RealtimeRedisChannelLayer(hosts=[{"address": settings.REDIS_URL}], prefix="t")
    same = ControlPlane(same_layer, {})
    for plane in (elsewhere, same):
        plane.channel_name = "rtcontrol.x!y"
        plane.join_soon("7", object())

    assert elsewhere.joins_for_script(["7"], settings.REDIS_URL) is None
    assert same.joins_for_script(["7", "8", "7"], settings.REDIS_URL) == (
        [same_layer._group_key("rt.user.7")], "rtcontrol.x!y", same_layer.group_expiry)


async def test_resubscribe_with_since_replays_missed_messages(connect, user):
    _, sock, _ = await connect(user)
    position = sock.welcome["payload"]["channels"]["broadcast"]
    await sock.close()
    for n in range(3):
        await publish("broadcast", "system_event", {"n": n})
    _, sock, _ = await connect(user)

    await sock.send({"type": "subscribe", "id": 1, "channel": "broadcast", "since": position})

    reply = await sock.recv()
    assert reply["payload"] == {"channel": "broadcast", "epoch": position["epoch"], "offset": 3, "recovered": True,
                                "replayed": 3}
    assert [(await sock.recv())["payload"]["n"] for _ in range(3)] == [0, 1, 2]
    assert await sock.nothing()


async def test_since_of_another_epoch_is_not_recovered(connect, user):
    await publish("broadcast", "system_event", {})
    _, sock, _ = await connect(user)

    await sock.send({"type": "subscribe", "id": 1, "channel": "broadcast", "since": {"epoch": "old", "offset": 0}})

    assert (await sock.recv())["payload"]["recovered"] is False
    assert await sock.nothing()


# ------------------------------------------------------------------ bad frames and commands


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"type": "explode", "id": 4}', "unknown_command"),
    ('{"type": "subscribe", "id": 4}', "invalid_message"),
    ('{"type": "subscribe", "id": 4, "channel": "has space"}', "invalid_message"),
    ('{"type": "subscribe", "id": 4, "channel": "broadcast", "since": {"epoch": 1}}', "invalid_message"),
    ('{"type": "command", "id": 4, "payload": {"name": "no.such"}}', "unknown_command"),
    ('{"type": "ping", "id": 4, "extra": true}', "invalid_message"),
    ("x" * (1024 * 1024), "too_large"),
])
async def test_bad_frames_get_an_error_and_the_socket_stays_open(connect, user, frame, code):
    _, sock, _ = await connect(user)

    await sock.send(frame)
    error = await sock.recv()
    await sock.send({"type": "ping", "id": "after"})

    assert error["type"] == "error"
    assert error["payload"]["code"] == code
    assert await sock.recv() == {"type": "pong", "reply_to": "after"}


async def test_too_many_invalid_frames_close_with_4008(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "MAX_INVALID_FRAMES": 3}
    _, sock, _ = await connect(user)

    for _ in range(4):
        await sock.send("garbage")
    frames = [await sock.communicator.receive_output(2) for _ in range(5)]

    assert frames[-1] == {"type": "websocket.close", "code": 4008, "reason": "too many invalid or oversized messages"}


async def test_commands_are_routed_with_the_authenticated_user(connect, make_user, restore_registries):
    def whoami(user, args):
        if args.get("fail"):
            raise CommandError("not_found", "nothing here")
        return {"user_id": user.pk, "echo": args}

    register_command("test.whoami", whoami)
    register_command("test.staff_only", whoami, permission=lambda user, args: user.is_staff)
    user = await sync_to_async(make_user)()
    _, sock, _ = await connect(user)

    await sock.send({"type": "command", "id": 1, "payload": {"name": "test.whoami", "args": {"user_id": 999}}})
    await sock.send({"type": "command", "id": 2, "payload": {"name": "test.whoami", "args": {"fail": True}}})
    await sock.send({"type": "command", "id": 3, "payload": {"name": "test.staff_only", "args": {}}})

    assert await sock.recv() == {"type": "command_result", "reply_to": 1, "payload": {
        "name": "test.whoami", "result": {"user_id": user.pk, "echo": {"user_id": 999}}}}
    assert (await sock.recv())["payload"] == {"code": "not_found", "message": "nothing here"}
    assert (await sock.recv())["payload"]["code"] == "forbidden"


async def test_auth_refresh_accepts_only_the_same_user(connect, make_user):
    alice, bob = await sync_to_async(make_user)(), await sync_to_async(make_user)()
    _, sock, _ = await connect(alice)

    await sock.send({"type": "auth.refresh", "id": 1, "token": access_token_for(alice)})
    await sock.send({"type": "auth.refresh", "id": 2, "token": access_token_for(bob)})
    await sock.send({"type": "auth.refresh", "id": 3, "token": "nonsense"})

    refreshed = await sock.recv()
    assert refreshed["type"] == "auth.refreshed" and refreshed["payload"]["expires_at"].endswith("Z")
    assert (await sock.recv())["payload"]["code"] == "forbidden"
    assert (await sock.recv())["payload"]["code"] == "unauthorized"


async def test_expired_token_without_refresh_closes_4011(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HEARTBEAT_S": 1}
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=1))
    _, sock, _ = await connect(token=str(token))

    closed = await sock.communicator.receive_output(5)

    assert closed == {"type": "websocket.close", "code": 4011, "reason": "token expired"}


async def test_silent_connection_is_closed_after_the_heartbeat_window(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "HEARTBEAT_S": 1, "IDLE_FACTOR": 1.5}
    _, sock, _ = await connect(user)

    closed = await sock.communicator.receive_output(6)

    assert closed == {"type": "websocket.close", "code": 1001, "reason": "heartbeat timeout"}


async def test_token_of_a_since_deactivated_user_is_refused(connect, user):
    token = access_token_for(user)
    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)

    connected, sock, _ = await connect(token=token, expect_welcome=False)

    assert connected
    assert (await sock.communicator.receive_output(2))["code"] == 4001


async def test_connections_of_a_deactivated_user_are_closed(connect, user, settings):
    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "USER_RECHECK_S": 0}
    _, sock, _ = await connect(user)

    await sync_to_async(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)
    closed = await sock.communicator.receive_output(6)

    assert closed == {"type": "websocket.close", "code": 4001, "reason": "account deactivated"}


async def test_connects_after_redis_forgot_its_scripts(connect, user):
    from realtime.storage import redis as rt_redis

    await rt_redis.async_client().script_flush()

    connected, sock, _ = await connect(user)

    assert connected and sock.welcome["payload"]["channels"]["broadcast"]["offset"] == 0


async def test_sockets_connecting_together_are_counted_one_by_one_against_the_per_user_limit(
        connect, user, settings):
    import asyncio

    settings.RENUM_REALTIME = {**settings.RENUM_REALTIME, "MAX_CONNECTIONS_PER_USER": 3}

    # the four registry entries land in one batch; each is counted as if it came alone
    results = await asyncio.gather(*(connect(user, expect_welcome=False) for _ in range(4)))
    first_frames = [await sock.communicator.receive_output(5) for _, sock, _ in results]

    welcomed = [f for f in first_frames if f["type"] == "websocket.send" and '"welcome"' in f["text"]]
    refused = [f for f in first_frames if f["type"] == "websocket.close"]
    assert len(welcomed) == 3
    assert refused == [{"type": "websocket.close", "code": 4003, "reason": "too many connections for this user"}]


async def test_users_looked_up_at_connect_are_whole_enough_for_policies(make_user):
    from realtime.core.users import active_users as _active_users

    staff = await sync_to_async(make_user)(username="boss", is_staff=True)
    plain = await sync_to_async(make_user)(username="plain")
    gone = await sync_to_async(make_user)(username="gone", is_active=False)

    found = await _active_users([str(plain.pk), "not-a-number", str(staff.pk), str(gone.pk), "999999", str(plain.pk)])

    assert [u.username if u else None for u in found] == ["plain", None, "boss", None, None, "plain"]
    assert (found[2].is_staff, found[2].is_superuser, found[0].is_staff) == (True, False, False)
    assert all(isinstance(u.is_staff, bool) and u.is_active is True for u in found if u)
    assert found[0].pk == plain.pk


async def test_sockets_welcomed_together_see_the_same_positions(connect, user):
    import asyncio

    await publish("broadcast", "system_event", {"n": 1})

    results = await asyncio.gather(*(connect(user) for _ in range(3)))
    await publish(f"user:{user.pk}", "system_event", {"n": 2})
    _, late, _ = await connect(user)

    positions = [sock.welcome["payload"]["channels"] for _, sock, _ in results]
    assert positions[0] == positions[1] == positions[2]
    assert positions[0]["broadcast"]["offset"] == 1
    assert positions[0][f"user:{user.pk}"]["offset"] == 0
    # the user's channel got its epoch with the first welcome; later ones keep it
    assert late.welcome["payload"]["channels"][f"user:{user.pk}"] == {
        "epoch": positions[0][f"user:{user.pk}"]["epoch"], "offset": 1}
