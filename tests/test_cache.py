"""The decode-once image cache (rightwhale.io.cache)."""
import json
import shutil

import numpy as np
import pytest
from test_data import LABELS, no_project_annotations, write_jpeg, write_survey  # noqa: F401

from rightwhale.core.errors import DataError
from rightwhale.io import cache as cache_mod
from rightwhale.io.cache import build_cache, open_cache
from rightwhale.io.images import read_image
from rightwhale.io.survey import load_survey

TEST = ["w_10.jpg", "w_11.jpg", "w_12.jpg", "w_13.jpg"]
N = 16


@pytest.fixture
def survey_dir(tmp_path):
    return write_survey(tmp_path / "survey", LABELS, test=TEST)


@pytest.fixture
def decoded(monkeypatch):
    """Names of the photos the (in-process) cache build decodes."""
    names = []

    def counting_read(path, size=None):
        names.append(path.name)
        return read_image(path, size)
    monkeypatch.setattr(cache_mod, "read_image", counting_read)
    return names


def test_cache_holds_every_image_as_read_image_gives_it(survey_dir, decoded):
    cache = build_cache(survey_dir, N, workers=1, progress=False)
    names = [*LABELS, *TEST]
    assert cache.names == names and cache.images.shape == (8, N, N, 3)
    assert cache.images.dtype == np.uint8 and not cache.images.flags.writeable
    for i, name in enumerate(names):
        np.testing.assert_array_equal(cache.images[i], read_image(survey_dir / "imgs" / name, N))
    assert cache.sizes.tolist() == [[40, 30]] * 8 and cache.failed == {}
    assert cache.index("w_11.jpg") == 5
    assert sorted(decoded) == sorted(names)
    again = build_cache(survey_dir, N, workers=1, progress=False)     # a current cache is reused
    assert len(decoded) == 8 and again.names == names
    assert open_cache(survey_dir, N, load_survey(survey_dir)).names == names


def test_parallel_build_equals_serial_build(survey_dir, tmp_path):
    serial = np.array(build_cache(survey_dir, N, workers=1, progress=False).images)
    other = shutil.copytree(survey_dir, tmp_path / "copy",
                            ignore=shutil.ignore_patterns(".rightwhale"))
    parallel = build_cache(other, N, workers=2, progress=False)
    np.testing.assert_array_equal(parallel.images, serial)


def test_interrupted_build_resumes_without_redoing_work(survey_dir, decoded):
    class Killed(Exception):
        pass

    def kill_at_five(done, total):
        if done == 5:
            raise Killed
    with pytest.raises(Killed):
        build_cache(survey_dir, N, workers=1, progress=False, save_every=2,
                    on_progress=kill_at_five)
    folder = cache_mod.cache_dir(survey_dir, N)
    assert not (folder / "index.json").exists()                      # not valid yet
    command = f"python -m rightwhale cache --data-dir {survey_dir} --size {N}"
    with pytest.raises(DataError, match=command):
        open_cache(survey_dir, N)
    assert decoded[:5] == [*LABELS, "w_10.jpg"]
    decoded.clear()
    resumed = np.array(build_cache(survey_dir, N, workers=1, progress=False).images)
    assert decoded == ["w_10.jpg", *TEST[1:]]                        # progress was saved at 4
    assert not (folder / "progress.json").exists()
    shutil.rmtree(folder)
    clean = build_cache(survey_dir, N, workers=1, progress=False)
    np.testing.assert_array_equal(clean.images, resumed)


