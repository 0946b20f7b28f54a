"""A trained classifier run (naive or classify) loaded back to score new images: the network with its
auxiliary heads when it had them, its weights, its classes.
"""
from __future__ import annotations

import json
from pathlib import Path

from rightwhale.core.errors import DataError
from rightwhale.core.records import load_features
from rightwhale.io.checkpoint import load_variables
from rightwhale.models import get_model
from rightwhale.models.auxiliary import WithAuxiliaryHeads


def build_classifier(model: str, num_classes: int, model_kwargs: dict, aux: dict | None = None):
    """The classifier of a run, with its auxiliary heads when it was trained with them."""
    net = get_model(model, num_classes, **model_kwargs)
    extra = (aux or {}).get("types", 0) + (aux or {}).get("points", 0)
    return WithAuxiliaryHeads(net, extra) if extra else net


def load_classifier(run_dir):
    """(model, variables, config dict, classes, names of its training images) of a naive or classify run."""
    run_dir = Path(run_dir)
    for need in ("config.json", "best.msgpack", "features.npz"):
        if not (run_dir / need).is_file():
            raise DataError(f"{run_dir}: no {need}; is this a finished naive or classify run folder?")
    cfg = json.loads((run_dir / "config.json").read_text())
    features = load_features(run_dir)
    classes = features["classes"].tolist()
    aux = json.loads((run_dir / "aux.json").read_text()) if (run_dir / "aux.json").is_file() else None
    model = build_classifier(cfg["model"], len(classes), cfg.get("model_kwargs", {}), aux)
    return model, load_variables(run_dir / "best.msgpack"), cfg, classes, set(features["train_names"].tolist())
