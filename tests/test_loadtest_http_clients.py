"""The HTTP fallback load clients count the messages of their own run only."""

from loadtest.http_clients import Stats, marks


def _notification(seq: int, run: str) -> dict:
    return {"type": "notification", "channel": "user:1", "offset": seq + 1,
            "payload": {"id": "n", "action": {"type": "loadtest", "payload": {"seq": seq, "t": 1.0, "run": run}}}}


def test_marks_read_the_sequence_time_and_run_of_a_notification_or_a_payload():
    assert marks(_notification(7, "lt1")) == (7, 1.0, "lt1")
    assert marks({"type": "message", "payload": {"seq": 3, "t": 2.5, "run": "lt2"}}) == (3, 2.5, "lt2")
    assert marks({"type": "unread_count", "payload": {"count": 4}}) is None


def test_a_message_left_over_from_an_earlier_run_is_not_counted_as_this_runs():
    stats = Stats("lt-now")
    stats.message(_notification(1, "lt-now"), 10.0)
    stats.message(_notification(1, "lt-earlier"), 11.0)  # same seq, another run: not a duplicate
    assert stats.received == [(1, 1.0, 10.0)]
    assert stats.foreign == 1


def test_without_a_run_every_load_message_counts():
    stats = Stats()
    stats.message(_notification(1, "a"), 10.0)
    stats.message(_notification(2, "b"), 10.0)
    assert [seq for seq, _, _ in stats.received] == [1, 2]
    assert stats.foreign == 0
