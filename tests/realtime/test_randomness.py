"""realtime.storage.randomness: random ids from a buffer, unique, well-formed, and never shared with a forked child."""

from __future__ import annotations

import os
import threading
import uuid

from realtime.storage import randomness


def test_uuids_are_version_4_as_uuid4_writes_them_and_tokens_are_hex():
    ids = [randomness.uuid4_str() for _ in range(3000)]  # several refills of the buffer

    assert len(set(ids)) == len(ids)
    for value in ids[:200]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    token = randomness.token_hex(16)
    assert len(token) == 32 and int(token, 16) >= 0


def test_threads_never_get_the_same_bytes():
    seen: list[str] = []

    def take() -> None:
        seen.extend(randomness.token_hex(8) for _ in range(2000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(seen) == 8000 and len(set(seen)) == 8000


def test_a_forked_child_does_not_hand_out_its_parent_s_next_bytes():
    randomness.token_hex(8)  # the buffer holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, ",".join(randomness.token_hex(8) for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 1000).decode().split(",")
    os.waitpid(pid, 0)
    os.close(read)

    parent = [randomness.token_hex(8) for _ in range(3)]
    assert not set(child) & set(parent)
