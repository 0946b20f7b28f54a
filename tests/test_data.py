"""Data directory reading, validation and decoding (rightwhale.io.survey, rightwhale.io.images).

Data directories are written by hand here (a few 40x30 JPEGs), so these
tests need neither the synthetic survey generator nor ../shared.
"""
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rightwhale.core.errors import DataError
from rightwhale.io import data_dirs, formats
from rightwhale.io import survey as data
from rightwhale.io.images import BadImage, check_image, photo_size, read_bounded, read_image
from rightwhale.io.survey import Survey, load_survey

W, H = 40, 30


def write_jpeg(path, w=W, h=H, seed=0, mode="RGB"):
    """A smooth random-ish picture, so resizing has something to average."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    np.full_like(xx, rng.integers(0, 256))], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).convert(mode).save(path, "JPEG", quality=95)
    return path


def sloth(entries, cls="point"):
    """Sloth JSON text for {image: (x, y)} or {image: (x, y, w, h)}."""
    keys = ("x", "y") if cls == "point" else ("x", "y", "width", "height")
    return json.dumps([{"filename": name, "class": "image",
                        "annotations": [{"class": cls, **dict(zip(keys, values))}]}
                       for name, values in entries.items()], indent=4)


def write_survey(root, labels, test=(), points=True, boxes=False, classes=None):
    """A Kaggle-layout directory: one 40x30 JPEG per image, train.csv and friends."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for k, name in enumerate([*labels, *test]):
        write_jpeg(root / "imgs" / name, seed=k)
    (root / "train.csv").write_text(
        "Image,whaleID\n" + "".join(f"{n},{w}\n" for n, w in labels.items()))
    if test:
        classes = classes or sorted(set(labels.values()))
        (root / "sample_submission.csv").write_text(
            ",".join(["Image", *classes]) + "\n"
            + "".join(f"{n}," + ",".join(["0.1"] * len(classes)) + "\n" for n in test))
    if points:
        bonnets = {n: (10.0 + i, 5.0) for i, n in enumerate(labels)}
        (root / "points1.json").write_text(sloth(bonnets))
        blowheads = {n: (20.0, 15.0 + i) for i, n in enumerate(labels)}
        (root / "points2.json").write_text(sloth(blowheads))
    if boxes:
        (root / "head_boxes.json").write_text(sloth({n: (2, 3, 20, 10) for n in labels}, "rect"))
    return root


LABELS = {"w_1.jpg": "whale_b", "w_2.jpg": "whale_a", "w_3.jpg": "whale_b", "w_4.jpg": "whale_c"}


@pytest.fixture(autouse=True)
def no_project_annotations(tmp_path, monkeypatch):
    """The project's annotations/ folder must not leak into hand-made surveys."""
    monkeypatch.setattr(data, "PROJECT_ANNOTATIONS", tmp_path / "project-annotations")


def messages(survey, kind):
    return [str(p) for p in survey.problems if p.kind == kind]


def test_clean_survey_reads_everything(tmp_path):
    write_survey(tmp_path, LABELS, test=["w_9.jpg", "w_8.jpg"], boxes=True,
                 classes=["whale_c", "whale_a", "whale_b"])
    s = load_survey(tmp_path, check_images=True)
    assert s.problems == []
    assert list(s.train) == list(LABELS) and s.test == ["w_9.jpg", "w_8.jpg"]
    assert s.classes == ["whale_c", "whale_a", "whale_b"]         # submission column order
    assert s.label("w_2.jpg") == 1
    assert s.labels_array(["w_1.jpg", "w_4.jpg"]).tolist() == [2, 0]
    assert s.labels_array([]).dtype == np.int32
    np.testing.assert_array_equal(s.points("w_2.jpg"), [[11.0, 5.0], [20.0, 16.0]])
    np.testing.assert_array_equal(s.boxes["w_3.jpg"], [2, 3, 20, 10])
    assert s.points("w_9.jpg") is None
    assert s.image_path("w_1.jpg") == tmp_path / "imgs" / "w_1.jpg"
    with pytest.raises(DataError, match="no label"):
        s.label("w_9.jpg")


