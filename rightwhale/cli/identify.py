"""python -m rightwhale identify PHOTO_OR_DIR... --out OUT: which whales are in these photos?

A whole survey flight at once. For each photo the aligner finds bonnet and
blowhead (with test-time augmentation, whose spread says how sure it is),
the head is cropped with the bonnet to the right (or, with --crops, the
photos already are such crops), every classifier and matcher run scores
it, and the probabilities come from what the ensemble chose out of fold.
Each photo then gets a decision: `known`, `new?` (the matcher's new-whale
score is past the threshold its catalogue calibrated, rightwhale/scorers/novelty.py)
or `check alignment` (the aligner's augmentations disagree). Photos of the
batch that are `new?` but match each other strongly become one provisional
individual, new-1, new-2, ...

OUT holds, per photo, the crop, a contact sheet, the matched keypoints and
photos/STEM.json (what makes the batch resumable: a photo done is not done
again), and for the batch identifications.csv, identifications.json and
review.html, the page where a researcher accepts or rejects each proposal
and saves the decisions for `python -m rightwhale catalogue add`.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import softmax
from tqdm import tqdm

from rightwhale.core import atomic, runlock
from rightwhale.core.config import Tta
from rightwhale.core.errors import DataError
from rightwhale.core.records import AVERAGE, ENSEMBLE, POOL, RESULTS, STACKER, EnsembleRecord, RunRecord
from rightwhale.ensemble.members import choice_name, combine, default_runs, ensemble_runs, resolve_runs
from rightwhale.ensemble.stacking import LogLinearPool, Stacker
from rightwhale.geometry import crop
from rightwhale.io.cache import rescale_points
from rightwhale.io.checkpoint import load_variables
from rightwhale.io.images import BadImage, read_bounded, read_image
from rightwhale.io.survey import load_survey
from rightwhale.models import get_model
from rightwhale.scorers import matching, novelty
from rightwhale.scorers.classifier import load_classifier
from rightwhale.scorers.match_run import MatchRun, is_match_run
from rightwhale.train.feed import predict
from rightwhale.train.tta import predict_with_tta
from rightwhale.views import plots
from rightwhale.views.review import write_review

CANDIDATE_CROPS = 3         # training crops shown per candidate on the contact sheet
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
UNSURE_SPREAD = 0.25        # TTA spread / head length past which the crop may miss the head
KNOWN, NEW, CHECK = "known", "new?", "check alignment"
MATCHER_ALONE = "matcher alone"
MAX_SIDE = 4096             # photos are decoded at most this large (DCT-scaled): memory stays bounded
PRINTED = 20                # larger batches print a summary only; every photo is in identifications.csv


class Pipeline:
    """The trained runs identify needs, loaded once for many photos. `align_run` None: photos are crops."""

    def __init__(self, align_run, classify_runs, ensemble_dir=None):
        self.aligner = None
        if align_run is not None:
            align_run = Path(align_run)
            if not (align_run / "best.msgpack").is_file():
                raise DataError(f"{align_run}: no trained aligner; run `python train.py --stage align` first, "
                                "or pass --crops for photos that already are head crops")
            self.align_cfg = json.loads((align_run / "config.json").read_text())
            self.aligner = get_model(self.align_cfg["model"], 4, **self.align_cfg["model_kwargs"])
            self.aligner_variables = load_variables(align_run / "best.msgpack")
            # a fraction of the photo width, as align cut its crops
            self.min_head_length = RunRecord.load(align_run).min_head_length \
                if (align_run / RESULTS).is_file() else None
        if not classify_runs:
            raise DataError("no classifier runs: train one with `python train.py --stage classify` "
                            "(or --stage match)")
        self.classify_runs = [Path(r) for r in classify_runs]
        self.classifiers = [MatchRun(r) if is_match_run(r) else load_classifier(r) for r in self.classify_runs]
        self.matcher = next((m for m in self.classifiers if isinstance(m, MatchRun)), None)
        self.notes = []
        trained = [m.classes[:len(m.classes) - len(m.added_whales)] if isinstance(m, MatchRun) else m[3]
                   for m in self.classifiers]
        for run, member, classes in zip(self.classify_runs, self.classifiers, trained):
            if classes != trained[0] or (isinstance(member, MatchRun) and member.classes != self.matcher.classes):
                raise DataError(f"{run}: its whales differ from {self.classify_runs[0]}'s; identify with runs "
                                "trained on one data set (and match runs of one catalogue)")
        self.classes = self.matcher.classes if self.matcher is not None else trained[0]
        self.examples = {}     # whale -> its training crops: the aligner's crop folder, the matcher's catalogue
        if self.aligner is not None and (align_run / "crops" / "train.csv").is_file():
            crops = load_survey(align_run / "crops")
            for name, whale in crops.train.items():
                self.examples.setdefault(whale, []).append(crops.image_path(name))
        if self.matcher is not None:          # whales without crops there (added to the catalogue, or --crops)
            missing = set(self.matcher.classes) - set(self.examples)
            for name, whale in zip(self.matcher.gallery.names, self.matcher.gallery.whales):
                if whale in missing:
                    self.examples.setdefault(whale, []).append(self.matcher.crop_path(name))
        self.fitted, self.choice = (None, None), (AVERAGE, None)      # how the runs' outputs combine
        self.matches = None         # the matcher's matches of the last crop classified
        if self.matcher is not None and self.matcher.added_whales:
            self.choice = (MATCHER_ALONE, None)
            if len(self.classifiers) > 1:
                self.notes.append(f"the catalogue has {len(self.matcher.added_whales)} whale(s) the CNN runs never "
                                  "saw (added by `catalogue add`): candidates are ranked by the matcher alone "
                                  "until the CNNs are retrained")
        elif ensemble_dir and (Path(ensemble_dir) / "stacker.npz").is_file():
            info = EnsembleRecord.load(ensemble_dir)
            if info.member_dirs(ensemble_dir) == [r.resolve() for r in self.classify_runs]:
                self.choice = (info.combination, info.member)
                pool = Path(ensemble_dir) / "pool.npz"
                if info.combination == POOL and not pool.is_file():
                    raise DataError(f"{pool}: missing, but the ensemble chose its log-linear pool; run "
                                    "`python ensemble.py` again")
                self.fitted = (Stacker.load(Path(ensemble_dir) / "stacker.npz"),
                               LogLinearPool.load(pool) if pool.is_file() else None)
        # what a photo's record was made with: a rerun of the batch redoes a photo made otherwise
        self.fingerprint = {"align": str(align_run.resolve()) if self.aligner is not None else None,
                            "runs": [str(r.resolve()) for r in self.classify_runs], "combined by": self.choice[0] if self.choice[0] == MATCHER_ALONE else choice_name(*self.choice),
                            "catalogue crops": len(self.matcher.gallery) if self.matcher is not None else None}
        # the new-whale score's threshold: the matcher's, calibrated on its catalogue (None: never `new?`)
        self.new_threshold = None if self.matcher is None or self.matcher.new_whale is None \
            else self.matcher.new_whale.threshold
        if self.matcher is None:
            self.notes.append("no match run: no new-whale score, every photo is named a known whale")
        elif self.matcher.new_whale is None:
            self.notes.append(f"{self.matcher.run_dir}: made before the new-whale score; run the match stage "
                              "again to flag new whales (or give --new-threshold)")

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
                if member is self.matcher:        # the contact sheet shows the first match run's evidence
                    self.matches = (queries[0], feats[0])
                    if self.choice[0] == MATCHER_ALONE:
                        return p[0]
                probs.append(p[0])
                features.append(scores[0])
                continue
            model, variables, cfg, _, _ = member
            size = cfg["image_size"]
            x = np.asarray(Image.fromarray(head).resize((size, size), Image.BICUBIC))[None]
            logits, feats = predict(model, variables, x, 1)
            probs.append(softmax(logits[:, :len(self.classes)], axis=1)[0])
            features.append(feats[0])
        return combine(*self.choice, [r.name for r in self.classify_runs], np.stack(probs)[:, None],
                       np.concatenate(features)[None], self.fitted)[0]

    def describe(self) -> str:
        combination, member = self.choice
        return {STACKER: "stacked ensemble", POOL: "log-linear pool of the ensemble's runs",
                MATCHER_ALONE: f"the matcher alone ({self.matcher.run_dir.name})" if self.matcher else "",
                AVERAGE: f"average of {len(self.classifiers)} classifier(s)" if len(self.classifiers) > 1
                else f"{self.classify_runs[0].name} alone"}.get(
            combination, f"{member}, the best of the ensemble's candidates")

    def training_crops(self, whale: str, count: int) -> list[np.ndarray]:
        crops = []
        for path in self.examples.get(whale, [])[:count]:
            try:
                crops.append(read_image(path))
            except (BadImage, OSError):       # a moved catalogue must not stop identification
                continue
        return crops


def head_of(pipe: Pipeline, path: Path, photo: np.ndarray) -> tuple[np.ndarray, dict]:
    """The aligned head crop of a photo and what the aligner said about it."""
    (bonnet, blowhead), spread = pipe.align(path, photo)
    cut = (bonnet, blowhead) if not pipe.min_head_length else \
        crop.lengthen((bonnet, blowhead), pipe.min_head_length * photo.shape[1])   # as the align stage cut crops
    head_length = float(np.linalg.norm(cut[0] - cut[1]))     # the head the crop was cut for
    size = pipe.align_cfg["crop_size"]
    try:
        head, _, whole = crop.head_crop(photo, *cut, size, size, predicted=True)
    except crop.UnplaceableHead as e:
        raise BadImage(f"{path}: the aligner's points cannot place a head ({e})") from None
    return head, {"bonnet": bonnet.tolist(), "blowhead": blowhead.tolist(), "tta_spread_px": spread,
                  "head_length_px": head_length, "tta_spread_ratio": spread / max(head_length, 1e-9),
                  "whole_photo_fallback": whole}


def identify_photo(pipe: Pipeline, path: Path, top: int, out_dir: Path, stem: str) -> dict:
    photo = read_bounded(path, MAX_SIDE)
    if pipe.aligner is None:        # --crops: the photo is the head crop
        head, aligned = photo, {"tta_spread_px": None, "head_length_px": None, "tta_spread_ratio": None,
                                "whole_photo_fallback": False}
    else:
        head, aligned = head_of(pipe, path, photo)
    probs = pipe.classify(head)
    if not np.isfinite(probs).all():     # a run, not this photo, is broken: stop the batch, say which
        raise DataError(f"the runs {', '.join(r.name for r in pipe.classify_runs)} give non-finite "
                        f"probabilities for {path}; a checkpoint is corrupt or a run diverged")
    order = np.argsort(-probs)[:top]
    candidates = [(pipe.classes[i], float(probs[i])) for i in order]
    buf = io.BytesIO()
    Image.fromarray(head).save(buf, "PNG", compress_level=1)
    atomic.write_bytes(out_dir / f"{stem}_crop.png", buf.getvalue())
    sheet, titles = [], []          # one row per candidate: the query, then that whale's catalogue crops
    for rank, (whale, p) in enumerate(candidates, 1):
        examples = pipe.training_crops(whale, CANDIDATE_CROPS)
        sheet += [head, *examples, *[None] * (CANDIDATE_CROPS - len(examples))]
        titles += [f"{stem} (query)", *[f"{rank}. {whale} {p:.2f}" if i == 0 else whale
                                        for i in range(len(examples))], *[""] * (CANDIDATE_CROPS - len(examples))]
    plots.contact_sheet(sheet, out_dir / f"{stem}_candidates.png", titles, ncols=1 + CANDIDATE_CROPS)
    inliers, drawn, new_score, votes = {}, False, None, None
    if pipe.matcher is not None:        # why the matcher proposes each candidate: its matched keypoints
        inliers, drawn = match_sheet(pipe, head, candidates, out_dir / f"{stem}_matches.png")
        new_score = float(novelty.novelty_score(pipe.matches[0].scores)[0])
        votes = int((pipe.matches[0].scores > 0).sum())
    result = {"photo": str(path), "stem": stem, "crop": str(out_dir / f"{stem}_crop.png"),
              "candidates": str(out_dir / f"{stem}_candidates.png"), **aligned,
              "top": candidates, "combined by": pipe.describe(), "matcher inliers": inliers,
              "matches": str(out_dir / f"{stem}_matches.png") if drawn else None, "new-whale score": new_score,
              "matcher votes": votes, "settings": pipe.fingerprint}
    result["decision"] = decide(result, pipe.new_threshold)
    return result


def decide(result: dict, new_threshold: float | None) -> str:
    """check alignment when the aligner's augmentations disagree or no keypoint matched anything, else new?
    past the new-whale threshold, else known."""
    ratio = result["tta_spread_ratio"]
    if ratio is not None and (ratio >= UNSURE_SPREAD or result["whole_photo_fallback"]):
        return CHECK
    if result.get("matcher votes") == 0:     # no keypoint matched anything: not a head crop, or a blank one
        return CHECK
    if new_threshold is not None and result["new-whale score"] is not None and \
            result["new-whale score"] > new_threshold:
        return NEW
    return KNOWN


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
            candidate = np.asarray(Image.fromarray(read_image(run.crop_path(name))).resize((size, size)))
        except (BadImage, OSError):
            continue
        rows.append({"query": shown, "candidate": candidate, "query_xy": feats.keypoints[pairs[:, 0], :2] * size,
                     "candidate_xy": g.keypoints[pairs[:, 1], :2] * size,
                     "title": f"{whale} p={p:.2f}: {len(pairs)} inliers with {name}"})
    if rows:
        plots.match_pairs(rows, path)
    return counts, bool(rows)


def group_new(pipe: Pipeline, results: list[dict]) -> None:
    """Give every `new?` photo a provisional individual, new-1, new-2, ...: photos that would be named one
    another's whale (with the batch's `new?` photos added to the catalogue, the best match of one is the
    other and no longer `new?`) share one. Scored against the whole catalogue, so the LNBNN normaliser and
    the new-whale score mean what they mean for any other query."""
    new = [r for r in results if r["decision"] == NEW]
    for r in results:
        r["group"] = None
    if not new or pipe.new_threshold is None:
        return
    run = pipe.matcher
    feats = [crop_features(run, r["crop"]) for r in new]
    stems = [f"batch:{r['stem']}" for r in new]
    matcher = matching.Matcher(run.gallery.add(stems, stems, feats), run.classes + stems, run.cfg, run.weights)
    scores = matching.score_matrix(matcher.score_many(feats, exclude=stems), len(matcher.classes))
    best = scores.argmax(axis=1) - len(run.classes)         # >= 0: another photo of the batch
    named = (best >= 0) & (novelty.novelty_score(scores) <= pipe.new_threshold)
    linked = np.zeros((len(new), len(new)), bool)
    linked[np.flatnonzero(named), best[named]] = True
    _, component = connected_components(csr_matrix(linked | linked.T), directed=False)
    number = {}
    for r, c in zip(new, component):       # numbered in batch order
        r["group"] = f"new-{number.setdefault(c, len(number) + 1)}"


def crop_features(run: MatchRun, path) -> matching.Features:
    """Features of a crop identify wrote; none if it has gone since (the photo then groups with no other)."""
    try:
        return run.features(read_image(path))
    except (BadImage, OSError):
        return run.features(np.zeros((16, 16, 3), np.uint8))


def expand(inputs, out: Path) -> list[Path]:
    """Photos named on the command line, folders expanded (sorted, recursively) to the photos inside, except
    those of the output folder (identify . --out identified must not identify its own crops)."""
    photos, out = [], out.resolve()
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()
                           and out not in p.resolve().parents)
            if not found:
                print(f"{item}: no .jpg, .jpeg or .png photo in it", file=sys.stderr)
            photos += found
        else:
            photos.append(item)
    return photos


def unique_stems(photos) -> list[str]:
    """a/w_1.jpg and b/w_1.jpg must not overwrite each other; the same order gives the same stems."""
    stems, seen = [], set()
    for path in photos:
        stem = path.stem
        while stem in seen:
            stem += "_"
        seen.add(stem)
        stems.append(stem)
    return stems


def load_done(path: Path, photo: Path, fingerprint: dict) -> dict | None:
    """A photo identified by an earlier run of this batch with the same runs, catalogue and --top, or None
    (never done, done otherwise, or its record unreadable)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(result, dict) and result.get("photo") == str(photo) and result.get("settings") == fingerprint
    return result if same else None


