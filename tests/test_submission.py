import gzip

import numpy as np
import pytest

from rightwhale.io.submission import check_submission, read_submission, write_submission


def test_round_trip_and_check(tmp_path):
    images, classes = ["w_1.jpg", "w_2.jpg"], ["whale_a", "whale_b", "whale_c"]
    sample = write_submission(tmp_path / "sample.csv", images, classes, np.ones((2, 3)))
    probs = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    for name in ["sub.csv", "sub.csv.gz"]:
        path = write_submission(tmp_path / name, images, classes, probs)
        got_images, got_classes, got = read_submission(path)
        assert (got_images, got_classes) == (images, classes)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-6)
        assert got[1, 1] > 0  # clipped away from zero, as Kaggle scored
        check_submission(path, sample)
    assert gzip.decompress((tmp_path / "sub.csv.gz").read_bytes()).startswith(b"Image,whale_a")


def test_check_rejects_wrong_rows_and_sums(tmp_path):
    classes = ["whale_a", "whale_b"]
    sample = write_submission(tmp_path / "sample.csv", ["w_1.jpg", "w_2.jpg"], classes, np.ones((2, 2)))
    other = write_submission(tmp_path / "other.csv", ["w_2.jpg", "w_1.jpg"], classes, np.ones((2, 2)))
    with pytest.raises(ValueError, match="image rows differ"):
        check_submission(other, sample)
    bad = tmp_path / "bad.csv"
    bad.write_text("Image,whale_a,whale_b\nw_1.jpg,0.5,0.6\nw_2.jpg,0.5,0.5\n")
    with pytest.raises(ValueError, match="row 2 .*sums to 1.1"):
        check_submission(bad, sample)
    with pytest.raises(ValueError, match="probabilities of shape"):
        write_submission(tmp_path / "x.csv", ["w_1.jpg"], classes, np.ones((2, 2)))
