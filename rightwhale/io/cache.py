"""Stage 0: decode every photo once into a memory-mapped NxN uint8 array (python -m rightwhale cache).

Decoding 3072x2048 JPEGs for every training sample would dominate. derived_dir/cache-<N>/ holds images.u8 (raw
N_img x N x N x 3) and index.json (names, original sizes, data fingerprint, a stamp of the image files' sizes and
modification times, failed images). A build fills
images.u8.partial and saves progress.json every few hundred images, so a killed build resumes where it stopped;
the index is written last, and only then is the cache valid.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rightwhale.core.atomic import atomic_open, write_json
from rightwhale.core.errors import DataError
from rightwhale.io.data_dirs import derived_dir, resolve_data_dir
from rightwhale.io.formats import Problem, report_problems, summarize_problems
from rightwhale.io.images import BadImage, photo_size, read_image
from rightwhale.io.split import fingerprint
from rightwhale.io.survey import load_survey

FORMAT = 2
INDEX, DATA, PARTIAL, PROGRESS = "index.json", "images.u8", "images.u8.partial", "progress.json"
WORKER_CHUNK = 8          # images per task sent to a decoding process
SAVE_SECONDS = 10.0       # progress is saved at least this often during a build


def cache_dir(data_dir, size: int) -> Path:
    return derived_dir(data_dir) / f"cache-{size}"


def rescale_points(xy, scale):
    """Points after resizing an image by `scale` (sx, sy), pixel centres at integers."""
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5


@dataclass(frozen=True)
class ImageCache:
    """Cached images with the geometry to move annotations between photo and cache pixels. Points use the
    pixel-centre convention (pixel i covers [i - 0.5, i + 0.5]): x_cache = (x_photo + 0.5) * sx - 0.5 with
    sx = N / photo width. Points are (B, ..., 2) for a list of B names, or (..., 2) for one name."""
    root: Path
    size: int
    images: np.ndarray        # read-only memmap, (N_img, size, size, 3) uint8
    names: list[str]
    sizes: np.ndarray         # (N_img, 2) original (w, h)
    fingerprint: str
    failed: dict[str, str]    # image -> why it could not be decoded

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def index(self, name: str) -> int:
        if name not in self._positions:
            why = f"it failed to decode: {self.failed[name]}" if name in self.failed else \
                "it was not in the data when the cache was built (python -m rightwhale cache)"
            raise DataError(f"{self.root}: {name} is not in the image cache; {why}")
        return self._positions[name]

    def scale(self, name: str) -> tuple[float, float]:
        """(sx, sy): cache pixels per photo pixel."""
        w, h = self.sizes[self.index(name)]
        return self.size / float(w), self.size / float(h)

    def _scaled(self, names, values) -> tuple[np.ndarray, np.ndarray]:
        """`values` as float64, and the scales of `names` shaped to broadcast against them."""
        values = np.asarray(values, dtype=np.float64)
        if isinstance(names, str):
            return values, np.asarray(self.scale(names))
        s = self.size / self.sizes[[self.index(n) for n in names]].astype(np.float64)
        return values, s.reshape(len(s), *([1] * (values.ndim - 2)), 2)

    def to_cache(self, names, xy) -> np.ndarray:
        return rescale_points(*self._scaled(names, xy))

    def to_photo(self, names, xy) -> np.ndarray:
        xy, s = self._scaled(names, xy)
        return rescale_points(xy, 1 / s)

    def boxes_to_cache(self, names, boxes) -> np.ndarray:
        """Boxes (x, y, w, h): the corner moves like a point, the size scales."""
        boxes, s = self._scaled(names, boxes)
        return np.concatenate([(boxes[..., :2] + 0.5) * s - 0.5, boxes[..., 2:] * s], axis=-1)

    def boxes_to_photo(self, names, boxes) -> np.ndarray:
        boxes, s = self._scaled(names, boxes)
        return np.concatenate([(boxes[..., :2] + 0.5) / s - 0.5, boxes[..., 2:] / s], axis=-1)


def _read_index(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / INDEX).read_text())
        return meta if meta.get("format") == FORMAT else None
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise DataError(f"{folder / INDEX}: malformed cache index ({e}); delete {folder} and rebuild") from e


def files_stamp(survey, names: list[str]) -> str:
    """sha256 of each image's size and modification time: a photo replaced under the same name makes the
    cache stale even when train.csv is unchanged."""
    digest = hashlib.sha256()
    for name in names:
        try:
            st = survey.image_path(name).stat()
            digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{name}\tmissing\n".encode())
    return digest.hexdigest()


def _plan(survey, size: int) -> dict:
    """What a cache of `survey` at `size` holds: its index.json, less the per-image results."""
    names = list(dict.fromkeys([*survey.train, *survey.test]))
    return {"format": FORMAT, "size": size, "fingerprint": fingerprint(survey), "names": names,
            "files": files_stamp(survey, names)}


def _is_current(meta: dict | None, plan: dict) -> bool:
    return (meta is not None and (meta["fingerprint"], meta.get("files")) == (plan["fingerprint"], plan["files"])
            and set(meta["names"]) | set(meta["failed"]) == set(plan["names"]))


def open_cache(data_dir, size: int, survey=None) -> ImageCache:
    """Open a built cache; with `survey`, also refuse one built for other data."""
    folder = cache_dir(data_dir, size)
    meta = _read_index(folder)
    command = f"python -m rightwhale cache --data-dir {data_dir} --size {size}"
    if meta is None:
        raise DataError(f"{folder}: no image cache of size {size} for {data_dir}; build it with: {command}")
    if survey is not None and not _is_current(meta, _plan(survey, size)):
        raise DataError(f"{folder}: the image cache was built for different data (or image files) than "
                        f"{survey.root}; rebuild it with: {command}")
    shape = (len(meta["names"]), size, size, 3)
    if (folder / DATA).stat().st_size != int(np.prod(shape)):
        raise DataError(f"{folder / DATA}: wrong size for {shape[0]} images of {size}x{size}; delete {folder} "
                        f"and rebuild with: {command}")
    return ImageCache(root=folder, size=size, names=meta["names"],
                      images=np.memmap(folder / DATA, np.uint8, "r", shape=shape),
                      sizes=np.asarray(meta["sizes"], dtype=np.int64).reshape(-1, 2),
                      fingerprint=meta["fingerprint"], failed=meta["failed"])


# --- building -----------------------------------------------------------------

def _decode_one(target: np.ndarray, i: int, path: Path, size: int):
    """Decode image i into target[i]; returns (i, [w, h]) or (i, reason)."""
    try:
        wh = list(photo_size(path))
        target[i] = read_image(path, size)
        return i, wh
    except BadImage as e:
        return i, str(e).split(": ", 1)[-1]


def _decode_chunk(partial: str, shape, jobs, size: int):
    """Runs in a worker process: decode straight into the shared file."""
    target = np.memmap(partial, np.uint8, "r+", shape=shape)
    results = [_decode_one(target, i, path, size) for i, path in jobs]
    target.flush()   # on disk before the parent marks these images done
    return results


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave as soon as the building process is gone (killed), instead of decoding the
    rest of a chunk nobody will read."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _decoded(target, jobs, size, workers):
    """Yield (i, size or reason) as images finish, in-process or over a process pool."""
    if workers <= 1:
        yield from (_decode_one(target, i, path, size) for i, path in jobs)
        return
    # spawn, not fork: the caller may have started JAX's threads.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        futures = [pool.submit(_decode_chunk, target.filename, target.shape, jobs[k:k + WORKER_CHUNK], size)
                   for k in range(0, len(jobs), WORKER_CHUNK)]
        for future in as_completed(futures):
            yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _resume_sizes(folder: Path, plan: dict):
    """Per-image [w, h], None where not done, of an interrupted build of the same plan; None if there is none."""
    try:
        state = json.loads((folder / PROGRESS).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    partial = folder / PARTIAL
    fits = partial.is_file() and partial.stat().st_size == len(plan["names"]) * plan["size"] ** 2 * 3
    return state["sizes"] if fits and all(state.get(k) == v for k, v in plan.items()) else None


def _finish(folder: Path, target: np.memmap, plan: dict, sizes: list, failed: dict) -> None:
    """Drop failed slots, publish images.u8, then the index (the cache is valid from here)."""
    good = [i for i, wh in enumerate(sizes) if wh is not None]
    if len(good) < len(sizes):
        with atomic_open(folder / PARTIAL, always=True) as f:
            for k in range(0, len(good), 256):
                f.write(target[good[k:k + 256]].tobytes())
    os.replace(folder / PARTIAL, folder / DATA)
    write_json(folder / INDEX, {**plan, "names": [plan["names"][i] for i in good],
                                "sizes": [sizes[i] for i in good], "failed": failed}, always=True)
    (folder / PROGRESS).unlink(missing_ok=True)


def build_cache(data_dir, size: int, workers: int | None = None, progress: bool = True, *,
                save_every: int = 256, on_progress=None) -> ImageCache:
    """Cache every train and test image at size x size; resumes an interrupted build, reuses a current cache.

    `on_progress(done, total)` is called after each image (tests use it to interrupt a build).
    """
    if size < 1:
        raise ValueError(f"cache size must be positive, got {size}")
    survey = load_survey(data_dir)
    plan = _plan(survey, size)
    names = plan["names"]
    folder = cache_dir(data_dir, size)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # one builder per cache; others wait, then reuse
        meta = _read_index(folder)
        if _is_current(meta, plan):        # reused: its failures are still skipped, so still reported
            report_problems([Problem(str(survey.image_path(n)), None, f"{why} (recorded when {folder} was built)",
                                     "unreadable image") for n, why in meta["failed"].items()])
            return open_cache(data_dir, size)
        resumed = _resume_sizes(folder, plan)   # images that failed before are tried again
        if resumed is None:
            (folder / INDEX).unlink(missing_ok=True)
        sizes = [None] * len(names) if resumed is None else resumed
        target = np.memmap(folder / PARTIAL, np.uint8, "w+" if resumed is None else "r+",
                           shape=(len(names), size, size, 3))
        jobs = [(i, survey.image_path(n)) for i, n in enumerate(names) if sizes[i] is None]
        failed: dict[str, str] = {}
        if workers is None:
            workers = max(1, min(os.cpu_count() or 1, len(jobs) // 64))

        def save():
            target.flush()                    # pixels reach the file before the marker
            write_json(folder / PROGRESS, {**plan, "sizes": sizes}, always=True)

        saved, saved_at = len(names) - len(jobs), time.monotonic()      # images done at the last save, and when
        with tqdm(total=len(names), initial=saved, unit="img", disable=not progress, desc=f"cache {size}px") as bar:
            for done, (i, result) in enumerate(_decoded(target, jobs, size, workers), start=saved + 1):
                if isinstance(result, list):
                    sizes[i] = result
                else:
                    failed[names[i]] = result
                bar.update()
                if done - saved >= save_every or time.monotonic() - saved_at > SAVE_SECONDS:
                    save()
                    saved, saved_at = done, time.monotonic()
                if on_progress is not None:
                    on_progress(done, len(names))
        save()
        problems = [Problem(str(survey.image_path(n)), None, why, "unreadable image") for n, why in failed.items()]
        if len(failed) == len(names):
            raise DataError(f"{data_dir}: no image could be decoded.\n" + summarize_problems(problems, limit=3))
        _finish(folder, target, plan, sizes, failed)
        report_problems(problems)       # its own; the data's problems are the caller's to report (once)
        return open_cache(data_dir, size)


class Rows:
    """Rows `index` of a (memory-mapped) array, gathered only when a batch asks for them."""

    def __init__(self, array, index):
        self.array, self.index = array, np.asarray(index, np.int64)
        self.shape = (len(self.index), *array.shape[1:])
        self.dtype, self.ndim = array.dtype, array.ndim

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.array[self.index[i]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rightwhale cache",
        description="Decode every train and test photo of a data directory once into a memory-mapped size x size "
                    "uint8 cache (aspect not preserved). An interrupted build resumes where it stopped.")
    parser.add_argument("--data-dir", help="Kaggle-layout data directory (default: the embedded synthetic survey, "
                        "$RIGHTWHALE_DATA or ./data/synthetic-survey)")
    parser.add_argument("--size", type=int, default=256,
                        help="side of the square cached images in pixels (default: 256)")
    parser.add_argument("--workers", type=int, help="decoding processes (default: one per core, 1 for small data)")
    args = parser.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
        start = time.monotonic()
        problems = load_survey(data_dir).problems
        report_problems(problems)
        cache = build_cache(data_dir, args.size, args.workers)
        skipped = len(problems)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(cache.names)} images at {args.size}x{args.size} in {cache.root} "
          f"({len(cache.failed)} failed to decode, {skipped} data problem(s) skipped before decoding, "
          f"{time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
