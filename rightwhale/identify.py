"""python -m rightwhale identify PHOTO...: which whale is this? The whole pipeline on new photos.

For each photo: the aligner finds bonnet and blowhead (with test-time
augmentation, whose spread says how sure it is), the head is cropped with
the bonnet to the right, every classifier run scores the crop, and the
probabilities come from what the ensemble chose out of fold: its stacker,
the classifiers' average (also without an ensemble) or the best single
classifier. Writes the aligned crop and a contact sheet of the crop beside
training crops of the top candidates, so a researcher can
confirm by eye.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rightwhale import atomic, crop, plots
from rightwhale.cache import rescale_points
from rightwhale.checkpoint import load_variables
from rightwhale.config import Tta
from rightwhale.data import DataError, load_survey
from rightwhale.ensemble import POOL, combine, default_runs, resolve_runs
from rightwhale.evaluate import load_classifier
from rightwhale.images import BadImage, read_image
from rightwhale.models import get_model
from rightwhale.stacking import LogLinearPool, Stacker
from rightwhale.stages.align import MIN_HEAD_KEY, predict_with_tta
from rightwhale.stages.classify import softmax
from rightwhale.stages.match import MatchRun, is_match_run
from rightwhale.training import predict

CANDIDATE_CROPS = 3     # training crops shown per candidate on the contact sheet


class Pipeline:
    """The trained runs identify needs, loaded once for many photos."""

    def __init__(self, align_run, classify_runs, ensemble_dir=None):
        align_run = Path(align_run)
        if not (align_run / "best.msgpack").is_file():
            raise DataError(f"{align_run}: no trained aligner; run `python train.py --stage align` first")
        self.align_cfg = json.loads((align_run / "config.json").read_text())
        self.aligner = get_model(self.align_cfg["model"], 4, **self.align_cfg["model_kwargs"])
        self.aligner_variables = load_variables(align_run / "best.msgpack")
        results = json.loads((align_run / "results.json").read_text()) if (align_run / "results.json").is_file() else {}
        self.min_head_length = results.get(MIN_HEAD_KEY)     # a fraction of the photo width, as align cut crops
        self.crops_dir = align_run / "crops"
        if not classify_runs:
            raise DataError("no classifier runs: train one with `python train.py --stage classify`")
        self.classify_runs = [Path(r) for r in classify_runs]
        self.classifiers = [MatchRun(r) if is_match_run(r) else load_classifier(r) for r in self.classify_runs]
        self.matcher = next((m for m in self.classifiers if isinstance(m, MatchRun)), None)
        self.classes = [m.classes if isinstance(m, MatchRun) else m[3] for m in self.classifiers]
        for run, classes in zip(self.classify_runs, self.classes):
            if classes != self.classes[0]:
                raise DataError(f"{run}: its whales differ from {self.classify_runs[0]}'s; identify with runs "
                                "trained on one data set")
        self.classes = self.classes[0]
        self.examples = {}     # whale -> its training crops, from the aligner's crop folder
        if (self.crops_dir / "train.csv").is_file():
            crops = load_survey(self.crops_dir)
            for name, whale in crops.train.items():
                self.examples.setdefault(whale, []).append(crops.image_path(name))
        self.fitted, self.use = (None, None), "plain average"      # how the runs' outputs combine
        self.matches = None         # the matcher's matches of the last crop classified
        if ensemble_dir and (Path(ensemble_dir) / "stacker.npz").is_file():
            info = json.loads((Path(ensemble_dir) / "stacker.json").read_text())
            if info["runs"] == [str(r.resolve()) for r in self.classify_runs]:
                self.use = info.get("use", "stacker")      # stacker, pool, plain average, or one run's name
                pool = Path(ensemble_dir) / "pool.npz"
                if self.use == POOL and not pool.is_file():
                    raise DataError(f"{pool}: missing, but the ensemble chose its log-linear pool; run "
                                    "`python ensemble.py` again")
                self.fitted = (Stacker.load(Path(ensemble_dir) / "stacker.npz"),
                               LogLinearPool.load(pool) if pool.is_file() else None)

    def align(self, path: Path, photo: np.ndarray):
        """(bonnet, blowhead) in photo pixels and the TTA spread in photo pixels."""
        size = self.align_cfg["image_size"]
        h, w = photo.shape[:2]
        small = read_image(path, size)            # decoded exactly as the aligner's cache was
        pts, spread = predict_with_tta(self.aligner, self.aligner_variables, small[None], Tta(**self.align_cfg["tta"]), 1)
        scale = np.array([w / size, h / size])
        return rescale_points(pts[0], scale), float(spread[0] * scale.mean())

    def classify(self, head: np.ndarray) -> np.ndarray:
        probs, features = [], []
        for member in self.classifiers:
            if isinstance(member, MatchRun):
                p, scores, queries, feats = member.identify([head])
                probs.append(p[0])
                features.append(scores[0])
                if member is self.matcher:        # the contact sheet shows the first match run's evidence
                    self.matches = (queries[0], feats[0])
                continue
            model, variables, cfg, _, _ = member
            size = cfg["image_size"]
            x = np.asarray(Image.fromarray(head).resize((size, size), Image.BICUBIC))[None]
            logits, feats = predict(model, variables, x, 1)
            probs.append(softmax(logits[:, :len(self.classes)])[0])
            features.append(feats[0])
        return combine(self.use, [r.name for r in self.classify_runs], np.stack(probs)[:, None],
                       np.concatenate(features)[None], self.fitted)[0]

    def describe(self) -> str:
        return {"stacker": "stacked ensemble", POOL: "log-linear pool of the ensemble's runs",
                "plain average": f"average of {len(self.classifiers)} classifier(s)"}.get(
            self.use, f"{self.use}, the best of the ensemble's candidates")

    def training_crops(self, whale: str, count: int) -> list[np.ndarray]:
        return [read_image(path) for path in self.examples.get(whale, [])[:count]]


def identify_photo(pipe: Pipeline, path: Path, top: int, out_dir: Path, stem: str) -> dict:
    photo = read_image(path)
    (bonnet, blowhead), spread = pipe.align(path, photo)
    cut = (bonnet, blowhead) if not pipe.min_head_length else \
        crop.lengthen((bonnet, blowhead), pipe.min_head_length * photo.shape[1])   # as the align stage cut crops
    head_length = float(np.linalg.norm(cut[0] - cut[1]))     # the head the crop was cut for
    size = pipe.align_cfg["crop_size"]
    made = crop.head_crop(photo, *cut, size, size, predicted=True)
    if isinstance(made, str):
        raise BadImage(f"{path}: the aligner's points cannot place a head ({made})")
    head, _, whole = made
    probs = pipe.classify(head)
    order = np.argsort(-probs)[:top]
    candidates = [(pipe.classes[i], float(probs[i])) for i in order]
    buf = io.BytesIO()
    Image.fromarray(head).save(buf, "PNG")
    atomic.write_bytes(out_dir / f"{stem}_crop.png", buf.getvalue())
    sheet, titles = [head], [f"{stem} (query)"]
    for whale, p in candidates:
        for i, example in enumerate(pipe.training_crops(whale, CANDIDATE_CROPS)):
            sheet.append(example)
            titles.append(f"{whale} {p:.2f}" if i == 0 else whale)
    plots.image_grid(sheet, out_dir / f"{stem}_candidates.png", titles=titles, ncols=1 + CANDIDATE_CROPS)
    inliers, drawn = {}, False
    if pipe.matcher is not None:        # why the matcher proposes each candidate: its matched keypoints
        inliers, drawn = match_sheet(pipe, head, candidates, out_dir / f"{stem}_matches.png")
    return {"photo": str(path), "crop": str(out_dir / f"{stem}_crop.png"),
            "candidates": str(out_dir / f"{stem}_candidates.png"), "bonnet": bonnet.tolist(), "blowhead": blowhead.tolist(),
            "tta_spread_px": spread, "head_length_px": head_length, "whole_photo_fallback": whole,
            "top": candidates, "combined by": pipe.describe(), "matcher inliers": inliers,
            "matches": str(out_dir / f"{stem}_matches.png") if drawn else None}


def match_sheet(pipe: Pipeline, head: np.ndarray, candidates, path: Path) -> tuple[dict, bool]:
    """The query crop beside each candidate's best-matching gallery crop, RANSAC inliers joined; returns the
    inlier count of each candidate and whether a picture was written (no candidate may have a verified crop)."""
    (query, feats), run = pipe.matches, pipe.matcher
    size = run.cfg.crop_size
    shown = np.asarray(Image.fromarray(head).resize((size, size), Image.BICUBIC))
    rows, counts = [], {}
    for whale, p in candidates:
        w = pipe.classes.index(whale)
        counts[whale] = int(query.inliers[w])
        gi = query.best_image.get(w)
        if gi is None:
            continue
        pairs, g = query.pairs[gi], run.gallery.features(gi)
        name = run.gallery.names[gi]
        try:
            candidate = np.asarray(Image.fromarray(read_image(run.crops_dir / "imgs" / name)).resize((size, size)))
        except (BadImage, OSError):
            continue
        rows.append({"query": shown, "candidate": candidate, "query_xy": feats.keypoints[pairs[:, 0], :2] * size,
                     "candidate_xy": g.keypoints[pairs[:, 1], :2] * size,
                     "title": f"{whale} p={p:.2f}: {len(pairs)} inliers with {name}"})
    if rows:
        plots.match_pairs(rows, path)
    return counts, bool(rows)


def confidence_note(result: dict) -> str:
    ratio = result["tta_spread_px"] / max(result["head_length_px"], 1e-9)
    verdict = ("alignment looks reliable" if ratio < 0.1 else
               "alignment is uncertain: check the crop" if ratio < 0.25 else
               "alignment disagrees across augmentations: the crop may miss the head")
    return f"aligner TTA spread {result['tta_spread_px']:.1f} px = {ratio:.0%} of the head length; {verdict}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale identify", description=__doc__.split("\n")[0])
    p.add_argument("photos", nargs="+", help="aerial photos (JPEG or PNG)")
    p.add_argument("--runs-root", help="folder of the trained runs (default ./runs, else ./runs/reproduce "
                                       "when only the reproduction has trained)")
    p.add_argument("--align", help="aligner run folder (default RUNS/align)")
    p.add_argument("--runs", nargs="*", help="classifier and matcher run folders (default: the ensemble's, "
                                             "else every RUNS/classify-aligned-* and RUNS/match-aligned)")
    p.add_argument("--ensemble", help="ensemble folder with stacker.npz (default RUNS/ensemble)")
    p.add_argument("--top", type=int, default=5, help="candidates to list (default 5)")
    p.add_argument("--out", default="identified", help="where crops and contact sheets go (default ./identified)")
    args = p.parse_args(argv)
    root = Path(args.runs_root or "runs")
    if args.runs_root is None and not (root / "align").is_dir() and (root / "reproduce" / "align").is_dir():
        root = root / "reproduce"
    ensemble = Path(args.ensemble or root / "ensemble")
    stacked = ensemble / "stacker.json"
    if args.runs:
        runs = resolve_runs(args.runs, root)
    else:
        runs = json.loads(stacked.read_text())["runs"] if stacked.is_file() else default_runs(root)
    try:
        pipe = Pipeline(args.align or root / "align", runs, ensemble)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, stems = [], set()
    for path in args.photos:
        stem = Path(path).stem
        while stem in stems:            # a/w_1.jpg and b/w_1.jpg must not overwrite each other
            stem += "_"
        stems.add(stem)
        try:
            result = identify_photo(pipe, Path(path), args.top, out, stem)
        except BadImage as e:
            print(f"{path}: skipped: {e}", file=sys.stderr)
            continue
        results.append(result)
        print(f"\n{path} ({result['combined by']}):")
        for rank, (whale, prob) in enumerate(result["top"], 1):
            print(f"  {rank}. {whale}  {prob:.3f}")
        if result["matcher inliers"]:
            print(f"  matcher inliers: {', '.join(f'{w} {n}' for w, n in result['matcher inliers'].items())}"
                  + (f"; matches: {result['matches']}" if result["matches"] else ""))
        print(f"  {confidence_note(result)}")
        if result["whole_photo_fallback"]:
            print("  note: the predicted points could not place a head crop; the whole photo was classified")
        print(f"  crop: {result['crop']}, candidates: {result['candidates']}")
    atomic.write_json(out / "identified.json", results)
    print(f"\n{len(results)} of {len(args.photos)} photo(s) identified; all results in {out / 'identified.json'}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
