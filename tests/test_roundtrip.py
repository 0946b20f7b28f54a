"""Photo -> cache -> test-time augmentation -> photo, with an oracle regressor: every conversion on the aligner's
path (pixel-centre rescaling into the square cache, the TTA warps, their inverse affines, the way back to photo
pixels) must bring a dot found in the transformed copies back onto the dot drawn in the photo."""
import json
import types

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from rightwhale.core.config import CPU_TTA, ORIGINAL_TTA
from rightwhale.io import formats
from rightwhale.io import survey as data
from rightwhale.io.cache import Rows, build_cache
from rightwhale.train.tta import predict_with_tta

SIZE = 64            # the cache
BLOB = 2.0           # blob sigma in cache pixels (wider in photo pixels along a photo's longer side)
# photo (w, h) and its bonnet, blowhead in cache pixels: within 10 px of the centre, so that every TTA copy (scale
# up to 1.25, translations of 6.25 px at 64, any rotation) keeps both blobs inside the image
PHOTOS = {"w_1.png": ((200, 120), (38.3, 27.1), (24.6, 35.2)),
          "w_2.png": ((90, 150), (29.2, 40.4), (36.7, 24.9)),
          "w_3.png": ((128, 128), (23.4, 31.0), (40.1, 33.6))}


def to_photo(xy, wh):
    """Cache pixels -> photo pixels, pixel centres at integers (written out here, not the cache's own)."""
    return (np.asarray(xy) + 0.5) * np.asarray(wh) / SIZE - 0.5


def blob(wh, xy):
    """A Gaussian blob of BLOB cache pixels at photo point xy, peak 1."""
    (w, h), sigma = wh, BLOB * np.asarray(wh) / SIZE
    ys, xs = np.mgrid[:h, :w]
    return np.exp(-(xs - xy[0]) ** 2 / (2 * sigma[0] ** 2) - (ys - xy[1]) ** 2 / (2 * sigma[1] ** 2))


@pytest.fixture(scope="module")
def photo_survey(tmp_path_factory):
    """PNG photos (lossless: JPEG would shift the dots' colours): the bonnet red, the blowhead green, noise blue."""
    root = tmp_path_factory.mktemp("roundtrip") / "survey"
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    bonnet, blowhead = {}, {}
    for name, (wh, p1, p2) in PHOTOS.items():
        bonnet[name], blowhead[name] = to_photo(p1, wh), to_photo(p2, wh)
        rgb = np.stack([blob(wh, bonnet[name]), blob(wh, blowhead[name]), rng.uniform(0, 1, wh[::-1])], -1)
        Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(root / "imgs" / name)
    (root / "train.csv").write_text("Image,whaleID\n" + "".join(f"{n},whale_a\n" for n in PHOTOS))
    (root / "points1.json").write_text(json.dumps(formats.sloth_points(bonnet)))
    (root / "points2.json").write_text(json.dumps(formats.sloth_points(blowhead)))
    return root


def oracle_apply(variables, x, train=False):
    """A "model" with the aligner's interface: the network input (images in [0, 1] less 0.5) -> (bonnet x, y,
    blowhead x, y) / input size, found as the intensity centre of mass of the red and green channels."""
    weights = x[..., :2] + 0.5
    size = x.shape[1]
    coords = jnp.arange(size, dtype=jnp.float32)
    total = weights.sum(axis=(1, 2))
    xs = jnp.einsum("nhwk,w->nk", weights, coords) / total
    ys = jnp.einsum("nhwk,h->nk", weights, coords) / total
    return (jnp.stack([xs, ys], axis=-1) / size).reshape(-1, 4), {}


ORACLE = types.SimpleNamespace(apply=oracle_apply)


@pytest.mark.parametrize("tta, chunk", [(CPU_TTA, 5), (ORIGINAL_TTA, 81)],
                         ids=["cpu grid, a padded last chunk", "original grid (shears, translations)"])
def test_tta_through_the_cache_lands_on_the_photo_dots(photo_survey, tta, chunk):
    survey = data.load_survey(photo_survey)
    assert not survey.problems
    cache = build_cache(photo_survey, SIZE, workers=1, progress=False)
    names = list(PHOTOS)
    rows = Rows(cache.images, [cache.index(n) for n in names])        # as the align stage hands them over
    truth_photo = np.stack([survey.points(n) for n in names])        # (N, 2, 2) as annotated
    truth_cache = np.array([[p1, p2] for _, p1, p2 in PHOTOS.values()])
    # the oracle itself: right on the cached photos, without TTA
    plain = np.asarray(oracle_apply({}, jnp.asarray(cache.images[rows.index], jnp.float32) / 255 - 0.5)[0])
    np.testing.assert_allclose(plain.reshape(-1, 2, 2) * SIZE, truth_cache, atol=0.1)
    # batch size 2 over 3 photos: a ragged last batch
    points, spread = predict_with_tta(ORACLE, {}, rows, tta, batch_size=2, chunk=chunk)
    assert points.shape == (3, 2, 2) and spread.shape == (3,)
    np.testing.assert_allclose(points, truth_cache, atol=0.1)       # the copies mapped back into cache pixels
    assert (spread < 0.1).all(), spread                               # and they agree with each other
    back = cache.to_photo(names, points)
    errors = np.linalg.norm(back - truth_photo, axis=-1)
    # well within a photo pixel (about 0.02 px here; a half-pixel slip of the cache's pixel-centre convention
    # alone would be 0.7 to 1.2 px on these photos)
    assert errors.max() < 0.25, errors
