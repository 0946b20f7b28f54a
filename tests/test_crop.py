import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from rightwhale.geometry import crop
from rightwhale.geometry.transforms import invert, transform_points
from rightwhale.io import crop_folders, formats
from rightwhale.io import survey as data


def centre_of_mass(images, channel):
    w = np.asarray(images, np.float64)[..., channel]
    ys, xs = np.mgrid[: w.shape[1], : w.shape[2]]
    total = w.sum(axis=(1, 2))
    return np.stack([(w * xs).sum(axis=(1, 2)) / total, (w * ys).sum(axis=(1, 2)) / total], axis=1)


def test_bonnet_lands_right_on_the_centre_line():
    rng = np.random.default_rng(0)
    angles = np.deg2rad([0.0, 73.0, 180.0, -121.0])
    p2 = rng.integers(26, 38, (4, 2)).astype(np.float32)
    p1 = np.round(p2 + 20 * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)
    photos = np.zeros((4, 64, 64, 2), np.float32)
    for b in range(4):
        photos[b, int(p1[b, 1]), int(p1[b, 0]), 0] = 1.0   # bonnet
        photos[b, int(p2[b, 1]), int(p2[b, 0]), 1] = 1.0   # blowhead
    crops, mats = crop.crop_heads(photos, p1, p2, out_w=32, out_h=32)
    # centre (15.5, 15.5); bonnet 0.6 d right of it in a 2d-wide window: +0.3 * 32, blowhead -0.2 * 32
    bonnet, blowhead = np.array([15.5 + 9.6, 15.5]), np.array([15.5 - 6.4, 15.5])
    np.testing.assert_allclose(transform_points(mats, p1[:, None])[:, 0], np.broadcast_to(bonnet, (4, 2)), atol=1e-3)
    np.testing.assert_allclose(centre_of_mass(crops, 0), np.broadcast_to(bonnet, (4, 2)), atol=0.5)
    np.testing.assert_allclose(centre_of_mass(crops, 1), np.broadcast_to(blowhead, (4, 2)), atol=0.5)
    np.testing.assert_allclose(transform_points(invert(mats), transform_points(mats, p2[:, None])), p2[:, None],
                               atol=1e-3)
    # zero padding (the CLI's shape buckets) changes nothing when the true size is given
    padded = np.pad(photos, ((0, 0), (0, 32), (0, 16), (0, 0)))
    again, _ = crop.crop_heads(padded, p1, p2, out_w=32, out_h=32, image_hw=np.full((4, 2), 64.0))
    np.testing.assert_allclose(again, crops, atol=1e-6)


def test_lengthen_keeps_the_crop_centre_and_heading_of_a_short_pair():
    bonnet, blowhead = np.array([30.0, 20.0]), np.array([27.0, 24.0])        # 5 px apart
    p = crop.lengthen((bonnet, blowhead), 40.0)
    centre = 0.4 * bonnet + 0.6 * blowhead
    np.testing.assert_allclose(0.4 * p[0] + 0.6 * p[1], centre)
    np.testing.assert_allclose(np.linalg.norm(p[0] - p[1]), 40.0)
    np.testing.assert_allclose((p[0] - p[1]) / 40.0, (bonnet - blowhead) / 5.0)       # same heading
    # the crop it gives: the head window of a 40 px head, bonnet on the right of the centre line
    photo_hw = np.array([200.0, 300.0])
    assert bool(crop.crop_falls_back(bonnet, blowhead, photo_hw))                    # as predicted: too small
    mat = crop.head_crop_matrix(p[0], p[1], photo_hw, 64, 32)
    np.testing.assert_allclose(transform_points(mat, p), [[31.5 + 19.2, 15.5], [31.5 - 12.8, 15.5]], atol=1e-3)
    long_pair = np.array([[0.0, 0.0], [50.0, 0.0]])
    np.testing.assert_array_equal(crop.lengthen(long_pair, 40.0), long_pair)       # long enough: untouched
    np.testing.assert_array_equal(crop.lengthen((bonnet, bonnet), 40.0), [bonnet, bonnet])   # no heading