def csv_rows(results: list[dict], top: int) -> list[dict]:
    rows = []
    for r in results:
        row = {"photo": r["photo"], "decision": r["decision"], "group": r["group"] or "",
               "new-whale score": "" if r["new-whale score"] is None else f"{r['new-whale score']:.4f}",
               "tta spread / head length": "" if r["tta_spread_ratio"] is None else f"{r['tta_spread_ratio']:.4f}"}
        for k in range(top):
            whale, p = r["top"][k] if k < len(r["top"]) else ("", None)
            row[f"whale {k + 1}"] = whale
            row[f"p {k + 1}"] = "" if p is None else f"{p:.4f}"
            row[f"inliers {k + 1}"] = r["matcher inliers"].get(whale, "") if whale else ""
        rows.append(row)
    return rows


def write_batch(out: Path, results: list[dict], top: int, pipe: Pipeline, skipped: list[tuple[str, str]]) -> None:
    atomic.write_json(out / "identifications.json", {"catalogue": str(pipe.matcher.run_dir.resolve())
                                                     if pipe.matcher else None, "photos": results,
                                                     "skipped": [{"photo": p, "why": w} for p, w in skipped]})
    rows = csv_rows(results, top)
    atomic.write_csv(out / "identifications.csv", list(rows[0]) if rows else ["photo", "decision"],
                     [list(r.values()) for r in rows])
    write_review(out / "review.html", results, pipe.matcher.run_dir.resolve() if pipe.matcher else None)