def test_classes_are_sorted_whales_without_submission(tmp_path):
    s = load_survey(write_survey(tmp_path, LABELS, points=False))
    assert s.classes == ["whale_a", "whale_b", "whale_c"] and s.test == []
    assert s.bonnet == {} and s.problems == []


def test_missing_and_duplicate_rows(tmp_path):
    write_survey(tmp_path, LABELS, points=False)
    with open(tmp_path / "train.csv", "a") as f:
        f.write("w_404.jpg,whale_a\n"       # line 6: no such photo
                "w_1.jpg,whale_b\n"         # line 7: repeats line 2
                "w_2.jpg,whale_z\n"         # line 8: contradicts line 3
                "w_3.jpg\n")                # line 9: one field
    s = load_survey(tmp_path)
    assert list(s.train) == ["w_1.jpg", "w_3.jpg", "w_4.jpg"]
    csv_path = tmp_path / "train.csv"
    assert messages(s, "missing image") == [
        f"{csv_path}:6: w_404.jpg is listed but imgs/w_404.jpg does not exist"]
    assert messages(s, "duplicate row") == [f"{csv_path}:7: w_1.jpg repeats line 2; kept the first"]
    assert messages(s, "conflicting labels") == [
        f"{csv_path}:3: w_2.jpg is labelled whale_a on line 3, whale_z on line 8; dropped it"]
    assert messages(s, "malformed row") == [f"{csv_path}:9: expected 2 fields, got 1"]


def test_a_malformed_csv_row_is_skipped_and_the_rest_load(tmp_path):
    csv_path = write_survey(tmp_path, LABELS, points=False) / "train.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].replace(",", ',"')              # line 3, w_2.jpg: a quote never closed
    csv_path.write_text("\n".join(lines) + "\n")
    s = load_survey(tmp_path)
    assert list(s.train) == ["w_1.jpg", "w_3.jpg", "w_4.jpg"]
    assert messages(s, "malformed row") == [f"{csv_path}:3: malformed CSV (unexpected end of data)"]


@pytest.mark.parametrize("name,reason", [("../w_1.jpg", "not a plain file name"),
                                         ("/etc/passwd", "absolute path"),
                                         ("imgs/w_1.jpg", "not a plain file name"),
                                         ("..\\w_1.jpg", "not a plain file name"),
                                         ("..", "not a plain file name")])
def test_names_leaving_the_directory_are_refused(tmp_path, name, reason):
    write_survey(tmp_path, LABELS, points=False)
    with open(tmp_path / "train.csv", "a") as f:
        f.write(f"{name},whale_a\n")
    (tmp_path / "points1.json").write_text(sloth({name: (1.0, 1.0), "w_1.jpg": (1.0, 1.0)}))
    s = load_survey(tmp_path)
    assert list(s.train) == list(LABELS) and list(s.bonnet) == ["w_1.jpg"]
    assert messages(s, "unsafe file name") == [
        f"{tmp_path / 'train.csv'}:6: file name {name!r} tries to leave the data directory "
        f"({reason})",
        f"{tmp_path / 'points1.json'}:2: file name {name!r} tries to leave the data directory "
        f"({reason})"]