def test_bad_images_are_skipped_and_reported(survey_dir, capsys):
    photo = survey_dir / "imgs" / "w_2.jpg"
    photo.write_bytes(photo.read_bytes()[:-50])
    cache = build_cache(survey_dir, N, workers=1, progress=False)
    assert "w_2.jpg" not in cache.names and len(cache.names) == 7
    assert cache.failed == {"w_2.jpg": "truncated JPEG (no end-of-image marker; the file was cut "
                                       "short, re-download or re-copy it)"}
    np.testing.assert_array_equal(cache.images[cache.index("w_3.jpg")],
                                  read_image(survey_dir / "imgs" / "w_3.jpg", N))
    err = capsys.readouterr().err
    assert "1 x unreadable image" in err and err.count(f"{photo}: truncated JPEG") == 1     # said once
    with pytest.raises(DataError, match="w_2.jpg is not in the image cache; it failed to decode"):
        cache.index("w_2.jpg")
    index = json.loads((cache.root / "index.json").read_text())
    assert index["failed"] == cache.failed and len(index["sizes"]) == 7
    # every later command that reuses the cache still skips w_2.jpg, and says so
    build_cache(survey_dir, N, workers=1, progress=False)
    err = capsys.readouterr().err
    assert f"{photo}: truncated JPEG" in err and "recorded when" in err


def test_stale_cache_is_refused_then_rebuilt(survey_dir):
    build_cache(survey_dir, N, workers=1, progress=False)
    write_jpeg(survey_dir / "imgs" / "w_20.jpg")
    with open(survey_dir / "train.csv", "a") as f:
        f.write("w_20.jpg,whale_a\n")
    with pytest.raises(DataError, match="built for different data.*rebuild it with"):
        open_cache(survey_dir, N, load_survey(survey_dir))
    assert "w_20.jpg" in build_cache(survey_dir, N, workers=1, progress=False).names


def test_photo_replaced_under_the_same_name_makes_the_cache_stale(survey_dir):
    before = np.array(build_cache(survey_dir, N, workers=1, progress=False).images)
    write_jpeg(survey_dir / "imgs" / "w_3.jpg", seed=7)       # same name, same train.csv, other pixels
    with pytest.raises(DataError, match="built for different data"):
        open_cache(survey_dir, N, load_survey(survey_dir))
    after = build_cache(survey_dir, N, workers=1, progress=False)
    i = after.index("w_3.jpg")
    np.testing.assert_array_equal(after.images[i], read_image(survey_dir / "imgs" / "w_3.jpg", N))
    assert not np.array_equal(after.images[i], before[i])


def test_point_and_box_mapping(survey_dir):
    cache = build_cache(survey_dir, N, workers=1, progress=False)
    assert cache.scale("w_1.jpg") == (N / 40, N / 30)
    # Pixel-centre convention: the photo's outer edges land on the cache's outer edges.
    corners = np.array([[-0.5, -0.5], [39.5, 29.5]])
    np.testing.assert_allclose(cache.to_cache("w_1.jpg", corners),
                               [[-0.5, -0.5], [N - 0.5, N - 0.5]])
    names = ["w_1.jpg", "w_12.jpg"]
    xy = np.random.default_rng(0).uniform(0, 30, (2, 5, 2))
    np.testing.assert_allclose(cache.to_photo(names, cache.to_cache(names, xy)), xy)
    np.testing.assert_allclose(cache.to_cache(names, xy)[1], cache.to_cache("w_12.jpg", xy[1]))
    boxes = np.array([[4.0, 3.0, 20.0, 10.0], [0.0, 0.0, 40.0, 30.0]])
    in_cache = cache.boxes_to_cache(names, boxes)
    # The far corner moves exactly like a point.
    np.testing.assert_allclose(in_cache[:, :2] + in_cache[:, 2:],
                               cache.to_cache(names, boxes[:, :2] + boxes[:, 2:]))
    np.testing.assert_allclose(cache.boxes_to_photo(names, in_cache), boxes)


def test_command_line(survey_dir, tmp_path, capsys):
    assert cache_mod.main(["--data-dir", str(survey_dir), "--size", "8", "--workers", "1"]) == 0
    assert "8 images at 8x8" in capsys.readouterr().out
    assert cache_mod.main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "data directory does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cache_mod.main(["--help"])
    assert exit_.value.code == 0 and "--workers" in capsys.readouterr().out


def test_decoding_workers_leave_when_their_parent_is_killed(tmp_path):
    """The pool's workers watch their parent: killed mid-build, it leaves no worker decoding on."""
    import os
    import signal
    import subprocess
    import sys
    import time
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from rightwhale.io.cache import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'),\n"
        "                               initializer=_exit_with_parent, initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 60)\n"
        "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent by 10 s")
