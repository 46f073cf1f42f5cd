"""One process at a time per stage's output: `persea harvest` on a cache, `persea distill`
on a run directory.

A second invocation would redo the first one's work (or write over it), so it is refused
with one line that says who holds the directory. The lock is `fcntl.flock` on a file in
the directory, which the kernel releases when its holder exits in any way (kill -9
included), so a dead holder never blocks a rerun. The file holds the holder's pid and host
while it runs and is emptied when it is done, so a finished directory's bytes do not
depend on who last ran in it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from persea.errors import PerseaError

LOCK_FILE = ".persea.lock"


@contextmanager
def stage_lock(directory: Path, command: str) -> Iterator[None]:
    """Hold `directory` for `command` (e.g. "persea harvest") or refuse at once."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
            raise PerseaError(f"{directory} is in use by another `{command}` "
                              f"({holder or 'a process that is starting'}); wait for it to "
                              "finish or stop it, then run this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