def original_falls_back(h, w, p1, p2):
    """utils/points_crop.py's test, in plain Python."""
    dist = math.hypot(p1[0] - p2[0], p1[1] - p2[1])
    croph, cropw = int((h - 1.0 * dist) // 2), int((w - 2.0 * dist) // 2)
    return croph <= 0 or cropw <= 0 or h - 2 * croph < 10 or w - 2 * cropw < 20


def test_fallback_to_the_whole_photo_follows_the_original():
    h, w = 48, 64
    d = np.linspace(0.0, 50.0, 41)
    p1 = np.stack([20 + d, np.full_like(d, 24)], 1)
    p2 = np.tile([20.0, 24.0], (len(d), 1))
    ours = np.asarray(crop.crop_falls_back(p1, p2, [h, w]))
    assert ours.tolist() == [original_falls_back(h, w, a, b) for a, b in zip(p1, p2)]
    assert ours.any() and not ours.all()
    nan = crop.crop_falls_back(np.array([[np.nan, 3.0]]), np.array([[1.0, 2.0]]), [h, w])
    assert bool(nan[0])
    photo = np.random.default_rng(1).integers(0, 256, (1, h, w, 3)).astype(np.uint8)
    crops, mats = crop.crop_heads(photo, p1[:1], p2[:1], out_w=32, out_h=24)   # d = 0: degenerate
    np.testing.assert_allclose(transform_points(mats, np.array([[[-0.5, -0.5], [w - 0.5, h - 0.5]]])),
                               [[[-0.5, -0.5], [31.5, 23.5]]], atol=1e-4)
    # the whole photo, halved: each output pixel sits between four input pixels
    halved = photo.reshape(1, 24, 2, 32, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert np.abs(np.asarray(crops, np.float64) - halved).max() <= 1.0


def write_jpeg(path, size=(64, 48), value=120):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, "JPEG")


@pytest.fixture
def tiny_survey(tmp_path):
    root = tmp_path / "survey"
    (root / "imgs").mkdir(parents=True)
    for n in ("w_1.jpg", "w_2.jpg", "w_3.jpg", "w_5.jpg", "w_6.jpg"):
        write_jpeg(root / "imgs" / n)
    (root / "imgs" / "w_4.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "train.csv").write_text("Image,whaleID\nw_1.jpg,whale_a\nw_2.jpg,whale_b\nw_4.jpg,whale_a\n"
                                    "w_5.jpg,whale_b\nw_6.jpg,whale_a\n")
    (root / "sample_submission.csv").write_text("Image,whale_a,whale_b\nw_3.jpg,0.5,0.5\n")
    bonnet = {"w_1.jpg": (40.0, 20.0), "w_3.jpg": (20.0, 30.0), "w_4.jpg": (30.0, 20.0),
              "w_5.jpg": (30.0, 20.0), "w_6.jpg": (33.0, 20.0)}
    blowhead = {"w_1.jpg": (30.0, 25.0), "w_3.jpg": (35.0, 30.0), "w_4.jpg": (20.0, 20.0),
                "w_5.jpg": (30.0, 20.0), "w_6.jpg": (30.0, 20.0)}
    (root / "points1.json").write_text(json.dumps(formats.sloth_points(bonnet)))
    (root / "points2.json").write_text(json.dumps(formats.sloth_points(blowhead)))
    return root


def test_cli_writes_a_cropped_data_directory(tiny_survey, tmp_path, capsys):
    out = tmp_path / "crops"
    assert crop_folders.main(["--data-dir", str(tiny_survey), "--out", str(out), "--width", "32", "--height", "16"]) == 0
    report = capsys.readouterr()
    assert "wrote 3 head crops" in report.out and "w_6.jpg" in report.out       # d = 3 px: whole photo
    for expected in ("w_2.jpg: no bonnet and blowhead point", "w_4.jpg", "w_5.jpg: bonnet and blowhead coincide"):
        assert expected in report.err
    assert sorted(p.name for p in (out / "imgs").iterdir()) == ["w_1.jpg", "w_3.jpg", "w_6.jpg"]
    assert Image.open(out / "imgs" / "w_1.jpg").size == (32, 16)
    assert list(csv.reader(open(out / "train.csv"))) == [["Image", "whaleID"], ["w_1.jpg", "whale_a"],
                                                         ["w_6.jpg", "whale_a"]]
    assert list(csv.reader(open(out / "sample_submission.csv"))) == [["Image", "whale_a", "whale_b"],
                                                                     ["w_3.jpg", "0.5", "0.5"]]
    p1 = {e["filename"]: e["annotations"][0] for e in json.load(open(out / "points1.json"))}
    p2 = {e["filename"]: e["annotations"][0] for e in json.load(open(out / "points2.json"))}
    for name in ("w_1.jpg", "w_3.jpg"):
        assert (p1[name]["x"], p1[name]["y"]) == pytest.approx((15.5 + 9.6, 7.5), abs=1e-3)
        assert (p2[name]["x"], p2[name]["y"]) == pytest.approx((15.5 - 6.4, 7.5), abs=1e-3)
    assert (p1["w_6.jpg"]["x"], p1["w_6.jpg"]["y"]) == pytest.approx(((33.5) / 2 - 0.5, 20.5 / 3 - 0.5), abs=1e-3)


def test_cli_refuses_to_overwrite_its_input(tiny_survey, capsys):
    assert crop_folders.main(["--data-dir", str(tiny_survey), "--out", str(tiny_survey)]) == 2
    assert "must be a new directory" in capsys.readouterr().err


def original_padded_box(x, y, w, h, pad, max_x, max_y):
    """utils/__init__.py add_padding_to_bbox, ltwh."""
    l, t, r, b = x, y, x + w, y + h
    pad_x, pad_y = int(round(w * pad / 2)), int(round(h * pad / 2))
    new_l, new_r = min(max(l - pad_x, 0), max_x), min(max(r + pad_x, 0), max_x)
    new_t, new_b = min(max(t - pad_y, 0), max_y), min(max(b + pad_y, 0), max_y)
    return new_l, new_t, new_r - new_l, new_b - new_t


def test_box_crop_fills_the_output_with_the_padded_box():
    boxes = np.array([[10, 6, 20, 12], [50, 40, 30, 20], [5, 5, 0, 8]], np.float32)   # last: empty
    mats = crop.box_crop_matrix(boxes, [48, 64], out_w=16, out_h=8, pad=0.25)
    for box, mat, whole in zip(boxes, mats, np.asarray(crop.box_falls_back(boxes, [48, 64], 0.25))):
        l, t, w, h = original_padded_box(*box.astype(int), 0.25, 64, 48) if not whole else (0, 0, 64, 48)
        corners = np.array([[l - 0.5, t - 0.5], [l + w - 0.5, t + h - 0.5]], np.float32)
        np.testing.assert_allclose(transform_points(mat, corners), [[-0.5, -0.5], [15.5, 7.5]], atol=1e-4)
    assert np.asarray(crop.box_falls_back(boxes, [48, 64], 0.25)).tolist() == [False, False, True]


def test_cli_box_crops(tiny_survey, tmp_path):
    img = np.full((48, 64, 3), 30, np.uint8)
    img[10:30, 20:44] = 220
    Image.fromarray(img).save(tiny_survey / "imgs" / "w_1.jpg", "JPEG", quality=95)
    (tmp_path / "boxes.json").write_text(json.dumps(formats.sloth_boxes({"w_1.jpg": (20, 10, 24, 20)})))
    result = crop_folders.crop_data_dir(tiny_survey, tmp_path / "boxes", 12, 10, boxes=tmp_path / "boxes.json")
    assert result["cropped"] == ["w_1.jpg"] and result["fallback"] == []
    assert sum(p.kind == "missing box" for p in result["problems"]) == 4    # w_2, w_3, w_5, w_6
    box_crop = np.asarray(Image.open(tmp_path / "boxes" / "imgs" / "w_1.jpg"), np.float64)
    assert box_crop.shape == (10, 12, 3) and np.abs(box_crop - 220).max() < 12
    moved = json.load(open(tmp_path / "boxes" / "points1.json"))[0]["annotations"][0]   # bonnet (40, 20)
    assert (moved["x"], moved["y"]) == pytest.approx(((40 - 19.5) * 12 / 24 - 0.5, (20 - 9.5) * 10 / 20 - 0.5))


def test_predicted_points_off_the_photo_give_the_whole_photo_and_no_points(tiny_survey, tmp_path):
    bonnet = {"w_1.jpg": (70.0, 20.0), "w_6.jpg": (40.0, 20.0)}          # w_1: off the 64 x 48 photo
    blowhead = {"w_1.jpg": (50.0, 20.0), "w_6.jpg": (25.0, 20.0)}
    (tmp_path / "p1.json").write_text(json.dumps(formats.sloth_points(bonnet)))
    (tmp_path / "p2.json").write_text(json.dumps(formats.sloth_points(blowhead)))
    made = crop_folders.crop_data_dir(tiny_survey, tmp_path / "crops", 32, 16, points1=tmp_path / "p1.json",
                              points2=tmp_path / "p2.json", predicted=True, progress=False)
    assert made["cropped"] == ["w_1.jpg", "w_6.jpg"] and made["fallback"] == ["w_1.jpg"]
    names = [e["filename"] for e in json.loads((tmp_path / "crops" / "points1.json").read_text())]
    assert names == ["w_6.jpg"]
    assert not [p for p in data.load_survey(tmp_path / "crops").problems if "outside" in p.message]


def gaussian_marks(hw, centres, sigma=2.0):
    """A float photo (H, W, len(centres)): one Gaussian blob per channel at each (x, y), peak 1."""
    ys, xs = np.mgrid[: hw[0], : hw[1]]
    return np.stack([np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in centres],
                    axis=-1).astype(np.float32)


@pytest.mark.parametrize("angle", [30.0, -150.0])
def test_off_axis_marks_land_where_the_head_window_puts_them(angle):
    """DESIGN section 3's window on a head at an angle: centre 0.4 bonnet + 0.6 blowhead, turned (not mirrored) so
    the bonnet points right, 2d wide along the head and d high across it, d = |bonnet - blowhead|. Marks at
    known offsets (a along the head, b across it, in units of d) land at (out_w - 1) / 2 + a out_w / 2 and
    (out_h - 1) / 2 + b out_h; marks beyond the window are not in the crop."""
    d, out_w, out_h = 40.0, 64, 32
    theta = np.deg2rad(angle)
    along = np.array([np.cos(theta), np.sin(theta)])                 # blowhead -> bonnet
    across = np.array([-np.sin(theta), np.cos(theta)])               # along turned +90 deg (y down): crop's +y
    blowhead = np.array([78.3, 81.6])
    bonnet = blowhead + d * along
    centre = 0.4 * bonnet + 0.6 * blowhead
    inside = {"bonnet": (0.6, 0.0), "blowhead": (-0.4, 0.0), "across": (0.0, 0.35), "corner": (0.75, -0.3),
              "back": (-0.8, 0.2)}
    outside = {"beyond the height": (0.0, 0.68), "beyond the width": (-1.15, 0.0)}
    offsets = {**inside, **outside}
    marks = [centre + d * (a * along + b * across) for a, b in offsets.values()]
    np.testing.assert_allclose(marks[:2], [bonnet, blowhead], atol=1e-9)
    photo = gaussian_marks((170, 180), marks)
    head, mat, whole = crop.head_crop(photo, bonnet, blowhead, out_w, out_h)
    assert head.shape == (out_h, out_w, len(offsets)) and not whole
    expected = np.array([[(out_w - 1) / 2 + a * out_w / 2, (out_h - 1) / 2 + b * out_h] for a, b in inside.values()])
    found = np.array([centre_of_mass(head[None], c)[0] for c in range(len(inside))])
    np.testing.assert_allclose(found, expected, atol=0.1)
    np.testing.assert_allclose(transform_points(mat, np.array(marks[:len(inside)])), expected, atol=1e-3)
    # the window is d high and 2d wide: marks a bit beyond it leave (next to) nothing in the crop
    mass = np.asarray(head, np.float64).sum(axis=(0, 1))
    assert (mass[len(inside):] < 0.01 * mass[:len(inside)].min()).all(), mass


def test_points_that_cannot_place_a_head_say_why():
    photo = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(crop.UnplaceableHead, match="coincide"):
        crop.head_crop(photo, (10.0, 10.0), (10.2, 10.0), 32, 16)
    with pytest.raises(crop.UnplaceableHead, match="outside the 60x40 photo"):
        crop.head_crop(photo, (10.0, 10.0), (70.0, 10.0), 32, 16)
    head, _, whole = crop.head_crop(photo, (10.0, 10.0), (70.0, 10.0), 32, 16, predicted=True)   # a guess: whole photo
    assert head.shape == (16, 32, 3) and whole
