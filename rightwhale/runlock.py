"""One writer per folder: a run folder (or identify's output, a catalogue) is owned by one process at a time.

Two trainings into one run folder would otherwise both exit 0 and leave a
mix of both. The owner writes FOLDER/.lock (pid, host, start time) with
O_EXCL, so of two starters exactly one wins; the other fails at once naming
the holder. A lock whose process is gone (same host, pid no longer alive)
is stale and taken over; a lock from another host is never guessed at.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from rightwhale import atomic
from rightwhale.errors import DataError

LOCK = ".lock"


class FolderInUse(DataError):
    """Another live process writes into this folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, another user's
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}                    # half-written by a writer killed mid-write: stale below


@contextlib.contextmanager
def hold(folder, what: str = "run folder"):
    """Own `folder` for the duration of the block, or raise FolderInUse naming the process that does."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not atomic.is_writer():         # process > 0 of a multi-host run writes nothing: process 0 holds it
        yield folder
        return
    path, me = folder / LOCK, {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:          # released meanwhile
                continue
            same_host = holder.get("host") == me["host"]
            if holder and (not same_host or _alive(holder["pid"])):
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
                raise FolderInUse(f"{folder}: this {what} is in use by process {holder['pid']} on "
                                  f"{holder.get('host', '?')} (since {since}); wait for it to finish or use "
                                  f"another folder (if that process is gone, delete {path})") from None
            with contextlib.suppress(FileNotFoundError):     # stale: its process is gone
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise FolderInUse(f"{folder}: could not take {path} (other processes keep taking it)")
    try:
        yield folder
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
