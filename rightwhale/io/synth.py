"""The embedded synthetic aerial survey: right whale photos in the Kaggle layout.

The Kaggle photos cannot ship with the project, yet every stage must run end to end. Each synthetic whale
carries a fixed callosity pattern drawn in a head-local frame (bonnet tip at (0, 0), blowhead at (1, 0), unit =
the bonnet-blowhead distance); every photo places that frame by a known similarity transform, so points1/2 and
head_boxes are exact by construction. A whale's photos come in a few sightings that share sea colour, light and
wave direction: the background shortcut the 2015 saliency map exposed. All randomness is keyed by
(seed, kind, index), so a survey is byte-identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import functools
import io
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import fft, interpolate, ndimage, optimize, special, stats
from tqdm import tqdm

from rightwhale.core import atomic

PATTERN_TYPES = ("continuous", "broken", "split", "sparse")  # whale_types.csv pattern_type indexes these
FORMAT_VERSION = 1
# Head-local raster of each whale's callosities: u and v ranges (units of the bonnet-blowhead distance), cells per unit.
_GRID_U, _GRID_V, _GRID_RES = (-0.15, 1.45), (-0.7, 0.7), 64
# Body half-width along the body axis u, seen from above, smoothed once (monotone cubic) into a table for np.interp.
_BODY_U = np.linspace(-0.06, 5.3, 1073)
_BODY_W = interpolate.PchipInterpolator(
    [-0.06, -0.05, -0.03, 0.0, 0.05, 0.1, 0.3, 0.6, 1.0, 1.5, 2.2, 3.0, 3.8, 4.5, 5.0, 5.3],
    [0.0, 0.05, 0.085, 0.115, 0.14, 0.16, 0.22, 0.29, 0.37, 0.48, 0.58, 0.56, 0.42, 0.2, 0.1, 0.0])(_BODY_U)
_ALTITUDE_SHARE = 0.75     # of the head-size spread (log scale) that comes from the sighting; each photo adds the rest
_PLAN, _WHALE, _SIGHTING, _PHOTO, _RENDER = range(5)    # seed-sequence keys: one stream per kind of decision


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass(frozen=True)
class SurveySpec:
    """The generator's parameters (written to survey.json). Defaults follow the Kaggle data."""
    whales: int = 40
    seed: int = 0
    width: int = 480
    height: int = 320
    test_fraction: float = 1 / 3      # of the photos of whales with >= 2 training photos
    mean_photos: float = 10.2         # training photos per whale (Kaggle: 4544 / 447)
    single_fraction: float = 0.054    # whales with one training photo (Kaggle: 24 / 447)
    head_median: float = 0.088        # bonnet-blowhead distance / photo width: median of the
    head_sigma: float = 0.38          # real annotations, its log-normal spread,
    head_range: tuple[float, float] = (0.035, 0.22)  # and hard limits

    def __post_init__(self):
        object.__setattr__(self, "head_range", tuple(map(float, self.head_range)))
        problems = [msg for bad, msg in (
            (self.whales < 1, f"whales must be >= 1, got {self.whales}"),
            (self.width < 32 or self.height < 32, f"photo size must be >= 32x32, got {self.width}x{self.height}"),
            (not 0 <= self.test_fraction < 1, f"test_fraction must be in [0, 1), got {self.test_fraction}"),
            (not 0 < self.single_fraction < 0.5, f"single_fraction must be in (0, 0.5), got {self.single_fraction}"),
            # a negative binomial with P(1 photo) = single_fraction has a mean above 1 - ln(single_fraction)
            (0 < self.single_fraction < 0.5 and self.mean_photos <= 1 - math.log(self.single_fraction),
             f"mean_photos={self.mean_photos} is too small for single_fraction={self.single_fraction}: "
             f"need > {1 - math.log(max(self.single_fraction, 1e-9)):.2f}"),
            (not 0 < self.head_range[0] <= self.head_median <= self.head_range[1] <= 0.3,
             f"need 0 < head_range[0] <= head_median <= head_range[1] <= 0.3, got "
             f"{self.head_median} in {self.head_range}"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Whale:
    whale_id: str
    pattern_type: int
    build: float                      # body width factor
    callosity_rgb: np.ndarray         # (3,) base colour of its callosities
    callosity: np.ndarray             # (V, U) coverage in [0, 1] on the head-local raster
    roughness: np.ndarray             # (V, U) brightness factor of the callosity surface
    head_points: np.ndarray           # (N, 2) head-local (u, v) the head box must cover


@dataclass
class Sighting:
    """One encounter: the light, sea and altitude a whale's photos share."""
    sea_rgb: np.ndarray               # (3,) deep-water colour
    sky_rgb: np.ndarray               # (3,) colour of sky reflections on wave facets
    wave_direction: float             # radians
    wavelength: float                 # dominant wavelength / photo width
    wave_spread: float                # directional concentration (larger: more parallel crests)
    wave_contrast: float
    cross_angle: float                # direction of the wind waves relative to the swell
    glint: float                      # 0 overcast .. 1 sunny sparkles
    haze: float
    whitecaps: float
    log_head: float                   # altitude: log of the bonnet-blowhead distance / width


@dataclass
class Photo:
    name: str                         # w_<n>.jpg
    whale: int                        # index into SyntheticSurvey.whales
    sighting: int                     # index into SyntheticSurvey.sightings
    test: bool
    bonnet: tuple[float, float]       # (x, y) photo pixels, pixel centres at integers
    blowhead: tuple[float, float]
    head_box: tuple[float, float, float, float]  # (x, y, width, height), clipped to the photo
    index: int                        # position in SyntheticSurvey.photos; keys its render stream


@dataclass
class SyntheticSurvey:
    spec: SurveySpec
    whales: list[Whale]
    sightings: list[Sighting]
    photos: list[Photo] = field(default_factory=list)


# --- the label table -------------------------------------------------------------------

def _training_counts(rng, spec: SurveySpec) -> np.ndarray:
    """Training photos per whale: 1 + negative binomial with the asked mean and share of singles. Stratified
    quantiles (one per whale, shuffled) keep even a 40-whale survey close to the target distribution."""
    def mean_gap(r):                  # P(0) = p**r = single_fraction; the mean r (1 - p) / p must be mean_photos - 1
        p = spec.single_fraction ** (1 / r)
        return r * (1 - p) / p - (spec.mean_photos - 1)
    r = optimize.brentq(mean_gap, 0.05, 1e6)
    p = spec.single_fraction ** (1 / r)
    q = (np.arange(spec.whales) + rng.random(spec.whales)) / spec.whales
    counts = 1 + stats.nbinom(r, p).ppf(q).astype(int)
    return rng.permutation(np.minimum(counts, int(5 * spec.mean_photos)))


def _head_profile(u: np.ndarray, build: float) -> np.ndarray:
    return build * np.interp(u, _BODY_U, _BODY_W)


def _pattern_blobs(rng, ptype: int, build: float) -> list[tuple]:
    """Ellipses (u, v, radius_u, radius_v, angle) of one whale's callosities, by pattern type."""
    kind, blobs = PATTERN_TYPES[ptype], []
    wiggle = rng.normal(0, 0.025, 3)

    def centre(u):                    # the rostral midline bends a little, per whale
        return wiggle[0] + wiggle[1] * np.sin(5 * u) + wiggle[2] * u
    bonnet_len = rng.uniform(0.18, 0.32)
    if kind == "split":
        for side in (-1, 1):
            blobs.append((bonnet_len / 2, side * rng.uniform(0.05, 0.09), bonnet_len / 2 * rng.uniform(0.9, 1.2),
                          rng.uniform(0.05, 0.08), side * rng.uniform(0.1, 0.5)))
    else:
        size = 0.6 if kind == "sparse" else 1.0
        for u in np.linspace(0.02, bonnet_len, 3):
            blobs.append((u, centre(u), 0.09 * size, rng.uniform(0.08, 0.13) * size, rng.uniform(-0.4, 0.4)))
    if kind == "continuous":
        blobs += [(u, centre(u), 0.06, rng.uniform(0.035, 0.07), rng.uniform(-0.3, 0.3))
                  for u in np.arange(bonnet_len, rng.uniform(0.6, 0.9), 0.05)]
    else:
        n = rng.integers(*{"broken": (2, 5), "split": (1, 4), "sparse": (0, 2)}[kind])
        blobs += [(u, centre(u) + rng.normal(0, 0.03), rng.uniform(0.03, 0.08), rng.uniform(0.025, 0.06),
                   rng.uniform(0, np.pi)) for u in np.sort(rng.uniform(bonnet_len + 0.1, 0.9, n))]
    for side in (-1, 1):              # lip callosities along the edges of the head
        for u in rng.uniform(0.3, 1.0, rng.integers(2, 6)):
            v = side * (_head_profile(u, build) - rng.uniform(0.03, 0.06))
            blobs.append((u, v, rng.uniform(0.03, 0.08), rng.uniform(0.015, 0.035), side * rng.uniform(-0.3, 0.3)))
        if rng.random() < 0.6:        # over the eye
            u = rng.uniform(1.05, 1.2)
            blobs.append((u, side * (_head_profile(u, build) - 0.06), 0.035, 0.025, 0.0))
    n_post = rng.integers(0, 3) + (kind == "sparse")                    # behind the blowholes
    return blobs + [(rng.uniform(1.08, 1.25), rng.uniform(-0.15, 0.15), rng.uniform(0.03, 0.07),
                     rng.uniform(0.03, 0.06), rng.uniform(0, np.pi)) for _ in range(n_post)]


def _make_whale(rng, whale_id: str, ptype: int) -> Whale:
    build = rng.uniform(0.9, 1.1)
    uu, vv = np.meshgrid(np.arange(*_GRID_U, 1 / _GRID_RES), np.arange(*_GRID_V, 1 / _GRID_RES))
    inside = np.full(uu.shape, -np.inf)
    for cu, cv, ru, rv, a in _pattern_blobs(rng, ptype, build):
        du, dv = uu - cu, vv - cv
        x, y = (du * np.cos(a) + dv * np.sin(a)) / ru, (-du * np.sin(a) + dv * np.cos(a)) / rv
        inside = np.maximum(inside, 1 - np.sqrt(x * x + y * y))
    def noise(spacing):               # on the raster, features `spacing` head units apart
        return _image_noise(rng, *uu.shape, spacing * _GRID_RES)
    edge = 0.2 * noise(0.05) + 0.12 * noise(0.02)
    callosity = np.clip((inside + edge) / 0.1, 0, 1)
    callosity *= np.clip((_head_profile(uu, build) - np.abs(vv)) / 0.02, 0, 1)   # never off the head
    roughness = 0.86 + 0.12 * noise(0.03) + 0.06 * rng.standard_normal(uu.shape)
    rgb = np.array([0.76, 0.70, 0.56]) * rng.uniform(0.85, 1.05) + rng.normal(0, 0.025, 3)
    covered = callosity > 0.5
    head_points = np.concatenate([np.stack([uu[covered], vv[covered]], 1), [[0.0, 0.0], [1.0, 0.0]]])
    return Whale(whale_id, ptype, build, rgb.astype(np.float32), callosity.astype(np.float32),
                 roughness.astype(np.float32), head_points)


def _make_sighting(rng, spec: SurveySpec) -> Sighting:
    tone = rng.random()
    sea = np.array([0.13, 0.24, 0.27]) * (1 - tone) + np.array([0.12, 0.2, 0.26]) * tone  # teal .. slate
    sky = np.array([0.55, 0.62, 0.66]) + rng.normal(0, 0.04, 3)
    return Sighting(
        sea_rgb=(sea * rng.uniform(0.7, 1.25)).astype(np.float32), sky_rgb=sky.astype(np.float32),
        wave_direction=rng.uniform(0, np.pi), wavelength=rng.uniform(0.015, 0.045),
        wave_spread=rng.uniform(1.5, 5.0), wave_contrast=rng.uniform(0.6, 1.5),
        cross_angle=rng.uniform(0.5, 1.2) * float(rng.choice([-1, 1])),
        glint=rng.random() ** 2, haze=rng.uniform(0.0, 0.3), whitecaps=rng.random() ** 3,
        log_head=float(np.log(spec.head_median) + rng.normal(0, _ALTITUDE_SHARE * spec.head_sigma)))


def _place_head(rng, spec: SurveySpec, whale: Whale, sighting: Sighting):
    """Bonnet, blowhead and head box of one photo: uniform heading, head fully in frame."""
    resid = math.sqrt(1 - _ALTITUDE_SHARE ** 2) * spec.head_sigma       # the photo's own share of the spread
    lo, hi = special.ndtr((np.log(spec.head_range) - sighting.log_head) / resid)
    z = special.ndtri(lo + rng.random() * (hi - lo))                   # a normal truncated to head_range
    d = math.exp(np.clip(sighting.log_head + resid * z, *np.log(spec.head_range))) * spec.width
    heading = rng.uniform(-np.pi, np.pi)
    axis = np.array([np.cos(heading), np.sin(heading)])
    perp = np.array([-axis[1], axis[0]])
    head_uv = whale.head_points
    lo_uv, hi_uv = head_uv.min(0) - 0.1, head_uv.max(0) + 0.1      # the box's margin
    corners = np.array([[u, v] for u in (lo_uv[0], hi_uv[0]) for v in (lo_uv[1], hi_uv[1])])
    offsets = corners[:, :1] * axis + corners[:, 1:] * perp        # in units of d, from the bonnet
    extent = offsets.max(0) - offsets.min(0)
    d = min(d, 0.98 * spec.width / extent[0], 0.98 * spec.height / extent[1])
    low, high = -offsets.min(0) * d, np.array([spec.width - 1, spec.height - 1]) + (-offsets.max(0) * d)
    bonnet = np.round(low + rng.random(2) * np.maximum(high - low, 0), 3)
    blowhead = np.round(bonnet + d * axis, 3)
    pts = bonnet + d * (head_uv[:, :1] * axis + head_uv[:, 1:] * perp)
    x0, y0 = np.maximum(pts.min(0) - 0.1 * d, 0)
    x1, y1 = np.minimum(pts.max(0) + 0.1 * d, [spec.width - 1, spec.height - 1])
    box = tuple(round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0))
    return tuple(map(float, bonnet)), tuple(map(float, blowhead)), box


def plan_survey(spec: SurveySpec) -> SyntheticSurvey:
    """Draw every whale, sighting and photo (names, labels, split, points, boxes); no pixels."""
    rng = _rng(spec.seed, _PLAN)
    ids = [f"whale_{i:05d}" for i in rng.choice(100_000, spec.whales, replace=False)]
    types = rng.permutation(np.arange(spec.whales) % len(PATTERN_TYPES))
    n_train = _training_counts(rng, spec)
    ratio = spec.test_fraction / (1 - spec.test_fraction)
    n_test = np.where(n_train >= 2, np.floor(n_train * ratio + rng.random(spec.whales)), 0).astype(int)
    names = rng.permutation(int(n_train.sum() + n_test.sum()))
    survey = SyntheticSurvey(spec, [], [])
    for w in range(spec.whales):
        survey.whales.append(_make_whale(_rng(spec.seed, _WHALE, w), ids[w], int(types[w])))
        wrng = _rng(spec.seed, _PHOTO, w)
        n = n_train[w] + n_test[w]
        n_sightings = int(min(n, 1 + wrng.poisson((n - 1) / 6), 5))
        first = len(survey.sightings)
        survey.sightings += [_make_sighting(_rng(spec.seed, _SIGHTING, w, s), spec) for s in range(n_sightings)]
        which = np.concatenate([np.arange(n_sightings), wrng.integers(0, n_sightings, n - n_sightings)])
        is_test = wrng.permutation(np.arange(n) < n_test[w])
        for j in range(n):
            sighting, index = first + int(which[j]), len(survey.photos)
            head = _place_head(wrng, spec, survey.whales[w], survey.sightings[sighting])   # bonnet, blowhead, box
            survey.photos.append(Photo(f"w_{names[index]}.jpg", w, sighting, bool(is_test[j]), *head, index))
    return survey


# --- pixels ----------------------------------------------------------------------------

def _noise(rng, y, x, order: int = 3) -> np.ndarray:
    """Smooth unit-variance noise at coordinates measured in feature spacings (value noise)."""
    y, x = np.broadcast_arrays(y, x)
    y0, x0 = np.floor(y.min()), np.floor(x.min())
    grid = rng.standard_normal((int(y.max() - y0) + 5, int(x.max() - x0) + 5))
    out = ndimage.map_coordinates(grid, [y - y0 + 1, x - x0 + 1], order=order, mode="nearest", output=np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)


def _image_noise(rng, h: int, w: int, scale: float) -> np.ndarray:
    """`_noise` on the pixel grid, features `scale` pixels apart; upsampled by Pillow, which is fast."""
    if scale <= 1:
        return rng.standard_normal((h, w), np.float32)
    small = rng.standard_normal((int(h / scale) + 3, int(w / scale) + 3), np.float32)
    size = (round(small.shape[1] * scale), round(small.shape[0] * scale))
    out = np.asarray(Image.fromarray(small, "F").resize(size, Image.BICUBIC))[:h, :w]
    return (out - out.mean()) / (out.std() + 1e-6)


@functools.lru_cache(maxsize=4)
def _wave_spectrum(h: int, w: int, wavelength: float, direction: float, spread: float, cross: float):
    """Amplitudes of a swell plus crossing wind waves (directional Pierson-Moskowitz), for one sighting."""
    ky = np.fft.fftfreq(h).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = np.inf
    angle = np.arctan2(ky, kx)
    amps = []
    for lam, theta, weight in ((wavelength, direction, 1.0), (wavelength * 0.5, direction + cross, 0.5)):
        kp = 1 / (lam * w)
        amp = weight * kp ** 2 * k ** -3.0 * np.exp(-1.25 * (kp / k) ** 2)
        amps.append(amp * np.exp(spread * (np.cos(angle - theta) ** 2 - 1)))      # crests across theta
    return kx, ky, amps


def _sea_surface(rng, h: int, w: int, s: Sighting):
    """Wave height and sun-facing slope (both unit variance) of one photo's sea."""
    kx, ky, amps = _wave_spectrum(h, w, s.wavelength, s.wave_direction, s.wave_spread, s.cross_angle)
    spectrum = sum((rng.standard_normal(a.shape, np.float32) + 1j * rng.standard_normal(a.shape, np.float32)) * a
                   for a in amps)
    sun = s.wave_direction + rng.uniform(-0.6, 0.6)
    height = fft.irfft2(spectrum, s=(h, w))
    slope = fft.irfft2(spectrum * (2j * math.pi * (kx * math.cos(sun) + ky * math.sin(sun))), s=(h, w))
    return height / height.std(), slope / slope.std()


def render_photo(survey: SyntheticSurvey, photo: Photo) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 array."""
    spec, s = survey.spec, survey.sightings[photo.sighting]
    rng = _rng(spec.seed, _RENDER, photo.index)
    h, w = spec.height, spec.width
    height, slope = _sea_surface(rng, h, w, s)
    # the sky reflected by facets at one tilt draws the bright wiggly lines of real survey photos
    reflection = 0.4 * np.exp(-((slope - 1.6) / 0.35) ** 2) + 0.25 * np.clip((slope - 1.6) / 2, 0, 1)
    reflection *= s.wave_contrast * np.clip(1 + 0.35 * _image_noise(rng, h, w, 0.3 * w), 0.2, None)  # patchy
    img = s.sea_rgb * (1 + 0.1 * s.wave_contrast * slope[..., None])
    img += reflection[..., None] * (s.sky_rgb - img)
    sparkle = slope + 0.7 * _image_noise(rng, h, w, w / 960)
    white = np.clip((sparkle - (5.0 - 1.3 * s.glint)) * 2, 0, 1)                # sun glints on steep facets
    white += np.clip((height - 3.0) * 1.5, 0, 1) * s.whitecaps
    _draw_whale(rng, img, white, height, reflection, photo, survey.whales[photo.whale], s)
    img += np.clip(white, 0, 1)[..., None] * (np.float32([0.92, 0.94, 0.95]) - img)
    # the camera: haze, exposure, contrast, vignetting, blur, sensor noise (JPEG quality at save)
    yy, xx = np.ogrid[0:h, 0:w]
    light = rng.uniform(0.8, 1.25) * (1 - 0.25 * ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2)).astype(np.float32)
    img = (img * (1 - s.haze) + s.haze * np.float32([0.42, 0.48, 0.52])) * light[..., None]
    sigma = rng.uniform(0.2, 1.6) * w / 1536
    if sigma > 0.3:
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    img += 0.008 * rng.standard_normal(img.shape, np.float32)
    gamma = 255 * np.linspace(0, 1, 1024) ** rng.uniform(0.85, 1.15) + 0.5      # contrast, via a lookup table
    return gamma.astype(np.uint8)[(np.clip(img, 0, 1) * 1023 + 0.5).astype(np.int16)]


def _draw_whale(rng, img, white, height, reflection, photo: Photo, whale: Whale, s: Sighting):
    """Paint body, callosities and blowholes into `img` and white water into `white` (in place)."""
    h, w = img.shape[:2]
    bonnet, blowhead = np.array(photo.bonnet), np.array(photo.blowhead)
    d = float(np.hypot(*(blowhead - bonnet)))
    axis = (blowhead - bonnet) / d
    perp = np.array([-axis[1], axis[0]])
    corners = np.array([bonnet + d * (u * axis + v * perp) for u in (-0.6, 5.8) for v in (-1.1, 1.1)])
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
    yy, xx = np.ogrid[y0:y1, x0:x1]
    u = ((xx - bonnet[0]) * axis[0] + (yy - bonnet[1]) * axis[1]).astype(np.float32) / d
    v = ((xx - bonnet[0]) * perp[0] + (yy - bonnet[1]) * perp[1]).astype(np.float32) / d
    reach = (u > -0.6) & (u < 5.8) & (np.abs(v) < 1.1)                # the pixels the body can touch,
    ys, xs = np.nonzero(reach)                                          # as flat lists from here on
    pixels, u, v = (ys + y0, xs + x0), u[reach], v[reach]
    if not len(u):
        return
    px = 1 / d                                                          # one pixel, in head units

    def noise(su, sv, order=3):                                         # features su x sv head units apart
        return _noise(rng, v / max(sv, px), u / max(su, px), order)
    wave = height[pixels]
    broad, mid, fine = noise(0.3, 0.25, 1), noise(0.3, 0.05), noise(0.04, 0.025)
    inset = _head_profile(u, whale.build) - np.abs(v)                  # > 0 inside the outline
    body = np.clip(inset / max(px, 0.03) + 0.5, 0, 1)
    dive, flank = rng.uniform(1.5, 3.3), rng.uniform(0.02, 0.15)          # where the back goes under; awash flanks
    ragged = 0.05 * wave + 0.03 * mid
    waterline = dive - 1.5 * v * v + 0.15 * broad           # the back stays up longest mid-line
    above = np.clip((waterline - u) / 0.3 + 0.5, 0, 1) * np.clip((inset - flank + ragged) / 0.04 + 0.5, 0, 1)
    above = np.maximum(above, np.clip((1.3 - u) / 0.2, 0, 1))          # the head always breaks surface
    surface = body * above
    # a body under water darkens the sea, less with depth; the exposed back is blackish brown and wet
    depth = np.clip((u - dive) / 2.5, 0, 1)
    seen = np.clip(inset / (0.03 + 0.2 * depth) + 0.5, 0, 1) * (1 - above) * (1 - depth)   # blurs with depth
    under = img[pixels] * (1 - 0.6 * seen)[..., None]
    skin = np.float32([0.16, 0.145, 0.135]) * (1 + 0.15 * broad + 0.05 * mid)[..., None]
    skin += (0.3 * reflection[pixels])[..., None] * (s.sky_rgb - skin)          # wet skin mirrors the sky too
    sheen = np.exp(-(v / 0.15) ** 2) * np.clip(0.6 - 0.5 * broad, 0, 1) * (0.4 + 0.6 * s.glint)
    skin = skin + (0.08 * sheen)[..., None] * s.sky_rgb
    out = under + surface[..., None] * (skin - under)
    # callosities: the whale's own head-local raster, sampled at this photo's pixels
    gu, gv = (u - _GRID_U[0]) * _GRID_RES, (v - _GRID_V[0]) * _GRID_RES
    cov = ndimage.map_coordinates(whale.callosity, [gv, gu], order=1, cval=0.0, output=np.float32)
    rough = ndimage.map_coordinates(whale.roughness, [gv, gu], order=1, cval=1.0, output=np.float32)
    wash = np.clip(0.5 + 0.5 * broad - rng.uniform(0.5, 1.0), 0, 0.4) * (u > 0.3)
    cov *= surface * (1 - wash)
    out += cov[..., None] * (whale.callosity_rgb * (rough * (1 + 0.1 * s.glint))[..., None] - out)
    blowholes = sum(np.exp(-(((u - 1.0) / 0.045) ** 2 + ((v - side * 0.045) / 0.02) ** 2)) for side in (-1, 1))
    out *= (1 - 0.6 * np.clip(blowholes, 0, 1) * surface)[..., None]
    img[pixels] = out
    # white water: streaks along the awash flanks (one side more), where the back dives, the odd blow
    foam = np.clip(0.6 * mid + 0.5 * fine - 0.5, 0, 1)
    side = 1 + rng.uniform(-0.9, 0.9) * np.tanh(v / 0.2)
    edge = np.exp(-((inset - flank) / 0.06) ** 2) * np.clip(u - 0.5, 0, 1) * side
    wake = np.exp(-((u - waterline) / 0.3) ** 2) * np.clip(inset / 0.2 + 0.5, 0, 1)
    splash = 1.5 * rng.random() ** 1.5
    white[pixels] += splash * foam * (edge + wake)
    if rng.random() < 0.15:
        white[pixels] += 0.5 * np.exp(-(((u - 1.15) / 0.2) ** 2 + (v / 0.15) ** 2)) * (0.3 + foam)


def _jpeg(survey: SyntheticSurvey, photo: Photo) -> bytes:
    quality = int(_rng(survey.spec.seed, _RENDER, photo.index, 1).integers(72, 96))
    buf = io.BytesIO()
    Image.fromarray(render_photo(survey, photo)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# --- the data directory ----------------------------------------------------------------

_WORKER_SURVEY: SyntheticSurvey | None = None


def _init_worker(survey: SyntheticSurvey) -> None:
    global _WORKER_SURVEY
    _WORKER_SURVEY = survey


def _write_photo(index: int, imgs: Path, survey: SyntheticSurvey | None = None) -> None:
    survey = survey or _WORKER_SURVEY
    atomic.write_bytes(imgs / survey.photos[index].name, _jpeg(survey, survey.photos[index]))


def _render_all(survey: SyntheticSurvey, indices: list[int], imgs: Path, workers: int, progress: bool) -> None:
    with tqdm(total=len(indices), desc="rendering survey photos", unit="photo", disable=not progress) as bar:
        if workers <= 1 or len(indices) < 2 * workers:
            for i in indices:
                _write_photo(i, imgs, survey)
                bar.update()
            return
        # spawn, not fork: the caller may hold JAX's threads
        with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_worker, initargs=(survey,)) as pool:
            for job in futures.as_completed([pool.submit(_write_photo, i, imgs) for i in indices]):
                job.result()
                bar.update()


def _write_tables(survey: SyntheticSurvey, out: Path) -> None:
    """The label tables and the Sloth annotation files (of the training photos, as on Kaggle)."""
    photos = sorted(survey.photos, key=lambda p: int(p.name[2:-4]))
    whale_ids = [w.whale_id for w in survey.whales]
    for name, test in (("train.csv", False), ("test_labels.csv", True)):
        atomic.write_text(out / name, "Image,whaleID\n" + "".join(
            f"{p.name},{whale_ids[p.whale]}\n" for p in photos if p.test == test))
    classes = sorted(whale_ids)
    uniform = ",".join([f"{1 / len(classes):.10g}"] * len(classes))
    atomic.write_text(out / "sample_submission.csv", ",".join(["Image", *classes]) + "\n" + "".join(
        f"{p.name},{uniform}\n" for p in photos if p.test))
    atomic.write_text(out / "whale_types.csv", "whaleID,pattern_type\n" + "".join(
        f"{w.whale_id},{w.pattern_type}\n" for w in sorted(survey.whales, key=lambda w: w.whale_id)))
    train = sorted((p for p in photos if not p.test), key=lambda p: p.name)
    for name, kind, keys, attr in (("points1.json", "point", ("x", "y"), "bonnet"),
                                   ("points2.json", "point", ("x", "y"), "blowhead"),
                                   ("head_boxes.json", "rect", ("x", "y", "width", "height"), "head_box")):
        atomic.write_json(out / name, [{"filename": p.name, "class": "image", "annotations": [
            {"class": kind, **dict(zip(keys, getattr(p, attr)))}]} for p in train])


def generate_survey(out_dir, whales: int = 40, seed: int = 0, width: int = 480, height: int = 320,
                    test_fraction: float = 1 / 3, *, workers: int | None = None, overwrite: bool = False,
                    preview=None, progress: bool = True, **spec) -> Path:
    """Write a synthetic survey in the Kaggle layout to `out_dir` and return its path.

    Builds `<out_dir>.partial` and renames it at the end, so `out_dir` is either absent or complete; an
    interrupted run with the same parameters resumes there. Extra keyword arguments are `SurveySpec` fields.
    """
    spec = SurveySpec(whales=whales, seed=seed, width=width, height=height, test_fraction=test_fraction, **spec)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: directory is not empty; pass overwrite=True (--overwrite) to replace it")
        if not (out / "survey.json").is_file():
            raise FileExistsError(f"{out}: has no survey.json, so it is not a synthetic survey; refusing to delete it")
    survey = plan_survey(spec)
    n_train = sum(not p.test for p in survey.photos)
    meta = json.loads(json.dumps({                                     # as it reads back (tuples -> lists)
        "generator": "rightwhale.io.synth", "format_version": FORMAT_VERSION, "spec": asdict(spec),
        "pattern_types": list(PATTERN_TYPES), "whales": len(survey.whales), "sightings": len(survey.sightings),
        "train_photos": n_train, "test_photos": len(survey.photos) - n_train}))
    partial = out.with_name(out.name + ".partial")
    try:
        resumable = json.loads((partial / "survey.json").read_text()) == meta
    except (OSError, ValueError):
        resumable = False
    if partial.exists() and not resumable:
        shutil.rmtree(partial)
    atomic.write_json(partial / "survey.json", meta)
    (partial / "imgs").mkdir(exist_ok=True)
    names = {p.name for p in survey.photos}
    for leftover in (partial / "imgs").iterdir():                      # e.g. temp files of a killed run
        if leftover.name not in names:
            leftover.unlink()
    todo = [i for i, p in enumerate(survey.photos) if not (partial / "imgs" / p.name).is_file()]
    _render_all(survey, todo, partial / "imgs", workers or os.cpu_count() or 1, progress)
    _write_tables(survey, partial)
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    if preview is not None:
        write_preview(survey, out, preview)
    return out


def write_preview(survey: SyntheticSurvey, data_dir, png, columns: int = 4, rows: int = 3, width: int = 800) -> Path:
    """A PNG grid of photos (bonnet red, blowhead cyan, head box yellow) over a row of head crops of one
    whale from different sightings, so a reader sees that its callosities identify it."""
    imgs = Path(data_dir) / "imgs"
    tile_w = width // columns
    scale = tile_w / survey.spec.width
    tile_h = round(survey.spec.height * scale)
    train = [p for p in survey.photos if not p.test]
    shown = train[::max(1, len(train) // (columns * rows))][:columns * rows]
    best = max(range(len(survey.whales)), key=lambda w: sum(p.whale == w for p in survey.photos))
    crops = sorted((p for p in survey.photos if p.whale == best), key=lambda p: p.sighting)
    crops = ([p for i, p in enumerate(crops) if i == 0 or p.sighting != crops[i - 1].sighting] + crops)[:5]
    crop_w, crop_h = width // 5, width // 10
    sheet = Image.new("RGB", (width, rows * tile_h + crop_h + 16), "white")
    for k, photo in enumerate(shown):
        tile = Image.open(imgs / photo.name).convert("RGB").resize((tile_w, tile_h), Image.BILINEAR)
        sheet.paste(tile, ((k % columns) * tile_w, (k // columns) * tile_h))
    from rightwhale.geometry.crop import head_crop  # JAX, needed only for the preview
    for k, photo in enumerate(crops):          # the stage-3 crop: bonnet right, 2 d by 1 d
        head, _, _ = head_crop(np.asarray(Image.open(imgs / photo.name).convert("RGB")), photo.bonnet,
                               photo.blowhead, crop_w, crop_h)
        sheet.paste(Image.fromarray(head), (k * crop_w, rows * tile_h + 16))
    # a 124-colour palette keeps the PNG small; the marks get four reserved entries of their own
    sheet = sheet.quantize(colors=124)
    sheet.putpalette(sheet.getpalette()[:124 * 3] + [255, 48, 48, 48, 192, 255, 255, 224, 48, 0, 0, 0])
    bonnet, blowhead, box, ink = 124, 125, 126, 127
    draw = ImageDraw.Draw(sheet)
    for k, photo in enumerate(shown):
        x, y = (k % columns) * tile_w, (k // columns) * tile_h
        bx, by, bw, bh = (np.array(photo.head_box) * scale).tolist()
        draw.rectangle([x + bx, y + by, x + bx + bw, y + by + bh], outline=box)
        for (px, py), colour in ((photo.bonnet, bonnet), (photo.blowhead, blowhead)):
            px, py = x + (px + 0.5) * scale - 0.5, y + (py + 0.5) * scale - 0.5   # pixel centres
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
    whale = survey.whales[best]
    draw.text((4, rows * tile_h + 2), f"{whale.whale_id} ({PATTERN_TYPES[whale.pattern_type]} callosity "
              "pattern): head crops from several sightings, bonnet to the right", fill=ink)
    with atomic.atomic_open(png) as f:
        sheet.save(f, format="PNG", optimize=True)
    return Path(png)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m rightwhale synth",
        description="Generate the synthetic right whale aerial survey in the Kaggle layout (train.csv, "
                    "sample_submission.csv, imgs/, points1/2.json, head_boxes.json, plus test_labels.csv, "
                    "whale_types.csv and survey.json). Kaggle scale: --whales 447 --width 3072 --height 2048.")
    parser.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    parser.add_argument("--whales", type=int, default=40, help="number of individuals (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--width", type=int, default=480, help="photo width in pixels (default 480)")
    parser.add_argument("--height", type=int, default=320, help="photo height in pixels (default 320)")
    parser.add_argument("--test-fraction", type=float, default=1 / 3,
                        help="share of the photos of whales with >= 2 photos kept as test images (default 1/3)")
    parser.add_argument("--mean-photos", type=float, default=SurveySpec.mean_photos,
                        help="mean number of training photos per whale (default 10.2, as on Kaggle)")
    parser.add_argument("--preview", type=Path, help="also write a PNG preview grid with points and head boxes")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="rendering processes (default: cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing survey in --out")
    args = parser.parse_args(argv)
    try:
        out = generate_survey(args.out, args.whales, args.seed, args.width, args.height, args.test_fraction,
                              mean_photos=args.mean_photos, workers=args.workers, overwrite=args.overwrite,
                              preview=args.preview)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
