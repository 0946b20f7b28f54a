"""Atomic writes: a reader never sees half a checkpoint, cache index or submission; and validated reads.

Write to a temporary file in the same directory, flush and fsync it, then
os.replace() it over the target (atomic on POSIX and Windows). `read_npz`
reads such an artefact back and turns a truncated, foreign or incomplete
file into one error naming it and the command that rebuilds it.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from rightwhale.core.errors import DataError

_UMASK = os.umask(0)
os.umask(_UMASK)


def is_writer() -> bool:
    """Whether this process writes files: on several hosts only process 0 does (the run folder is shared, the
    others compute the same results). Without JAX imported there is no multi-host run."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


@contextlib.contextmanager
def atomic_open(path, mode="wb", always: bool = False):
    """Open a temporary file beside `path`; on clean exit it replaces `path`. On a process other than 0 of a
    multi-host run, a sink that is thrown away (process 0 writes the same bytes), unless `always` (the image
    cache, which every host builds under a file lock)."""
    if not always and not is_writer():
        yield io.BytesIO() if "b" in mode else io.StringIO()
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes, always: bool = False) -> None:
    with atomic_open(path, "wb", always) as f:
        f.write(data)


def write_text(path, text: str, always: bool = False) -> None:
    with atomic_open(path, "w", always) as f:
        f.write(text)


def write_json(path, obj, always: bool = False) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n", always)


def write_csv(path, header, rows) -> None:
    """A CSV (Kaggle's layout: "\n" line ends) of a header and rows, written atomically."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    write_text(path, buf.getvalue())


def write_npz(path, **arrays) -> None:
    """Arrays as a compressed .npz (plain arrays only: np.load(allow_pickle=False) reads it)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def read_npz(path, need, rebuild: str) -> dict:
    """The arrays of an .npz artefact (no pickle), which must hold the keys `need`; DataError otherwise,
    naming the file and `rebuild` (the command that makes it again)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: missing; make it with `{rebuild}`") from None
    except Exception as e:          # zip, npy header and pickle errors alike
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); make it again with `{rebuild}`") from e
    missing = set(need) - arrays.keys()
    if missing:
        raise DataError(f"{path}: lacks {', '.join(sorted(missing))}; make it again with `{rebuild}`")
    return arrays
