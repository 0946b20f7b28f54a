"""Training a whale classifier inside a stage: the classify stage's network on head crops, and the naive
stage's on whole photos (stage 1a). Fits, reloads the best weights, scores validation, writes predictions,
with the auxiliary heads of --aux-targets (the 1st place team's pattern type and crop points)."""
from __future__ import annotations

import functools

import numpy as np
import optax
from scipy.special import softmax

from rightwhale.core import metrics
from rightwhale.core.errors import DataError
from rightwhale.geometry.transforms import augment_batch
from rightwhale.io.checkpoint import load_variables
from rightwhale.scorers.classifier import build_classifier
from rightwhale.stages.workspace import Workspace
from rightwhale.train.feed import predict
from rightwhale.train.loop import fit
from rightwhale.train.state import Task, classification_task
from rightwhale.views import plots

AUX_WEIGHT = 0.1      # auxiliary losses next to the whale cross-entropy


def augment_images(key, images, target, augment):
    images, _, _ = augment_batch(key, images, augment)
    return images, target


def auxiliary_layout(ws: Workspace, names) -> dict:
    """Which extra targets this data has: pattern types (whale_types.csv) and crop points."""
    types = ws.labels_source.pattern_types
    layout = {"types": max(types.values()) + 1 if types else 0,
              "points": 4 if all(ws.survey.points(n) is not None for n in names) else 0}
    if not any(layout.values()):
        raise DataError(f"--aux-targets: {ws.survey.root} has neither whale_types.csv nor points for every image")
    return layout


def auxiliary_targets(ws: Workspace, cache, names) -> np.ndarray:
    """Rows [label, pattern type, bonnet x, y, blowhead x, y] (points / input size, zeros if absent)."""
    labelled, types = ws.labels_source, ws.labels_source.pattern_types
    missing = sorted({labelled.train[n] for n in names} - types.keys()) if types else []
    if missing:
        raise DataError(f"{labelled.root}/whale_types.csv has no pattern type for {', '.join(missing[:5])}")
    rows = [[labelled.label(n), types.get(labelled.train[n], 0),
             *(np.zeros(4) if ws.survey.points(n) is None
               else (cache.to_cache(n, ws.survey.points(n)) / cache.size).ravel())] for n in names]
    return np.array(rows, np.float32).reshape(len(names), 6)


def auxiliary_loss(output, target, num_classes, types, points):
    logits, aux = output[:, :num_classes], output[:, num_classes:]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, target[:, 0].astype(np.int32))
    if types:
        loss += AUX_WEIGHT * optax.softmax_cross_entropy_with_integer_labels(aux[:, :types], target[:, 1].astype(np.int32))
    if points:
        loss += AUX_WEIGHT * ((aux[:, types:] - target[:, 2:]) ** 2).mean(axis=1)
    return loss


def auxiliary_metrics(output, target, num_classes):
    return {"accuracy": metrics.top_k_hits(output[:, :num_classes], target[:, 0].astype(np.int32), 1).astype(np.float32)}


def augment_auxiliary(key, images, target, augment):
    size = images.shape[1]
    images, pts, _ = augment_batch(key, images, augment, points=target[:, 2:].reshape(-1, 2, 2) * size)
    return images, target.at[:, 2:].set(pts.reshape(-1, 4) / size)


def auxiliary_task(cfg, num_classes, layout) -> Task:
    return Task(functools.partial(auxiliary_loss, num_classes=num_classes, **layout),
                functools.partial(auxiliary_metrics, num_classes=num_classes), "accuracy",
                functools.partial(augment_auxiliary, augment=cfg.train.augment))


def train_classifier(ws: Workspace, cache):
    """Fit, reload the best weights, score validation, write predictions; returns
    (model, variables, results, names by split, probabilities by split).

    Every validation image is scored, also one that yielded no input (a crop
    that failed): it gets the class prior, as its submission row would.
    """
    cfg, labelled = ws.cfg, ws.labels_source
    names = ws.present(cache, test=labelled.test)
    labels = {split: labelled.labels_array(names[split]) for split in ("train", "valid")}
    k = len(labelled.classes)
    targets, aux = labels, None
    if cfg.aux_targets:
        aux = auxiliary_layout(ws, names["train"] + names["valid"])
        ws.write_json("aux.json", aux)
        targets = {s: auxiliary_targets(ws, cache, names[s]) for s in labels}
        task = auxiliary_task(cfg, k, aux)
    else:
        task = classification_task(augment=functools.partial(augment_images, augment=cfg.train.augment))
    model = build_classifier(cfg.model, k, cfg.model_kwargs, aux)
    fit(model, cfg.train, task, *({"image": ws.rows(cache, names[s]), "target": targets[s]} for s in ("train", "valid")),
        ws.run_dir, resume=ws.resume, progress=ws.progress, log=ws.log)

    variables = load_variables(ws.path("best.msgpack"))
    outputs = {s: predict(model, variables, ws.rows(cache, n), cfg.train.batch_size) for s, n in names.items()}
    probs = {s: softmax(logits[:, :k], axis=1) for s, (logits, _) in outputs.items()}
    prior = metrics.class_prior(labels["train"], len(labelled.classes))
    results = ws.write_predictions(names, probs, {s: outputs[s][1] for s in names}, labels, prior)
    return model, variables, results, names, probs


def prediction_grid(ws: Workspace, cache, names, probs, path, count: int = 12):
    """Validation inputs titled with the top guess, its probability and whether it is right."""
    labelled, shown = ws.labels_source, names[:count]
    titles = []
    for name, p in zip(shown, probs[:count]):
        guess = int(np.argmax(p))
        mark = "ok" if guess == labelled.label(name) else f"true {labelled.train[name]}"
        titles.append(f"{labelled.classes[guess]} {p[guess]:.2f} ({mark})")
    return plots.image_grid([cache.images[cache.index(n)] for n in shown], path, titles=titles, ncols=6)
