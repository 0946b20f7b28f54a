"""Stage 1b: regress the head box, crop it, and (with `--stage classify --crops boxes`) classify.

A VGG-style regressor predicts (x, y, w, h) / image size of the head box from
the cached photo. Augmentation moves the box the original's way: the box is
rasterised as a mask, warped with the image and boxed again. Scored by IoU.
Box crops are not rotated, so the classifier must learn every heading: the
writeup's 5.0 against the aligned crops' better score is that difference.
"""
from __future__ import annotations

import functools

import numpy as np

from rightwhale.core import metrics
from rightwhale.core.records import RunRecord
from rightwhale.geometry.crop import head_boxes
from rightwhale.geometry.transforms import augment_batch
from rightwhale.io.checkpoint import load_variables
from rightwhale.models import get_model
from rightwhale.stages import crops
from rightwhale.stages.workspace import Workspace
from rightwhale.train.feed import predict
from rightwhale.train.loop import fit
from rightwhale.train.state import regression_task
from rightwhale.views import plots
from rightwhale.views.report import write_report


def augment_boxes(key, images, target, augment):
    size = images.shape[1]
    images, _, boxes = augment_batch(key, images, augment, boxes=target * size)
    return images, boxes / size


def iou_metric(output, target):
    return {"IoU": metrics.iou(output, target)}



def run(ws: Workspace) -> RunRecord:
    cfg, survey = ws.cfg, ws.survey
    truth_photo = head_boxes(survey)
    crops.require_annotations(ws, truth_photo.__contains__, "the box localizer needs head boxes "
                              "(head_boxes.json) or bonnet/blowhead points")
    cache = ws.cache()
    size = cfg.image_size
    present = ws.present(cache)
    names = {s: [n for n in present[s] if n in truth_photo] for s in ("train", "valid")}
    truth = {s: cache.boxes_to_cache(n, np.stack([truth_photo[x] for x in n])) for s, n in names.items()}
    model = get_model(cfg.model, 4, **cfg.model_kwargs)
    task = regression_task(metrics=iou_metric, headline="IoU",
                           augment=functools.partial(augment_boxes, augment=cfg.train.augment))
    fit(model, cfg.train, task,
        *({"image": ws.rows(cache, names[s]), "target": (truth[s] / size).astype(np.float32)}
          for s in ("train", "valid")), ws.run_dir, resume=ws.resume, progress=ws.progress, log=ws.log)
    variables = load_variables(ws.path("best.msgpack"))

    # Predicted boxes for every photo without an annotated one for training.
    unknown = present["valid"] + present["test"] + [n for n in present["train"] if n not in truth_photo]
    pred = predict(model, variables, ws.rows(cache, unknown), cfg.train.batch_size)[0] * size
    pred[:, 2:] = np.maximum(pred[:, 2:], 1.0)   # a regressor can output a negative size; a box is at least a pixel
    predicted = dict(zip(unknown, cache.boxes_to_photo(unknown, pred)))
    ws.write_json("predictions.json", {n: b.tolist() for n, b in predicted.items()})

    valid = names["valid"]
    pred_valid = cache.boxes_to_cache(valid, np.stack([predicted[n] for n in valid]))
    ious = metrics.iou(pred_valid, truth["valid"])
    results = {"validation photos": len(valid), "mean IoU": float(ious.mean()),
               "median IoU": float(np.median(ious)), "share with IoU >= 0.5": float((ious >= 0.5).mean())}
    plots.histogram(ious, ws.path("iou_histogram.png"), "IoU of predicted and true head box",
                    title=f"validation, {len(valid)} photos", range_=(0, 1))
    shown = valid[:12]
    plots.image_grid([cache.images[cache.index(n)] for n in shown], ws.path("valid_boxes.png"), titles=shown,
                     boxes=[np.stack([p, t]) for p, t in zip(pred_valid[:12], truth["valid"][:12])])

    made = crops.write_crops(ws, "box", boxes={n: truth_photo[n] for n in names["train"]} | predicted)
    results["box crops written"] = made["count"]
    results["head boxes derived from the points (no head_boxes.json entry)"] = len(truth_photo) - len(
        survey.boxes.keys() & truth_photo.keys())
    write_report(ws.run_dir, f"Head-box localizer: {cfg.model}", results,
                 figures=[("IoU on validation photos", "iou_histogram.png"),
                          ("Validation photos: predicted (yellow) and true (green) head boxes", "valid_boxes.png")],
                 notes=["crops/: box crops (training photos from annotated boxes, validation and test "
                        "from predicted ones) for `train.py --stage classify --crops boxes`"])
    return ws.record(results)
