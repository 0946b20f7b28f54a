"""Stages 2 and 3: the aligner finds bonnet and blowhead; the head is cropped from them.

`localize_pts_dec31` regresses (bonnet x, y, blowhead x, y) / image size from
the cached photo, trained with the original's random affine augmentation
(the points move with the image). Validation and test photos are predicted
with test-time augmentation averaged through the inverse transforms, and the
spread of the copies is kept as a confidence signal.

Head crops are then written as a data directory of their own (run/crops):
training photos cropped from their annotated points, validation and test
photos from the predicted ones, as the original did. `train.py --stage
classify` reads it.
"""
from __future__ import annotations

import functools

import numpy as np

from rightwhale.core import metrics
from rightwhale.core.records import RunRecord
from rightwhale.geometry import crop
from rightwhale.geometry.transforms import augment_batch, transform_points
from rightwhale.io.checkpoint import load_variables
from rightwhale.io.images import read_image
from rightwhale.models import get_model
from rightwhale.stages import crops
from rightwhale.stages.workspace import Workspace
from rightwhale.train.feed import predict
from rightwhale.train.loop import fit
from rightwhale.train.state import regression_task
from rightwhale.train.tta import predict_with_tta
from rightwhale.views import plots
from rightwhale.views.report import write_report


def augment_points(key, images, target, augment):
    size = images.shape[1]
    images, pts, _ = augment_batch(key, images, augment, points=target.reshape(-1, 2, 2) * size)
    return images, pts.reshape(-1, 4) / size


def point_error_metric(output, target, size):
    pixels, _ = metrics.point_errors(output * size, target * size)
    return {"point error (px)": pixels.mean(axis=-1)}


def run(ws: Workspace) -> RunRecord:
    cfg, survey = ws.cfg, ws.survey
    crops.require_annotations(ws, lambda n: survey.points(n) is not None,
                              "the aligner needs bonnet and blowhead points (points1.json, points2.json)")
    cache = ws.cache()                      # only once the annotations are known to be there
    size = cfg.image_size
    present = ws.present(cache)
    annotated = {s: [n for n in present[s] if survey.points(n) is not None] for s in ("train", "valid")}
    truth = {s: cache.to_cache(n, np.stack([survey.points(x) for x in n])) for s, n in annotated.items()}
    model = get_model(cfg.model, 4, **cfg.model_kwargs)
    task = regression_task(metrics=functools.partial(point_error_metric, size=size),
                           headline="point error (px)",
                           augment=functools.partial(augment_points, augment=cfg.train.augment))
    fit(model, cfg.train, task,
        *({"image": ws.rows(cache, annotated[s]), "target": (truth[s] / size).reshape(-1, 4).astype(np.float32)}
          for s in ("train", "valid")), ws.run_dir, resume=ws.resume, progress=ws.progress, log=ws.log)
    variables = load_variables(ws.path("best.msgpack"))

    # Predicted points, with TTA, for every photo a classifier will not see annotated:
    # validation and test photos, and training photos nobody annotated.
    unknown = present["valid"] + present["test"] + [n for n in present["train"] if survey.points(n) is None]
    tta_cache, spread = predict_with_tta(model, variables, ws.rows(cache, unknown), cfg.tta, cfg.train.batch_size)
    predicted = dict(zip(unknown, cache.to_photo(unknown, tta_cache)))
    ws.write_json("predictions.json", {n: {"bonnet": p[0].tolist(), "blowhead": p[1].tolist(),
                                           "tta_spread_cache_px": float(s)}
                                       for (n, p), s in zip(predicted.items(), spread)})

    # Scores on the annotated validation photos, in photo pixels, with and without TTA.
    valid = annotated["valid"]
    plain = predict(model, variables, ws.rows(cache, valid), cfg.train.batch_size)[0].reshape(-1, 2, 2) * size
    true_photo = np.stack([survey.points(n) for n in valid]).reshape(-1, 4)
    results = {"validation photos": len(valid), "TTA copies per photo": cfg.tta.size}
    for label, pts in (("without TTA", cache.to_photo(valid, plain)), ("with TTA", np.stack([predicted[n] for n in valid]))):
        pixels, fraction = metrics.point_errors(pts.reshape(-1, 4), true_photo)
        results |= {f"point error, photo px, {label}": float(pixels.mean()),
                    f"median point error, photo px, {label}": float(np.median(pixels)),
                    f"point error / bonnet-blowhead distance, {label}": float(fraction.mean())}
    results["mean TTA spread (cache px)"] = float(spread.mean())

    to_crop, shortest = _crop_points(ws, cache, annotated["train"], predicted, results)
    made = crops.write_crops(ws, "head", points={n: survey.points(n) for n in annotated["train"]} | to_crop)
    results |= {"head crops written": made["count"], "crops that fell back to the whole photo": len(made["fallback"])}
    _figures(ws, cache, valid, truth["valid"], predicted, to_crop)
    write_report(ws.run_dir, f"Aligner: {cfg.model}", results,
                 figures=[("Validation photos: predicted (dots) and true (rings) bonnet/blowhead", "valid_points.png"),
                          ("Aligned head crops of validation photos, from predicted points", "aligned_crops.png")],
                 notes=["crops/: a data directory of head crops for `train.py --stage classify`",
                        "points1.json / points2.json: annotated (train) and predicted (other) points, photo pixels",
                        "predictions.json: the predicted points with the spread of the TTA copies"])
    return ws.record(results, min_head_length=shortest)



def _crop_points(ws, cache, train, predicted, results) -> tuple[dict, float | None]:
    """The predicted pairs the crops are cut from: with cfg.min_head_length, short ones are lengthened to that
    fraction of the median head length of the training photos (relative to the photo width)."""
    width = lambda n: float(cache.sizes[cache.index(n)][0])
    head = float(np.median([np.linalg.norm(np.subtract(*ws.survey.points(n))) / width(n) for n in train]))
    results["median head length / photo width, training photos"] = head
    if ws.cfg.min_head_length is None:
        return predicted, None
    shortest = results["shortest predicted head for cropping / photo width"] = ws.cfg.min_head_length * head
    to_crop = {n: crop.lengthen(p, shortest * width(n)) for n, p in predicted.items()}
    results["predicted pairs lengthened for cropping"] = sum(not np.array_equal(to_crop[n], p)
                                                             for n, p in predicted.items())
    return to_crop, shortest      # identify cuts its crops the same way (RunRecord.min_head_length)


def _figures(ws, cache, valid, true_cache, predicted, to_crop, count=12):
    """Predicted vs true points on the cached photos, and the aligned crops cut from them."""
    shown = valid[:count]
    plots.image_grid([cache.images[cache.index(n)] for n in shown], ws.path("valid_points.png"), titles=shown,
                     points=cache.to_cache(shown, np.stack([predicted[n] for n in shown])), true_points=true_cache[:count])
    size = ws.cfg.crop_size
    heads, pred_in, true_in, titles = [], [], [], []
    for n in shown:
        try:
            head, mat, _ = crop.head_crop(read_image(ws.survey.image_path(n)), *to_crop[n], size, size, predicted=True)
        except crop.UnplaceableHead:
            continue
        heads.append(head)
        titles.append(n)
        pred_in.append(np.asarray(transform_points(mat, to_crop[n])))
        true_in.append(np.asarray(transform_points(mat, ws.survey.points(n))))
    if heads:
        plots.image_grid(heads, ws.path("aligned_crops.png"), points=pred_in, true_points=true_in,
                         titles=titles)
