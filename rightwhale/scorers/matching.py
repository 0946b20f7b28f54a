"""Identify a head crop by its local features: whitened RootSIFT, weighted LNBNN voting, RANSAC re-ranking.

The callosity pattern is a constellation of rough patches, which is what
local features describe. This follows HotSpotter (Crall et al. 2013, the
matcher behind Wildbook), adapted to aligned head crops:

- features: SIFT keypoints of the grey crop (OpenCV), descriptors made
  RootSIFT (L1-normalised, square-rooted), stored as uint8;
- descriptor whitening learnt from the gallery's own matches (whitening.py:
  on the real validation crops top-1 67.9% -> 70.1%);
- a gallery of the catalogue's crops, one approximate nearest-neighbour
  index (faiss IVF) over all their (whitened) descriptors;
- LNBNN: each query descriptor votes for the whales among its k nearest
  gallery descriptors, by how much nearer they are than the (k+1)-th (the
  "background" distance), at most one vote per whale. Because crops are
  aligned (bonnet right), a neighbour only votes when its keypoint lies
  within `radius` of the query keypoint in crop coordinates: in the first
  trial on the real crops (224 px, k 10) that alone took top-1 from 50% to 59%;
- keypoint weights: each vote is scaled by how often keypoints at its ends'
  places, sizes and strength ranks name their own whale in the gallery's
  leave-one-out votes (keypoint_weights.py; on the real crops a band along
  the head's midline counts up to 2.4 times the mean, the margins, mostly
  water, 0.2-0.5);
- spatial re-ranking: for the shortlisted whales, a similarity transform
  fitted by RANSAC (OpenCV) to the matches with each of their crops; the
  LNBNN weight of its inliers is added to the whale's score.

Scores become probabilities with a temperature and a floor fitted on the
gallery itself by leave-one-out (`calibrate`), never on validation crops.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, softmax
from tqdm import tqdm

from rightwhale.core import atomic
from rightwhale.core.config import Match
from rightwhale.core.errors import DataError
from rightwhale.scorers.keypoint_weights import KeypointWeights
from rightwhale.scorers.whitening import Whitening

FORMAT = 2             # 2: with the descriptor whitening (format 1 galleries read as unwhitened)
DIM = 128              # SIFT descriptor length
LOO_EXTRA = 10         # extra neighbours searched when a query's own crop is in the gallery
ADD_CHUNK = 65536       # descriptors converted to float32 and indexed at once
QUANT = 255.0          # RootSIFT components lie in [0, 1]; stored as uint8 at this scale
WHITE_OFFSET = 0.5     # whitened components lie in [-0.5, 0.5] (99.97% of real crops' vectors): coded after this shift


def _cv2():
    import cv2  # OpenCV's headless wheel; imported on use, like faiss, so the rest stays light
    cv2.setNumThreads(1)
    return cv2


def _faiss():
    import faiss
    return faiss


# --- features --------------------------------------------------------------

@dataclass(frozen=True)
class Features:
    """Keypoints (n, 4): x, y (fractions of the crop's width and height), size (fraction of the width),
    angle (degrees); descriptors (n, 128) RootSIFT as uint8."""
    keypoints: np.ndarray
    descriptors: np.ndarray

    def __len__(self):
        return len(self.keypoints)


def crop_features(image: np.ndarray, max_keypoints: int, upright: bool = False) -> Features:
    """RootSIFT features of an RGB uint8 crop, the `max_keypoints` strongest.

    upright: describe every keypoint at angle 0. Aligned crops do not need rotation invariance, and SIFT's
    extra keypoints for second orientations would otherwise take places in the cap."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 16:
        raise ValueError(f"expected an RGB uint8 crop of at least 16x16, got {image.shape} {image.dtype}")
    cv2 = _cv2()
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create(nfeatures=0 if upright else max_keypoints)
    if upright:
        points, seen = [], set()
        for p in sorted(sift.detect(grey, None), key=lambda p: -p.response):
            if (p.pt, p.size) not in seen:           # one keypoint per place and scale
                seen.add((p.pt, p.size))
                points.append(cv2.KeyPoint(p.pt[0], p.pt[1], p.size, 0.0, p.response, p.octave))
        points, desc = sift.compute(grey, points[:max_keypoints])
    else:
        points, desc = sift.detectAndCompute(grey, None)
        if desc is not None and points:       # strongest first, as upright lists them (keypoint weights' rank)
            order = np.argsort([-p.response for p in points], kind="stable")
            points, desc = [points[i] for i in order], desc[order]
    if desc is None or not points:
        return Features(np.zeros((0, 4), np.float32), np.zeros((0, DIM), np.uint8))
    desc = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + 1e-7))
    h, w = grey.shape
    kp = np.array([[p.pt[0] / w, p.pt[1] / h, p.size / w, p.angle] for p in points], np.float32)
    return Features(kp[:max_keypoints], np.round(desc[:max_keypoints] * QUANT).astype(np.uint8))