def test_bad_annotations_are_skipped_one_by_one(tmp_path):
    write_survey(tmp_path, LABELS, boxes=True)
    entries = json.loads(sloth({"w_1.jpg": (1.0, 2.0), "w_2.jpg": (39.4, 29.4),
                                "w_3.jpg": (40.0, 5.0), "w_4.jpg": (5.0, -1.0),
                                "w_77.jpg": (3.0, 3.0), "w_5.jpg": (1.0, 1.0)}))
    entries[5]["filename"] = "w_1.jpg"                                   # repeated entry
    entries.append({"filename": "w_2.jpg"})                              # no annotations
    (tmp_path / "points1.json").write_text(json.dumps(entries, indent=1))
    (tmp_path / "points2.json").write_text(json.dumps([
        {"filename": "w_1.jpg", "annotations": [{"class": "point", "x": float("nan"), "y": 1}]},
        {"filename": "w_2.jpg", "annotations": [{"class": "point", "x": "12", "y": 1}]},
        {"filename": "w_3.jpg", "annotations": [{"class": "point", "x": True, "y": 1}]},
        {"filename": "w_4.jpg", "annotations": [{"class": "point", "x": 1, "y": 1},
                                                {"class": "point", "x": 2, "y": 2}]}]))
    (tmp_path / "head_boxes.json").write_text(sloth({"w_1.jpg": (1, 1, 0, 5),
                                                     "w_2.jpg": (30, 1, 15, 5),
                                                     "w_3.jpg": (1, 1, 38, 28)}, "rect"))
    s = load_survey(tmp_path)
    p1, p2, hb = (str(tmp_path / f) for f in ("points1.json", "points2.json", "head_boxes.json"))
    assert list(s.bonnet) == ["w_1.jpg", "w_2.jpg"]      # (39.4, 29.4) is inside a 40x30 photo
    assert s.blowhead == {} and list(s.boxes) == ["w_3.jpg"]
    assert messages(s, "point outside the photo") == [
        f"{p1}:24: w_3.jpg: point [40.0, 5.0] lies outside the 40x30 photo",
        f"{p1}:35: w_4.jpg: point [5.0, -1.0] lies outside the 40x30 photo"]
    assert messages(s, "annotation for an image not in this directory") == [
        f"{p1}:46: w_77.jpg: annotation for an image not in this directory"]
    assert messages(s, "duplicate row") == [
        f"{p1}:57: w_1.jpg repeats the entry on line 2; kept the first"]
    assert messages(s, "malformed entry") == [
        f"{p1}:68: entry needs a 'filename' string and an 'annotations' list",
        f"{p2}:1: w_4.jpg: expected one 'point' annotation, found 2"]
    assert messages(s, "bad value") == [
        f"{p2}:1: w_1.jpg: x=nan is not a finite number",
        f"{p2}:1: w_2.jpg: x='12' is not a finite number",
        f"{p2}:1: w_3.jpg: x=True is not a finite number",
        f"{hb}:2: w_1.jpg: box width and height must be positive, got [0, 5]"]
    assert messages(s, "box outside the photo") == [
        f"{hb}:15: w_2.jpg: box [30.0, 1.0, 15.0, 5.0] lies outside the 40x30 photo"]


def test_annotations_for_absent_images_are_summarised(tmp_path, capsys):
    """The real points files cover 4544 photos; a folder holding two must stay readable."""
    write_survey(tmp_path, LABELS)
    absent = {f"w_{k}.jpg": (1.0, 1.0) for k in range(100, 600)}
    (tmp_path / "points1.json").write_text(sloth({**absent, "w_1.jpg": (3.0, 4.0)}))
    s = load_survey(tmp_path)
    assert len(s.problems) == 500 and list(s.bonnet) == ["w_1.jpg"]
    formats.report_problems(s.problems, limit=3)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "500 data problem(s); the items were skipped:"
    assert err[1] == "  500 x annotation for an image not in this directory"
    assert err[2].endswith(
        "points1.json:2: w_100.jpg: annotation for an image not in this directory")
    assert err[-1] == "    ... and 497 more" and len(err) == 6
    formats.report_problems([])
    assert capsys.readouterr().err == ""


def test_project_annotations_are_the_fallback_of_a_kaggle_download(tmp_path):
    write_survey(tmp_path / "d", LABELS, test=["w_9.jpg"], points=False)       # photos and a sample submission
    data.PROJECT_ANNOTATIONS.mkdir()
    (data.PROJECT_ANNOTATIONS / "points1.json").write_text(sloth({"w_2.jpg": (7.0, 8.0)}))
    assert load_survey(tmp_path / "d").bonnet["w_2.jpg"].tolist() == [7.0, 8.0]
    (tmp_path / "d" / "points1.json").write_text(sloth({"w_2.jpg": (1.0, 2.0)}))
    assert load_survey(tmp_path / "d").bonnet["w_2.jpg"].tolist() == [1.0, 2.0]
    # a folder of crops with Kaggle-like names (no sample submission, or cut by rightwhale) keeps its own
    write_survey(tmp_path / "crops", LABELS, points=False)
    assert "w_2.jpg" not in load_survey(tmp_path / "crops").bonnet
    write_survey(tmp_path / "cut", LABELS, test=["w_9.jpg"], points=False)
    (tmp_path / "cut" / "source.json").write_text('{"survey": "elsewhere"}')
    assert "w_2.jpg" not in load_survey(tmp_path / "cut").bonnet


