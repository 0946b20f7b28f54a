"""Stage 1a, the naive baseline: the classifier on whole photos, and why it fails.

The writeup's OxfordNet on resized photos reached a log loss of about 5.8
(chance 6.10). The occlusion saliency map showed it looked at the sea, not
the whale: photos of one whale share a sighting's light and water. The
embedded survey reproduces that cue; the maps written here show whether the
model took it.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

from rightwhale.core.records import RunRecord
from rightwhale.geometry.crop import head_boxes
from rightwhale.stages.fit_classifier import prediction_grid, train_classifier
from rightwhale.stages.workspace import Workspace
from rightwhale.train.feed import predict
from rightwhale.views import plots
from rightwhale.views.report import write_report
from rightwhale.views.saliency import occlusion_map

SALIENCY_PHOTOS = 8


def run(ws: Workspace) -> RunRecord:
    cache = ws.cache()
    model, variables, results, names, probs = train_classifier(ws, cache)
    prediction_grid(ws, cache, names["valid"], probs["valid"], ws.path("valid_predictions.png"))

    def predict_proba(images):
        return softmax(predict(model, variables, images, ws.cfg.train.batch_size)[0], axis=1)

    shown = names["valid"][:SALIENCY_PHOTOS]
    photos = [np.asarray(cache.images[cache.index(n)]) for n in shown]
    size = ws.cfg.image_size
    maps = [occlusion_map(predict_proba, photo, ws.survey.label(n), patch=max(size // 8, 2), stride=max(size // 16, 1))
            for photo, n in zip(photos, shown)]
    # How much of the saliency falls on the head: the whale, or the sea?
    boxes = head_boxes(ws.survey)
    pairs = [(_box_mask(boxes[n], cache, n), m) for m, n in zip(maps, shown) if n in boxes]
    pairs = [(mask, np.clip(m, 0, None)) for mask, m in pairs if m.max() > 0]
    if pairs:
        results["saliency share on the head box"] = float(np.mean([m[mask].sum() / m.sum() for mask, m in pairs]))
        results["head box share of the photo"] = float(np.mean([mask.mean() for mask, _ in pairs]))
    plots.saliency_overlays(photos, maps, ws.path("saliency.png"),
                            titles=[f"{n} ({ws.survey.train[n]})" for n in shown])
    write_report(ws.run_dir, f"Naive whole-photo classifier: {ws.cfg.model}", results,
                 figures=[("Occlusion saliency (red: hiding this lowers the true whale's probability)", "saliency.png"),
                          ("Validation photos with the top guess", "valid_predictions.png")],
                 notes=["the writeup's naive model scored about 5.8 of a 6.10 chance on the real data",
                        "saliency share on the head box vs the head box's share of the photo: a model "
                        "that looks at the whale concentrates its saliency on the head"])
    return ws.record(results)


def _box_mask(box, cache, name):
    x, y, w, h = cache.boxes_to_cache([name], np.asarray(box)[None])[0]
    size = cache.size
    mask = np.zeros((size, size), bool)
    mask[max(int(y), 0):max(int(np.ceil(y + h)), 0), max(int(x), 0):max(int(np.ceil(x + w)), 0)] = True
    return mask
