"""One writer per folder: a run folder (or identify's output, a catalogue) is owned by one process at a time.

Two trainings into one run folder would otherwise both exit 0 and leave a
mix of both. The owner holds an exclusive flock on FOLDER/.lock for as long
as it writes, so of two starters exactly one wins and the kernel releases
the lock when its holder exits or is killed: no stale lock to guess about,
no reused pid to mistake. The file also names the holder (pid, host, start
time) for the message the other one gets. On several hosts only process 0
takes it (the others write nothing); a refusal there is not seen by them.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rightwhale.core import atomic
from rightwhale.core.errors import DataError

LOCK = ".lock"


class FolderInUse(DataError):
    """Another live process writes into this folder."""


@contextlib.contextmanager
def hold(folder, what: str = "run folder"):
    """Own `folder` for the duration of the block, or raise FolderInUse naming the process that does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not atomic.is_writer():         # process > 0 of a multi-host run writes nothing: process 0 holds it
        yield folder
        return
    path = folder / LOCK
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                holder = json.loads(f.read())
            except ValueError:
                holder = {}
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
            raise FolderInUse(f"{folder}: this {what} is in use by process {holder.get('pid', '?')} on "
                              f"{holder.get('host', '?')} (since {since}); wait for it to finish or use "
                              "another folder") from None
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, f)
        f.flush()
        yield folder          # the lock goes with the file descriptor: at the end of the block, or at death