def as_float(descriptors: np.ndarray) -> np.ndarray:
    return np.asarray(descriptors, np.float32) / QUANT


def vectors(descriptors: np.ndarray, whitening: Whitening | None) -> np.ndarray:
    """The float32 vectors the index compares: whitened RootSIFT, or RootSIFT on the stored uint8 grid."""
    if whitening is not None:
        return whitening.apply(descriptors)
    if descriptors.dtype != np.uint8:
        descriptors = np.clip(np.round(np.asarray(descriptors) * QUANT), 0, 255)
    return as_float(descriptors)


# --- the gallery -------------------------------------------------------------

@dataclass
class Gallery:
    """The catalogue's crops as one array of features, image i owning rows offsets[i]:offsets[i + 1].

    `centroids` are the coarse quantizer of the IVF index and `whitening` the descriptors' projection
    (whitening.py), both learnt once on the first build and kept: crops added later are whitened alike and
    go into the same cells, so a grown gallery searches exactly like one built from all its crops with them.
    """
    names: list[str]
    whales: list[str]
    offsets: np.ndarray          # (images + 1,) int64
    keypoints: np.ndarray        # (N, 4) float32
    descriptors: np.ndarray      # (N, 128) uint8
    centroids: np.ndarray | None = None   # (cells, 128) float32, in the space of `vectors`
    whitening: Whitening | None = None

    @classmethod
    def empty(cls) -> "Gallery":
        return cls([], [], np.zeros(1, np.int64), np.zeros((0, 4), np.float32), np.zeros((0, DIM), np.uint8))

    def __len__(self):
        return len(self.names)

    @property
    def owner(self) -> np.ndarray:
        """The gallery image of every descriptor row."""
        return np.repeat(np.arange(len(self.names)), np.diff(self.offsets))

    def features(self, i: int) -> Features:
        a, b = self.offsets[i], self.offsets[i + 1]
        return Features(self.keypoints[a:b], self.descriptors[a:b])

    def add(self, names, whales, features: list[Features]) -> "Gallery":
        """A gallery with these crops appended; existing features are kept as they are."""
        clash = set(names) & set(self.names)
        if clash or len(set(names)) != len(names):
            raise DataError(f"gallery: crop names already present or repeated: {', '.join(sorted(clash)[:5])}")
        counts = np.array([len(f) for f in features], np.int64)
        return Gallery(self.names + list(names), self.whales + list(whales),
                       np.concatenate([self.offsets, self.offsets[-1] + np.cumsum(counts)]),
                       np.concatenate([self.keypoints, *[f.keypoints for f in features]]).astype(np.float32),
                       np.concatenate([self.descriptors, *[f.descriptors for f in features]]).astype(np.uint8),
                       self.centroids, self.whitening)

    def subset(self, images) -> "Gallery":
        """The gallery of these images only (indices, in order), same centroids and whitening."""
        images = np.asarray(images, np.int64)
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in images]) \
            if len(images) else np.zeros(0, np.int64)
        counts = np.diff(self.offsets)[images]
        return Gallery([self.names[i] for i in images], [self.whales[i] for i in images],
                       np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.keypoints[rows],
                       self.descriptors[rows], self.centroids, self.whitening)

    def vectors(self, rows=slice(None)) -> np.ndarray:
        return vectors(self.descriptors[rows], self.whitening)

    def nbytes(self) -> int:
        arrays = (self.offsets, self.keypoints, self.descriptors, self.centroids,
                  *(self.whitening.arrays().values() if self.whitening else ()))
        return sum(a.nbytes for a in arrays if a is not None)

    def save(self, path) -> None:
        atomic.write_npz(path, format=FORMAT, names=np.array(self.names, dtype=str),
                         whales=np.array(self.whales, dtype=str), offsets=self.offsets, keypoints=self.keypoints,
                         descriptors=self.descriptors,
                         centroids=np.zeros((0, DIM), np.float32) if self.centroids is None else self.centroids,
                         **(self.whitening.arrays() if self.whitening else Whitening.none_arrays()))

    @classmethod
    def load(cls, path) -> "Gallery":
        """Read and validate a saved gallery (plain arrays, no pickle)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise DataError(f"{path}: no gallery; build one with `python train.py --stage match`") from None
        except Exception as e:        # a truncated or foreign file: zip, npy or pickle errors alike
            raise DataError(f"{path}: not a readable gallery ({type(e).__name__}: {e})") from e
        need = {"format", "names", "whales", "offsets", "keypoints", "descriptors", "centroids"}
        if "format" in a and int(a["format"]) == 1:       # before the whitening: raw RootSIFT
            a = {**a, **Whitening.none_arrays()}
        need |= set(Whitening.none_arrays())
        if need - a.keys() or int(a["format"]) not in (1, FORMAT):
            raise DataError(f"{path}: not a gallery of format {FORMAT} (has {', '.join(sorted(a))})")
        try:
            problems = cls._problems(a)
        except (IndexError, TypeError, ValueError) as e:
            problems = [f"malformed arrays ({e})"]
        if problems:
            raise DataError(f"{path}: corrupt gallery: {'; '.join(problems)}")
        whitening = Whitening.from_arrays(a["whitening_mean"], a["whitening_projection"], path)
        return cls(a["names"].tolist(), a["whales"].tolist(), a["offsets"].astype(np.int64), a["keypoints"],
                   a["descriptors"], a["centroids"].astype(np.float32) if len(a["centroids"]) else None, whitening)

    @staticmethod
    def _problems(a: dict) -> list[str]:
        n, off = len(a["names"]), a["offsets"]
        return [what for what, bad in [
            ("whales and names differ in length", len(a["whales"]) != n),
            ("offsets do not match the images", off.shape != (n + 1,) or off[0] != 0 or (np.diff(off) < 0).any()),
            ("keypoints are not (N, 4) float32", a["keypoints"].shape != (int(off[-1]), 4)
             or a["keypoints"].dtype != np.float32 or not np.isfinite(a["keypoints"]).all()),
            ("descriptors are not (N, 128) uint8", a["descriptors"].shape != (int(off[-1]), DIM)
             or a["descriptors"].dtype != np.uint8),
            ("centroids are not (cells, 128)", a["centroids"].ndim != 2 or a["centroids"].shape[1] != DIM)]
            if bad]


def extract(images, names, max_keypoints: int, upright: bool = False, progress: bool = True, desc: str = "features"):
    """Features of many crops; a crop that yields none is reported by name, not fatal.
    `images` maps index -> RGB uint8 array (a cache's memmap rows). Returns (features, [(name, why)])."""
    features, problems = [], []
    for name, image in tqdm(zip(names, images), total=len(names), disable=not progress, desc=desc, unit="crop"):
        f = crop_features(np.asarray(image), max_keypoints, upright)
        if not len(f):
            problems.append((name, "no SIFT keypoint (blank or featureless crop)"))
        features.append(f)
    return features, problems


# --- nearest neighbours ------------------------------------------------------------

def train_centroids(descriptors: np.ndarray, cells: int, seed: int = 0, whitening: Whitening | None = None) -> np.ndarray:
    """k-means centroids of (a sample of) the descriptors, whitened when `whitening` is given: the IVF
    index's cells.

    On one thread: faiss sums the cells' members in parallel, so its centroids, and every score of the
    index, would depend on the machine's thread count (the real crops' top-1 moved 63.3% -> 64.0% between
    2 threads and 1). A few seconds longer for a 3,000-crop gallery."""
    faiss = _faiss()
    cells = max(1, min(cells, len(descriptors) // 39))    # faiss wants about 39 points per centroid
    sample = np.random.default_rng(seed).permutation(len(descriptors))[:cells * 100]
    x = vectors(descriptors[np.sort(sample)], whitening)
    km = faiss.Kmeans(DIM, cells, niter=20, seed=seed, verbose=False)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km.train(x)
    finally:
        faiss.omp_set_num_threads(threads)
    return km.centroids.astype(np.float32)


class Index:
    """k-nearest-neighbour search over the gallery's descriptor vectors (`vectors`: whitened when the gallery
    has a whitening), returning squared L2 distances.

    kind "ivf": faiss IVF over 8-bit codes (raw RootSIFT: the stored uint8 descriptors themselves, no loss
    beyond the cells it skips; whitened: the vectors on the same 1/255 grid; the default: fast, a
    3,610-crop gallery in about 140 MB); "exact": faiss brute force; "jax": exact by matmul in chunks in
    JAX, for a GPU.
    """

    def __init__(self, gallery: Gallery, kind: str = "ivf", probes: int = 16):
        self.kind, self.whitening = kind, gallery.whitening
        self.offset = WHITE_OFFSET if gallery.whitening is not None else 0.0
        if kind == "jax":
            self.gallery = jnp.asarray(gallery.vectors())
            return
        faiss = _faiss()
        if kind == "exact":
            self.index = faiss.IndexFlatL2(DIM)
        elif kind == "ivf":
            if gallery.centroids is None:
                raise ValueError("an IVF index needs the gallery's centroids (train_centroids)")
            quantizer = faiss.IndexFlatL2(DIM)
            quantizer.add(self._codes(gallery.centroids))      # the codes' scale: 0..255
            self.index = faiss.IndexIVFScalarQuantizer(quantizer, DIM, len(gallery.centroids),
                                                       faiss.ScalarQuantizer.QT_8bit_direct, faiss.METRIC_L2,
                                                       False)     # codes of the vectors, not of residuals
            self.index.train(np.zeros((1, DIM), np.float32))   # direct codes learn nothing; the cells are given
            self.index.nprobe = probes
            self.quantizer = quantizer        # faiss keeps a raw pointer; hold the Python object
        else:
            raise ValueError(f"unknown index kind {kind!r}; choose ivf, exact or jax")
        for start in range(0, len(gallery.descriptors), ADD_CHUNK):   # float32 copies a chunk at a time
            self.index.add(self._scaled(gallery.descriptors[start:start + ADD_CHUNK]))

    def _codes(self, x: np.ndarray) -> np.ndarray:
        """Vectors as IVF's direct 8-bit codes, 0..255 (whole numbers, so that faiss stores them exactly)."""
        return np.clip(np.round((x + np.float32(self.offset)) * np.float32(QUANT)), 0, 255).astype(np.float32)

    def _scaled(self, descriptors: np.ndarray) -> np.ndarray:
        """float32 at the index's scale: codes for IVF, the vectors themselves otherwise."""
        x = vectors(descriptors, self.whitening)
        return self._codes(x) if self.kind == "ivf" else x

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "jax":
            return exact_knn_jax(self._scaled(queries), self.gallery, k)
        dist, idx = self.index.search(self._scaled(queries), k)
        return np.maximum(dist, 0) / (QUANT ** 2 if self.kind == "ivf" else 1.0), idx


@functools.partial(jax.jit, static_argnames="k")
def _knn_chunk(q, g, offset, best_d, best_i, k: int):
    """Merge the k nearest of one gallery chunk into the best so far."""
    d = (q * q).sum(1, keepdims=True) - 2 * q @ g.T + (g * g).sum(1)[None]
    neg, pos = jax.lax.top_k(-d, k)
    d_all = jnp.concatenate([best_d, -neg], axis=1)
    i_all = jnp.concatenate([best_i, offset + pos.astype(jnp.int32)], axis=1)
    neg, pos = jax.lax.top_k(-d_all, k)
    return -neg, jnp.take_along_axis(i_all, pos, axis=1)


def exact_knn_jax(queries: np.ndarray, gallery, k: int, chunk: int = 65536, query_chunk: int = 4096):
    """Exact k nearest neighbours by matmul, the gallery in chunks (merged top-k), jitted: for a GPU.
    Queries go in chunks too, so memory stays at query_chunk x chunk distances."""
    n, out_d, out_i = gallery.shape[0], [], []
    k = min(k, n)              # a single chunk has only n rows to choose from; padded chunks have more
    for qs in range(0, len(queries), query_chunk):
        q = jnp.asarray(queries[qs:qs + query_chunk])
        best_d = jnp.full((len(q), k), jnp.inf, jnp.float32)
        best_i = jnp.full((len(q), k), -1, jnp.int32)
        for start in range(0, n, chunk):
            g = gallery[start:start + chunk]
            if g.shape[0] < chunk and n > chunk:      # keep one compiled shape: pad the last chunk far away
                g = jnp.concatenate([g, jnp.full((chunk - g.shape[0], DIM), 1e3, jnp.float32)])
            best_d, best_i = _knn_chunk(q, g, start, best_d, best_i, k=k)
        out_d.append(np.maximum(np.asarray(best_d), 0))
        out_i.append(np.where(np.asarray(best_i) >= n, -1, np.asarray(best_i)).astype(np.int64))
    if not out_d:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(out_d), np.concatenate(out_i)


# --- scoring ---------------------------------------------------------------------

@dataclass
class QueryScores:
    """One query crop against the gallery: per-whale scores, and the RANSAC inliers behind them."""
    scores: np.ndarray                      # (whales,) LNBNN + weight of RANSAC inliers
    inliers: np.ndarray                     # (whales,) inlier count with the whale's best crop
    best_image: dict[int, int]              # whale -> gallery image with the most inlier weight
    pairs: dict[int, np.ndarray]            # gallery image -> (m, 2) inlier (query kp, gallery kp) rows


def score_matrix(queries: list[QueryScores], classes: int) -> np.ndarray:
    """(queries, classes) scores, also for no query."""
    return np.array([q.scores for q in queries], np.float64).reshape(len(queries), classes)


class Matcher:
    """Scores query crops against a gallery. Whale columns are `classes` (gallery whales outside it are
    ignored; a class without crops in the gallery scores zero). With `weights` (keypoint_weights), a
    neighbour's LNBNN weight is scaled by the geometric mean of its query and gallery keypoints' weights."""

    def __init__(self, gallery: Gallery, classes: list[str], cfg: Match, weights: KeypointWeights | None = None):
        self.gallery, self.classes, self.cfg = gallery, list(classes), cfg
        column = {c: i for i, c in enumerate(self.classes)}
        self.image_whale = np.array([column.get(w, -1) for w in gallery.whales], np.int64)
        self.owner = gallery.owner
        self.row_whale = self.image_whale[self.owner] if len(self.owner) else np.zeros(0, np.int64)
        self.index = Index(gallery, cfg.index, cfg.probes)
        self.position = {n: i for i, n in enumerate(gallery.names)}
        self.weights, self.row_weight = weights, self._row_weights(weights)

    def with_weights(self, weights: KeypointWeights | None) -> "Matcher":
        """The same matcher (sharing its index) with these keypoint weights."""
        other = copy.copy(self)
        other.weights, other.row_weight = weights, self._row_weights(weights)
        return other

    def _row_weights(self, weights: KeypointWeights | None) -> np.ndarray | None:
        """sqrt of every gallery row's keypoint weight; a row's rank is its place in its crop's features."""
        if weights is None:
            return None
        ranks = np.arange(len(self.owner)) - self.gallery.offsets[self.owner]
        return np.sqrt(weights.of(self.gallery.keypoints, ranks))

    def score(self, features: Features, exclude: str | None = None) -> QueryScores:
        return self.score_many([features], [exclude])[0]

    def score_many(self, features: list[Features], exclude=None, progress: bool = False) -> list[QueryScores]:
        """Scores of many queries (one index search for a batch of them); `exclude[i]` names a gallery
        crop query i must not match (leave-one-out: the query itself)."""
        return [self._query(f, neighbours) for f, neighbours in self._searched(features, exclude, progress)]

    def votes(self, features: list[Features], exclude=None, progress: bool = False) -> list[tuple]:
        """Per query, its LNBNN votes as (query keypoint row, whale column, weight) arrays: what the
        keypoint weights are learnt from."""
        out = []
        for f, neighbours in self._searched(features, exclude, progress):
            lnbnn = self._lnbnn(f, *neighbours)
            if lnbnn is None:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)))
                continue
            _, weight, _, first, whale = lnbnn
            rows, cols = np.nonzero(first)
            out.append((rows, whale[rows, cols], weight[rows, cols]))
        return out

    def _searched(self, features, exclude, progress):
        """(query, (distances, neighbour rows, excluded gallery image)) in order, searched in batches."""
        exclude = exclude or [None] * len(features)
        batch = 64
        for start in tqdm(range(0, len(features), batch), disable=not progress, desc="matching", unit="batch"):
            part = features[start:start + batch]
            desc = np.concatenate([f.descriptors for f in part]) if part else np.zeros((0, DIM), np.uint8)
            k = self.cfg.neighbours
            # leave-one-out: room for the excluded crop's own descriptors, nearest to their own copies
            extra = 0 if all(e is None for e in exclude[start:start + batch]) else LOO_EXTRA
            found = min(k + 1 + extra, max(len(self.owner), 1))
            dist, idx = self.index.search(desc, found) if len(desc) and len(self.owner) else (
                np.zeros((len(desc), found), np.float32), np.full((len(desc), found), -1, np.int64))
            row = 0
            for f, ex in zip(part, exclude[start:start + batch]):
                n = len(f)
                yield f, (dist[row:row + n], idx[row:row + n], self.position.get(ex, -1))
                row += n

    def _lnbnn(self, f: Features, dist: np.ndarray, idx: np.ndarray, excluded: int):
        """The k nearest neighbours kept for each query descriptor, their LNBNN weights, which of them
        vote and which is each whale's one vote; None where there is nothing to match."""
        cfg, k = self.cfg, self.cfg.neighbours
        if not len(f) or not len(self.owner):
            return None
        # drop neighbours that are missing (-1) or belong to the excluded crop, keep the first k + 1
        owner = np.where(idx >= 0, self.owner[np.maximum(idx, 0)], -1)
        drop = (idx < 0) | (owner == excluded)
        order = np.argsort(drop, axis=1, kind="stable")[:, :k + 1]
        dist, idx, drop = (np.take_along_axis(a, order, 1) for a in (dist, idx, drop))
        if dist.shape[1] < k + 1:
            return None
        d = np.sqrt(dist)
        weight = np.maximum(d[:, k:k + 1] - d[:, :k], 0)
        idx, drop = np.maximum(idx[:, :k], 0), drop[:, :k] | drop[:, k:k + 1]
        if self.weights is not None:
            weight = weight * np.sqrt(self.weights.of(f.keypoints))[:, None] * self.row_weight[idx]
        whale = self.row_whale[idx]
        apart = np.linalg.norm(self.gallery.keypoints[idx, :2] - f.keypoints[:, None, :2], axis=2)
        vote = (apart < cfg.radius) & ~drop & (whale >= 0)
        # at most one vote per whale per query descriptor: its nearest voting neighbour
        first = vote.copy()
        for j in range(1, k):
            first[:, j] &= ~((whale[:, :j] == whale[:, j:j + 1]) & vote[:, :j]).any(axis=1)
        return idx, weight, vote, first, whale

    def _query(self, f: Features, neighbours) -> QueryScores:
        n_whales = len(self.classes)
        scores, inliers = np.zeros(n_whales), np.zeros(n_whales, np.int64)
        lnbnn = self._lnbnn(f, *neighbours)
        if lnbnn is None:
            return QueryScores(scores, inliers, {}, {})
        idx, weight, vote, first, whale = lnbnn
        np.add.at(scores, whale[first], weight[first])
        verified, best_image, pairs = self._verify(f, scores, idx, weight, vote, inliers)
        return QueryScores(scores + self.cfg.inlier_weight * verified, inliers, best_image, pairs)

    def _verify(self, f, lnbnn, idx, weight, vote, inliers):
        """RANSAC similarity per crop of the shortlisted whales: each whale's best inlier weight (and its
        count, written into `inliers`), the crop it came from, and every verified crop's inlier pairs."""
        cv2, cfg = _cv2(), self.cfg
        cv2.setRNGSeed(0)          # RANSAC's samples: a query scores the same whatever was scored before it
        verified = np.zeros(len(self.classes))
        shortlist = np.argsort(-lnbnn, kind="stable")[:cfg.shortlist]
        shortlist = shortlist[lnbnn[shortlist] > 0]
        image = self.owner[idx]
        wanted = vote & np.isin(self.image_whale[image], shortlist)
        q_row, col = np.nonzero(wanted)
        best_image, pairs = {}, {}
        for gi in np.unique(image[q_row, col]):
            sel = image[q_row, col] == gi
            qr, g_row, w = q_row[sel], idx[q_row[sel], col[sel]], weight[q_row[sel], col[sel]]
            if len(qr) < 3:
                continue
            src = f.keypoints[qr, :2].astype(np.float64)
            dst = self.gallery.keypoints[g_row, :2].astype(np.float64)
            model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac_threshold,
                                                      maxIters=cfg.ransac_iterations, confidence=0.99, refineIters=0)
            if model is None:
                continue
            scale = math.hypot(model[0, 0], model[1, 0])
            if not 1 / cfg.max_scale < scale < cfg.max_scale:
                continue
            mask = mask.ravel().astype(bool)
            whale = self.image_whale[gi]
            gain = float(w[mask].sum())
            if gain > verified[whale]:
                verified[whale], inliers[whale], best_image[int(whale)] = gain, int(mask.sum()), int(gi)
            pairs[int(gi)] = np.stack([qr[mask], g_row[mask] - self.gallery.offsets[gi]], axis=1)
        return verified, best_image, pairs