def print_result(result: dict) -> None:
    print(f"\n{result['photo']} ({result['combined by']}): {result['decision']}"
          + (f" ({result['group']})" if result.get("group") else ""))
    for rank, (whale, prob) in enumerate(result["top"], 1):
        print(f"  {rank}. {whale}  {prob:.3f}")
    if result["matcher inliers"]:
        print(f"  matcher inliers: {', '.join(f'{w} {n}' for w, n in result['matcher inliers'].items())}"
              + (f"; matches: {result['matches']}" if result["matches"] else ""))
    if result["tta_spread_px"] is not None:
        print(f"  {confidence_note(result)}")
    if result["whole_photo_fallback"]:
        print("  note: the predicted points could not place a head crop; the whole photo was classified")
    print(f"  crop: {result['crop']}, candidates: {result['candidates']}")


def confidence_note(result: dict) -> str:
    ratio = result["tta_spread_px"] / max(result["head_length_px"], 1e-9)
    verdict = ("alignment looks reliable" if ratio < 0.1 else
               "alignment is uncertain: check the crop" if ratio < UNSURE_SPREAD else
               "alignment disagrees across augmentations: the crop may miss the head")
    return f"aligner TTA spread {result['tta_spread_px']:.1f} px = {ratio:.0%} of the head length; {verdict}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rightwhale identify", description=__doc__.split("\n")[0])
    p.add_argument("photos", nargs="+", help="aerial photos (JPEG or PNG) or folders of them")
    p.add_argument("--crops", action="store_true",
                   help="the photos are aligned head crops (bonnet right), as the align stage cuts: no aligner")
    p.add_argument("--runs-root", help="folder of the trained runs (default ./runs, else ./runs/reproduce "
                                       "when only the reproduction has trained)")
    p.add_argument("--align", help="aligner run folder (default RUNS/align)")
    p.add_argument("--runs", nargs="*", help="classifier and matcher run folders (default: the ensemble's, "
                                             "else every RUNS/classify-aligned-* and RUNS/match-aligned)")
    p.add_argument("--ensemble", help="ensemble folder with stacker.npz (default RUNS/ensemble)")
    p.add_argument("--top", type=int, default=5, help="candidates to list (default 5)")
    p.add_argument("--new-threshold", type=float,
                   help="new-whale score past which a photo is `new?` (default: the match run's, calibrated on "
                        "its catalogue with whales left out in turn)")
    p.add_argument("--out", default="identified", help="where results, crops and review.html go "
                                                       "(default ./identified); a rerun resumes the batch")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    root = Path(args.runs_root or "runs")
    if args.runs_root is None and not (root / "align").is_dir() and (root / "reproduce" / "align").is_dir():
        root = root / "reproduce"
    ensemble = Path(args.ensemble or root / "ensemble")
    stacked = ensemble / ENSEMBLE
    try:
        if args.runs:
            runs = resolve_runs(args.runs, root)
        else:
            runs = ensemble_runs(ensemble) if stacked.is_file() else default_runs(root)
        pipe = Pipeline(None if args.crops else args.align or root / "align", runs, ensemble)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.new_threshold is not None:
        pipe.new_threshold = args.new_threshold
    print(f"runs: {', '.join(str(r) for r in pipe.classify_runs)}"
          + (f"; aligner {pipe.fingerprint['align']}" if pipe.aligner is not None else "") + f"; {pipe.describe()}")
    for note in pipe.notes:
        print(f"note: {note}")
    out = Path(args.out).resolve()          # records hold absolute paths: a rerun may start elsewhere
    try:
        with runlock.hold(out, "output folder"):
            return identify_batch(pipe, expand(args.photos, out), out, args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def identify_batch(pipe: Pipeline, photos: list[Path], out: Path, args) -> int:
    pipe.fingerprint["top"] = args.top
    (out / "photos").mkdir(parents=True, exist_ok=True)
    results, skipped, resumed = [], [], 0
    for path, stem in tqdm(list(zip(photos, unique_stems(photos))), disable=args.no_progress, desc="identifying",
                           unit="photo"):
        record = out / "photos" / f"{stem}.json"
        result = load_done(record, path, pipe.fingerprint)
        if result is not None:
            resumed += 1
            result["decision"] = decide(result, pipe.new_threshold)     # --new-threshold may have changed
        else:
            try:
                result = identify_photo(pipe, path, args.top, out, stem)
            except (BadImage, OSError) as e:
                print(f"{path}: skipped: {e}", file=sys.stderr)
                skipped.append((str(path), str(e)))
                continue
            atomic.write_json(record, result)        # the batch's progress: a rerun starts after it
        results.append(result)
    group_new(pipe, results)
    for result in results if len(results) <= PRINTED else []:
        print_result(result)
    write_batch(out, results, args.top, pipe, skipped)
    counts = {d: sum(r["decision"] == d for r in results) for d in (KNOWN, NEW, CHECK)}
    print(f"\n{len(results)} of {len(photos)} photo(s) identified ({resumed} from an earlier run of this batch): "
          + ", ".join(f"{n} {d}" for d, n in counts.items())
          + f"; {len({r['group'] for r in results if r['group']})} provisional new whale(s)")
    print(f"results: {out / 'identifications.csv'}, {out / 'identifications.json'}; review: {out / 'review.html'}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
