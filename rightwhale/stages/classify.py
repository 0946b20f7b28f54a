"""Stage 4: identify the whale from its head crop. The same classifier on whole photos is stage 1a.

Trains the configured classifier (resnet19 by default) on the crops of the
stored training split, keeps the weights of the best validation loss, and
scores the validation split as Kaggle did: log loss with clipped,
renormalised probabilities, next to chance (ln K) and the class-prior
baseline. Writes the Kaggle submission for the test photos and the GAP
features of every image for the ensemble (features.npz).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from rightwhale import metrics, plots
from rightwhale.checkpoint import load_variables
from rightwhale.models import get_model
from rightwhale.report import write_report
from rightwhale.stages.workspace import Workspace
from rightwhale.submission import write_submission
from rightwhale.training import classification_task, fit, predict
from rightwhale.transforms import augment_batch


def augment_images(key, images, target, augment):
    images, _, _ = augment_batch(key, images, augment)
    return images, target


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def class_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Training frequencies (add-one smoothed): the baseline that knows no pixels."""
    counts = np.bincount(labels, minlength=num_classes) + 1.0
    return counts / counts.sum()


def score(probs: np.ndarray, labels: np.ndarray, prior: np.ndarray) -> dict:
    k = probs.shape[1]
    loss = metrics.log_loss(probs, labels)
    return {"validation images": len(labels), "classes": k,
            "log loss": loss, "log loss / ln K": loss / math.log(k),
            "top-1 accuracy": metrics.top_k_accuracy(probs, labels, 1),
            "top-5 accuracy": metrics.top_k_accuracy(probs, labels, min(5, k)),
            "chance log loss (ln K)": math.log(k),
            "class-prior log loss": metrics.log_loss(np.tile(prior, (len(labels), 1)), labels)}


def train_classifier(ws: Workspace, cache):
    """Fit, reload the best weights, score validation, write predictions; returns
    (model, variables, results, names by split, probabilities by split).

    Every validation image is scored, also one that yielded no input (a crop
    that failed): it gets the class prior, as its submission row would.
    """
    cfg, survey, labelled = ws.cfg, ws.survey, ws.labels_source
    names = {split: ws.present(cache, n) for split, n in
             (("train", ws.train_names), ("valid", ws.valid_names), ("test", ws.test_names))}
    labels = {split: labelled.labels_array(names[split]) for split in ("train", "valid")}
    model = get_model(cfg.model, len(survey.classes), **cfg.model_kwargs)
    task = classification_task(augment=functools.partial(augment_images, augment=cfg.train.augment))
    fit(model, cfg.train, task, *({"image": ws.rows(cache, names[s]), "target": labels[s]} for s in ("train", "valid")),
        ws.run_dir, resume=ws.resume, progress=ws.progress, log=ws.log)

    variables = load_variables(ws.path("best.msgpack"))
    outputs = {s: predict(model, variables, ws.rows(cache, n), cfg.train.batch_size) for s, n in names.items()}
    probs = {s: softmax(logits) for s, (logits, _) in outputs.items()}
    prior = class_prior(labels["train"], len(survey.classes))

    def rows_for(split, rows):
        found = dict(zip(names[split], probs[split]))
        return np.stack([found.get(r, prior) for r in rows]) if rows else np.zeros((0, len(prior)))

    results = score(rows_for("valid", ws.valid_names), labelled.labels_array(ws.valid_names), prior)
    results["validation images without input (scored with the prior)"] = len(ws.valid_names) - len(names["valid"])
    write_submission(ws.path("valid_probabilities.csv"), names["valid"], survey.classes, probs["valid"])
    if labelled.test:
        write_submission(ws.path("submission.csv"), labelled.test, survey.classes, rows_for("test", labelled.test))
    ws.write_npz("features.npz", classes=np.array(survey.classes),
                 **{f"{s}_names": np.array(n, dtype=str) for s, n in names.items()},
                 **{f"{s}_features": outputs[s][1] for s in names},
                 **{f"{s}_probabilities": probs[s] for s in names},
                 **{f"{s}_labels": labels[s] for s in labels})
    ws.write_json("results.json", results)
    return model, variables, results, names, probs


def prediction_grid(ws: Workspace, cache, names, probs, path, count: int = 12):
    """Validation inputs titled with the top guess, its probability and whether it is right."""
    classes, shown = ws.survey.classes, names[:count]
    titles = []
    for name, p in zip(shown, probs[:count]):
        guess = int(np.argmax(p))
        mark = "ok" if guess == ws.survey.label(name) else f"true {ws.survey.train[name]}"
        titles.append(f"{classes[guess]} {p[guess]:.2f} ({mark})")
    return plots.image_grid([cache.images[cache.index(n)] for n in shown], path, titles=titles, ncols=6)


def run(ws: Workspace, title="Classifier on head crops") -> dict:
    cache = ws.cache()
    model, variables, results, names, probs = train_classifier(ws, cache)
    prediction_grid(ws, cache, names["valid"], probs["valid"], ws.path("valid_predictions.png"))
    write_report(ws.run_dir, f"{title}: {ws.cfg.model}", results,
                 figures=[("Validation crops with the top guess", "valid_predictions.png")],
                 notes=[f"data: {ws.survey.root}", "submission.csv: Kaggle format for the test images",
                        "features.npz: GAP features of train/valid/test for the ensemble"])
    return results
