"""static/renum/realtime.js alone, in Chromium, against a scripted fake WebSocket.

The close-code rules, backoff, de-duplication and request/reply are checked exactly, without
waiting for a real server to misbehave. The page is served by a real server only so that the
module loads from its real URL.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# A fake WebSocket whose instances the test drives: open, server frames, close codes.
HARNESS = """async () => {
  const module = await import('/static/renum/realtime.js');
  class FakeSocket {
    static all = [];
    constructor(url, protocols) {
      this.url = url; this.protocols = protocols; this.readyState = 0; this.sent = [];
      FakeSocket.all.push(this);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code, reason) { this.closedWith = code; this.readyState = 3; }
    serverFrame(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    welcome(channels = { 'user:7': { epoch: 'e1', offset: 3 }, broadcast: { epoch: 'b1', offset: 0 } }) {
      this.readyState = 1;
      this.serverFrame({ type: 'welcome', payload: { user_id: '7', connection_id: 'c', heartbeat_s: 25,
        expires_at: new Date(Date.now() + 600000).toISOString(), channels } });
    }
    serverClose(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
    subscribed(channel, epoch, offset, recovered) {
      const request = this.sent.find((f) => f.type === 'subscribe' && f.channel === channel);
      this.serverFrame({ type: 'subscribed', reply_to: request.id, payload: { channel, epoch, offset, recovered } });
    }
  }
  const tokens = [];
  window.h = {
    module, FakeSocket, tokens, states: [], messages: [], resyncs: [],
    make(options = {}) {
      let n = 0;
      const client = new module.RealtimeClient({
        url: '/ws/', WebSocket: FakeSocket, pollUrl: false, backoffBaseMs: 10,
        getToken: async ({ reason }) => { tokens.push(reason); return options.sameToken ? 'tok' : `tok${n++}`; },
        ...options,
      });
      client.onStateChange((s, i) => window.h.states.push(i.attempt ? `${s}:${i.attempt}` : s));
      client.on('message', (m) => window.h.messages.push(`${m.channel}@${m.offset}`));
      client.onResync((r) => window.h.resyncs.push(`${r.channel}:${r.reason}`));
      return client;
    },
    tick: (ms = 0) => new Promise((r) => setTimeout(r, ms)),
    envelope: (channel, offset, epoch = 'e1') => ({ type: 'notification', channel, offset, epoch, id: `m${offset}`,
      timestamp: '', sender: 'system', payload: {} }),
  };
}"""


@pytest.fixture
def harness(server, page):
    page.goto(server.http_url + "/")
    page.evaluate(HARNESS)
    return page


def test_subprotocols_carry_the_token_and_duplicates_are_delivered_once(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      const ws = h.FakeSocket.all[0];
      ws.welcome();
      for (const offset of [4, 5, 4, 5, 6]) ws.serverFrame(h.envelope('user:7', offset));
      ws.serverFrame({ type: 'something_new', payload: {} });  // unknown control frame: ignored
      return { protocols: ws.protocols, messages: h.messages, state: c.state };
    }""")
    assert result == {"protocols": ["renum.v1", "bearer.tok0"], "messages": ["user:7@4", "user:7@5", "user:7@6"],
                      "state": "connected"}


def test_send_resolves_with_the_reply_and_rejects_on_error(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      const ws = h.FakeSocket.all[0]; ws.welcome();
      const ok = c.command('notification.mark_all_read', {});
      const bad = c.send('subscribe', { channel: 'team:9' });
      const [cmd, sub] = ws.sent.slice(-2);
      ws.serverFrame({ type: 'command_result', reply_to: cmd.id, payload: { name: 'x', result: { count: 0 } } });
      ws.serverFrame({ type: 'error', reply_to: sub.id, payload: { code: 'forbidden', message: 'no' } });
      const error = await bad.catch((e) => e);
      return { cmd, result: await ok, code: error.code };
    }""")
    assert result["cmd"]["type"] == "command"
    assert result["cmd"]["payload"] == {"name": "notification.mark_all_read", "args": {}}
    assert result["result"] == {"count": 0}
    assert result["code"] == "forbidden"


def test_reconnect_resumes_every_channel_from_its_position_and_resyncs_on_gap(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.subscribe('team:1', () => {}); c.connect(); await h.tick();
      let ws = h.FakeSocket.all[0]; ws.welcome();
      ws.subscribed('team:1', 't1', 10, false);
      ws.serverFrame(h.envelope('user:7', 4));
      ws.serverFrame(h.envelope('team:1', 11, 't1'));
      ws.serverClose(1012, 'restart');
      await h.tick(1100);
      ws = h.FakeSocket.all[1];
      ws.welcome({ 'user:7': { epoch: 'e1', offset: 6 }, broadcast: { epoch: 'b1', offset: 0 } });
      const subs = ws.sent.filter((f) => f.type === 'subscribe');
      ws.serverFrame(h.envelope('user:7', 6));            // live, before the replay
      ws.subscribed('user:7', 'e1', 6, true);
      ws.serverFrame(h.envelope('user:7', 5));
      ws.serverFrame(h.envelope('user:7', 6));            // duplicate of the live one
      ws.subscribed('team:1', 't2', 0, false);
      return { subs: subs.map((f) => [f.channel, f.since]), messages: h.messages, resyncs: h.resyncs,
               states: h.states, positions: c.positions() };
    }""")
    assert sorted(result["subs"], key=str) == sorted([
        ["user:7", {"epoch": "e1", "offset": 4}], ["broadcast", {"epoch": "b1", "offset": 0}],
        ["team:1", {"epoch": "t1", "offset": 11}]], key=str)
    assert result["messages"] == ["user:7@4", "team:1@11", "user:7@6", "user:7@5"]
    assert result["resyncs"] == ["team:1:epoch_changed"]
    assert result["states"] == ["connecting", "connected", "reconnecting:1", "connected"]
    assert result["positions"]["user:7"] == {"epoch": "e1", "offset": 6}