# --- calibration -------------------------------------------------------------------

def calibration_logits(scores: np.ndarray) -> np.ndarray:
    """sqrt of the whale scores: LNBNN sums grow with the number of matching keypoints, and a softmax of the
    sums themselves is overconfident for the crops with most of them (2-fold CV over the real training crops'
    leave-one-out scores: log loss 2.92 with the square root, 2.96 with log1p, 2.99 raw)."""
    return np.sqrt(np.maximum(scores, 0))


@dataclass(frozen=True)
class Calibration:
    """p = (1 - floor) * softmax(sqrt(scores) / temperature) + floor * prior."""
    temperature: float
    floor: float
    prior: np.ndarray

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        logits = calibration_logits(np.atleast_2d(scores))
        return (1 - self.floor) * softmax(logits / self.temperature, axis=1) + self.floor * self.prior

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "floor": self.floor}


def calibrate(scores: np.ndarray, labels: np.ndarray, prior: np.ndarray, pseudo_errors: int = 1) -> Calibration:
    """Temperature and floor of lowest log loss on leave-one-out scores of gallery crops.

    Plus `pseudo_errors` rows of one error the gallery might not show (Laplace's rule of succession): the
    leave-one-out row of smallest margin, labelled with its runner-up whale. A gallery that leave-one-out
    never gets wrong (the embedded survey's annotated-point crops) otherwise fits a temperature and floor of
    certainty, and crops cut otherwise are then wrong with probability 1: on the survey's aligned crops this
    one row takes log loss from 9.26 to 3.44; on the real crops it changes it by under 0.0001."""
    if pseudo_errors and len(scores) and scores.shape[1] > 1:
        margin = np.diff(np.sort(scores, axis=1)[:, -2:], axis=1)[:, 0]
        hard = np.argsort(margin, kind="stable")[:pseudo_errors]
        runner_up = np.argsort(-scores[hard], axis=1, kind="stable")[:, 1]
        scores, labels = np.concatenate([scores, scores[hard]]), np.concatenate([labels, runner_up])
    logprior, scores = np.log(prior), calibration_logits(scores)

    def loss(theta):
        t, floor = math.exp(theta[0]), expit(theta[1])
        logp = np.logaddexp(math.log1p(-floor) + log_softmax(scores / t, axis=1), math.log(floor) + logprior)
        return -logp[np.arange(len(labels)), labels].mean()
    start = math.log(max(float(np.std(scores)), 1e-6))
    best = minimize(loss, x0=[start, -2.0], method="L-BFGS-B", bounds=[(start - 12, start + 12), (-12, 0)])
    return Calibration(math.exp(best.x[0]), float(expit(best.x[1])), prior)