def test_the_shipped_real_points_load():
    """annotations/points1.json and points2.json: Anil Thomas's bonnet and blowhead points of the 4,544
    Kaggle training photos (Apache-2.0, annotations/LICENSE-points)."""
    from rightwhale.io.formats import read_sloth
    folder = Path(__file__).resolve().parents[1] / "annotations"
    read = {}
    for name in ("points1.json", "points2.json"):
        problems, listed = [], {e["filename"] for e in json.loads((folder / name).read_text())}
        entries = read_sloth(folder / name, "point", ("x", "y"), listed, problems)
        assert len(entries) == 4544 and not problems
        read[name] = {n: values for n, (_, values) in entries.items()}
    assert read["points1.json"].keys() == read["points2.json"].keys()
    points = np.array([v for r in read.values() for v in r.values()])
    # Kaggle's training photos are at most 4992 x 3328 (most 3072 x 2048)
    assert np.isfinite(points).all() and (points >= 0).all() and (points[:, 0] < 4992).all() and \
        (points[:, 1] < 3328).all()
    for photo in ("w_2234.jpg", "w_7489.jpg"):        # two photos we know are 3072 x 2048
        for r in read.values():
            assert 0 <= r[photo][0] < 3072 and 0 <= r[photo][1] < 2048


@pytest.mark.parametrize("filename,text,match", [
    ("train.csv", "Image,whale\nw_1.jpg,whale_a\n", r"train.csv:1: header must be 'Image,whaleID'"),
    ("train.csv", '"Image,whaleID\nw_1.jpg,whale_a\n', r"train.csv:1: malformed CSV header"),
    ("train.csv", b"Image,whaleID\nw_1.jpg,whale_\xff\n", r"train.csv: not UTF-8"),
    ("sample_submission.csv", "Image,whale_a,whale_a\n",
     r"sample_submission.csv:1: whale columns repeated"),
    ("sample_submission.csv", "Id,whale_a\n", r"sample_submission.csv:1: header must be 'Image'"),
    ("points1.json", '[\n{"filename": "w_1.jpg",\n "annotations": []\n',
     r"points1.json:4: malformed JSON"),
    ("points1.json", '[{"filename": "w_1.jpg"} {}]',
     r"points1.json:1: malformed JSON \(expected ','"),
    ("points2.json", '{"filename": "w_1.jpg"}', r"points2.json:1: malformed JSON"),
    ("head_boxes.json", '[]\n[]', r"head_boxes.json:1: malformed JSON \(extra data"),
])
def test_malformed_files_are_fatal_and_named(tmp_path, filename, text, match):
    write_survey(tmp_path, LABELS)
    path = tmp_path / filename
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=match):
        load_survey(tmp_path)