def test_backoff_gives_up_after_five_attempts_then_failed_without_polling(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      for (let i = 0; i < 6; i++) {
        const ws = h.FakeSocket.all[i];
        ws.serverClose(1006);
        await h.tick(400);   // backoff 10 ms x 2^(n-1) with jitter
      }
      return { sockets: h.FakeSocket.all.length, states: h.states, state: c.state };
    }""")
    assert result["sockets"] == 6  # the first one and five attempts
    assert result["states"] == ["connecting", "reconnecting:1", "reconnecting:2", "reconnecting:3",
                                "reconnecting:4", "reconnecting:5", "failed"]


def test_4001_with_a_token_that_cannot_be_renewed_stops_without_a_loop(harness):
    result = harness.evaluate("""async () => {
      const c = h.make({ sameToken: true }); c.connect(); await h.tick();
      h.FakeSocket.all[0].serverClose(4001, 'invalid token');
      await h.tick(300);
      return { sockets: h.FakeSocket.all.length, tokens: h.tokens, state: c.state, info: c.stateInfo };
    }""")
    assert result["sockets"] == 1
    assert result["tokens"] == ["connect", "unauthorized"]
    assert result["state"] == "unauthorized"
    assert result["info"] == {"reason": "invalid token", "cause": "credentials_refused", "code": 4001}


def test_4001_then_a_new_token_reconnects_once_and_a_second_4001_stops(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      h.FakeSocket.all[0].serverClose(4001, 'expired');
      await h.tick(50);
      const second = h.FakeSocket.all[1].protocols[1];
      h.FakeSocket.all[1].serverClose(4001, 'still refused');
      await h.tick(300);
      return { sockets: h.FakeSocket.all.length, second, state: c.state };
    }""")
    assert result == {"sockets": 2, "second": "bearer.tok1", "state": "unauthorized"}


