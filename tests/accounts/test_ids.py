"""Ids (persea.accounts.types.random_hex, new_id): random, never handed out twice, also not
by a forked child and its parent."""

from __future__ import annotations

import os
import threading

from persea.accounts.types import new_id, random_hex


def test_ids_are_unique_across_threads_and_pool_refills():
    got: list[str] = []

    def draw():
        got.extend(random_hex(12) for _ in range(2000))  # 24 KB: several refills each

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8000 and len(set(got)) == 8000
    assert all(len(h) == 24 and int(h, 16) >= 0 for h in got)
    assert new_id("use").startswith("use_") and len(new_id("use")) == 24


def test_a_forked_child_draws_other_bytes_than_its_parent():
    random_hex(1)  # the pool holds bytes the child would copy
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running the test session's exit
        os.write(write, " ".join(random_hex(8) for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 1 << 16).decode().split()
    os.close(read)
    parent = [random_hex(8) for _ in range(50)]
    assert status == 0 and len(child) == 50
    assert not set(child) & set(parent)