def test_fatal_when_nothing_usable(tmp_path):
    with pytest.raises(DataError, match="does not exist.*kaggle.com"):
        load_survey(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no train.csv.*synthetic survey"):
        load_survey(tmp_path)
    write_survey(tmp_path, {"w_1.jpg": "whale_a"})
    (tmp_path / "imgs" / "w_1.jpg").unlink()
    with pytest.raises(DataError, match=r"(?s)no usable training images.*1 x missing image"):
        load_survey(tmp_path)


def test_submission_test_labels_and_pattern_types(tmp_path):
    write_survey(tmp_path, LABELS, test=["w_9.jpg", "w_8.jpg"], points=False,
                 classes=["whale_a", "whale_b"])          # whale_c is not a column
    with open(tmp_path / "sample_submission.csv", "a") as f:
        f.write("w_9.jpg,0.5,0.5\nw_missing.jpg,0.5,0.5\nw_missing.jpg,0.5,0.5\n")
    (tmp_path / "test_labels.csv").write_text("Image,whaleID\nw_9.jpg,whale_b\nw_1.jpg,whale_b\n")
    (tmp_path / "whale_types.csv").write_text("whaleID,pattern_type\nwhale_a,2\nwhale_b,x\n")
    s = load_survey(tmp_path)
    assert "w_4.jpg" not in s.train and s.test == ["w_9.jpg", "w_8.jpg"]
    # a submission still needs a row for the missing photo (filled with the prior by the classifier)
    assert s.submission_rows == ["w_9.jpg", "w_8.jpg", "w_missing.jpg"]
    assert s.test_labels == {"w_9.jpg": "whale_b"} and s.label("w_9.jpg") == 1
    assert s.pattern_types == {"whale_a": 2}
    kinds = sorted(p.kind for p in s.problems)
    assert kinds == ["bad value", "duplicate row", "duplicate row", "missing image", "unknown test image",
                     "unknown whale"]
    assert "w_4.jpg: whale whale_c is not a column of sample_submission.csv" in str(
        next(p for p in s.problems if p.kind == "unknown whale"))


def test_links_out_of_the_data_directory_are_not_followed(tmp_path):
    write_survey(tmp_path / "data", LABELS)
    outside = write_jpeg(tmp_path / "elsewhere.jpg")
    photo = tmp_path / "data" / "imgs" / "w_2.jpg"
    photo.unlink()
    photo.symlink_to(outside)
    (tmp_path / "data" / "imgs" / "w_3.jpg").rename(tmp_path / "data" / "w_3_real.jpg")
    (tmp_path / "data" / "imgs" / "w_3.jpg").symlink_to(tmp_path / "data" / "w_3_real.jpg")   # inside: fine
    s = load_survey(tmp_path / "data")
    assert "w_2.jpg" not in s.train and "w_3.jpg" in s.train
    assert any(p.kind == "link outside the data directory" and str(outside) in p.message for p in s.problems)


# --- decoding -----------------------------------------------------------------

def test_read_image_sizes_and_modes(tmp_path):
    rgb = write_jpeg(tmp_path / "rgb.jpg")
    assert read_image(rgb).shape == (H, W, 3) and read_image(rgb).dtype == np.uint8
    assert read_image(rgb).flags.writeable
    assert read_image(rgb, 16).shape == (16, 16, 3)
    assert read_image(rgb, (24, 12)).shape == (12, 24, 3)
    assert photo_size(rgb) == (W, H) and check_image(rgb) == (W, H)
    for mode in ("L", "CMYK"):
        img = read_image(write_jpeg(tmp_path / f"{mode}.jpg", mode=mode), 8)
        assert img.shape == (8, 8, 3)
    grey = read_image(tmp_path / "L.jpg")
    assert (grey[..., 0] == grey[..., 2]).all()
    with pytest.raises(ValueError, match="positive"):
        read_image(rgb, 0)


def test_draft_decode_matches_a_full_decode(tmp_path):
    """DCT-scaled decoding must give (nearly) the picture a full decode + resize gives."""
    big = write_jpeg(tmp_path / "big.jpg", 640, 480)
    full = Image.open(big).convert("RGB")
    reference = np.asarray(full.resize((40, 40), Image.Resampling.BICUBIC))
    ours = read_image(big, 40)
    assert np.abs(ours.astype(int) - reference).mean() < 2.0


def test_bad_images_are_named(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) - 2])        # only the end marker lost
    big = write_jpeg(tmp_path / "big.jpg", 320, 240).read_bytes()
    (tmp_path / "half.jpg").write_bytes(big[: len(big) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a picture")
    cases = {"cut.jpg": "truncated JPEG", "half.jpg": "truncated JPEG", "empty.jpg": "empty",
             "text.jpg": "not a readable image", "gone.jpg": "does not exist"}
    for name, what in cases.items():
        for fn in (read_image, check_image):
            with pytest.raises(BadImage, match=re.escape(f"{tmp_path / name}: ") + f".*{what}"):
                fn(tmp_path / name)
    with pytest.raises(BadImage, match="does not exist"):
        photo_size(tmp_path / "gone.jpg")


def test_pixels_that_cannot_be_represented_are_converted_or_refused(tmp_path, monkeypatch):
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)   # 0..65504
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    grey = read_image(tmp_path / "deep.png")
    np.testing.assert_array_equal(grey[..., 0], np.round(ramp / 65535 * 255).astype(np.uint8))   # not all 255
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(BadImage, match="float.tiff: F .*convert the photo to 8-bit RGB"):
        read_image(tmp_path / "float.tiff")
    monkeypatch.setattr("rightwhale.io.images.MAX_MEGAPIXELS", 0.001)       # 1,000 pixels
    with pytest.raises(BadImage, match=r"rgb.jpg: .* megapixels, above the limit"):
        read_image(write_jpeg(tmp_path / "rgb.jpg"))


def test_corrupt_jpeg_data_is_refused(tmp_path):
    big = write_jpeg(tmp_path / "big.jpg", 320, 240).read_bytes()
    # bytes lost mid-scan, the end marker intact: Pillow decodes half an image of garbage without a word
    (tmp_path / "holed.jpg").write_bytes(big[:len(big) // 2] + big[len(big) // 2 + 300:])
    np.asarray(Image.open(tmp_path / "holed.jpg").convert("RGB"))
    for size in (None, 40):
        with pytest.raises(BadImage, match=re.escape(f"{tmp_path / 'holed.jpg'}: corrupt JPEG data")):
            read_image(tmp_path / "holed.jpg", size)


def test_large_photos_decode_bounded(tmp_path):
    big = write_jpeg(tmp_path / "big.jpg", 640, 480)
    assert read_bounded(big, 160).shape == (120, 160, 3)
    assert read_bounded(big, 1000).shape == (480, 640, 3)


def test_check_images_drops_unreadable_photos(tmp_path):
    write_survey(tmp_path, LABELS)
    photo = tmp_path / "imgs" / "w_2.jpg"
    photo.write_bytes(photo.read_bytes()[:-100])     # headers intact, pixels cut short
    assert "w_2.jpg" in load_survey(tmp_path).train        # headers only: found at decode time
    s = load_survey(tmp_path, check_images=True)
    assert "w_2.jpg" not in s.train and "w_2.jpg" not in s.bonnet
    assert messages(s, "unreadable image") == [
        f"{photo}: truncated JPEG (no end-of-image marker; the file was cut short, re-download "
        "or re-copy it)"]


# --- where derived files go ---------------------------------------------------

def test_derived_dir_moves_out_of_read_only_folders(tmp_path, monkeypatch):
    write_survey(tmp_path / "ro", LABELS)
    assert data_dirs.derived_dir(tmp_path / "ro") == (tmp_path / "ro" / ".rightwhale").resolve()
    monkeypatch.setenv("RIGHTWHALE_HOME", str(tmp_path / "home"))
    (tmp_path / "ro").chmod(0o555)
    try:
        derived = data_dirs.derived_dir(tmp_path / "ro")
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert derived.parent == tmp_path / "home" / "derived"
    assert derived.name.startswith("ro-") and len(derived.name) == len("ro-") + 8


def test_data_dir_resolution(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="nowhere: data directory does not exist.*kaggle"):
        data_dirs.resolve_data_dir(str(tmp_path / "nowhere"))
    assert data_dirs.resolve_data_dir(str(tmp_path)) == tmp_path
    calls = []
    fake = types.ModuleType("rightwhale.io.synth")
    fake.generate_survey = lambda out, progress=True: (calls.append(out), write_survey(out, LABELS))
    monkeypatch.setitem(sys.modules, "rightwhale.io.synth", fake)
    monkeypatch.setenv("RIGHTWHALE_DATA", str(tmp_path / "survey"))
    assert data_dirs.resolve_data_dir(None) == tmp_path / "survey"
    assert data_dirs.resolve_data_dir(None) == tmp_path / "survey"
    assert calls == [tmp_path / "survey"]                       # generated once, then reused


def test_label_encoder_is_stored_and_guarded(tmp_path):
    s = load_survey(write_survey(tmp_path, LABELS, points=False))
    with pytest.raises(DataError, match="no stored label encoder"):
        data_dirs.load_classes(tmp_path)
    assert data_dirs.save_classes(s) == s.classes == data_dirs.load_classes(tmp_path)
    assert data_dirs.save_classes(s) == s.classes
    other = Survey(root=tmp_path, train={}, test=[], classes=["whale_x"])
    with pytest.raises(DataError, match="differ.*delete it"):
        data_dirs.save_classes(other)