def test_4011_renews_the_token_and_resumes_at_once(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      h.FakeSocket.all[0].welcome();
      h.FakeSocket.all[0].serverClose(4011, 'token expired');
      await h.tick(50);
      const ws = h.FakeSocket.all[1]; ws.welcome();
      return { tokens: h.tokens, protocols: ws.protocols, state: c.state,
               resumed: ws.sent.filter((f) => f.type === 'subscribe').map((f) => f.channel).sort() };
    }""")
    assert result == {"tokens": ["connect", "expired"], "protocols": ["renum.v1", "bearer.tok1"],
                      "state": "connected", "resumed": ["broadcast", "user:7"]}


def test_silent_socket_is_dropped_after_two_and_a_half_heartbeats(harness):
    result = harness.evaluate("""async () => {
      const c = h.make({ heartbeatS: 0.1 }); c.connect(); await h.tick();
      const ws = h.FakeSocket.all[0]; ws.welcome();
      await h.tick(450);   // pings go out, no pong comes back
      return { pings: ws.sent.filter((f) => f.type === 'ping').length, sockets: h.FakeSocket.all.length,
               states: h.states };
    }""")
    assert result["pings"] >= 2
    assert result["states"][:3] == ["connecting", "connected", "reconnecting:1"]
    assert result["sockets"] == 2


def test_going_offline_closes_with_1000_which_browsers_accept(harness):
    # A real WebSocket refuses close(1001) with InvalidAccessError: the socket would stay open.
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      h.FakeSocket.all[0].welcome();
      window.dispatchEvent(new Event('offline'));
      const closedWith = h.FakeSocket.all[0].closedWith;
      let refused = null;
      try { new WebSocket('ws://127.0.0.1:9/').close(1001); } catch (e) { refused = e.name; }
      return { closedWith, state: c.state, refused };
    }""")
    assert result == {"closedWith": 1000, "state": "offline", "refused": "InvalidAccessError"}


def test_server_side_subscription_is_kept_and_resumed_after_a_reconnect(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      const first = h.FakeSocket.all[0];
      first.welcome();
      // The user joined team 9: the server subscribes the socket, no reply_to.
      first.serverFrame({ type: 'subscribed',
        payload: { channel: 'team:9', epoch: 't1', offset: 4, recovered: false } });
      first.serverFrame(h.envelope('team:9', 5, 't1'));
      first.serverClose(1012);
      await h.tick(1100);
      const second = h.FakeSocket.all[1];
      second.welcome();
      await h.tick();
      return { url: first.url, channels: c.channels().sort(),
               resubscribe: second.sent.filter((f) => f.type === 'subscribe').map((f) => [f.channel, f.since]) };
    }""")
    assert "client_id=web-" in result["url"]
    assert result["channels"] == ["broadcast", "team:9", "user:7"]
    assert ["team:9", {"epoch": "t1", "offset": 5}] in result["resubscribe"]


def test_deactivated_account_is_not_reported_as_an_expired_session(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      h.FakeSocket.all[0].welcome();
      h.FakeSocket.all[0].serverClose(4001, 'account deactivated');
      await h.tick(50);
      return { sockets: h.FakeSocket.all.length, state: c.state, info: c.stateInfo };
    }""")
    assert result == {"sockets": 1, "state": "unauthorized",
                      "info": {"reason": "account deactivated", "cause": "account_deactivated", "code": 4001}}


def test_a_refresh_that_cannot_succeed_leaves_connected_at_once(harness):
    result = harness.evaluate("""async () => {
      let calls = 0;
      const c = h.make({ getToken: async ({ reason }) => {
        calls++;
        if (reason === 'refresh') throw new Error('refresh token revoked');
        return 'tok';
      } });
      c.connect(); await h.tick();
      const s = h.FakeSocket.all[0];
      s.readyState = 1;
      s.serverFrame({ type: 'welcome', payload: { user_id: '7', connection_id: 'c', heartbeat_s: 25,
        expires_at: new Date(Date.now() + 1500).toISOString(), channels: {} } });
      await h.tick(1700);
      return { state: c.state, info: c.stateInfo, closedWith: s.closedWith };
    }""")
    assert result == {"state": "unauthorized", "closedWith": 1000,
                      "info": {"reason": "refresh token revoked", "cause": "session_expired"}}


def test_4003_keeps_its_reason_in_the_state(harness):
    result = harness.evaluate("""async () => {
      const c = h.make(); c.connect(); await h.tick();
      h.FakeSocket.all[0].serverClose(4003, 'too many connections for this user');
      return { state: c.state, code: c.stateInfo.code, reason: c.stateInfo.reason };
    }""")
    assert result == {"state": "reconnecting", "code": 4003, "reason": "too many connections for this user"}
