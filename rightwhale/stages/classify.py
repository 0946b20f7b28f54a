"""Stage 4: identify the whale from its head crop. The same classifier on whole photos is stage 1a.

Trains the configured classifier (resnet19 by default) on the crops of the
stored training split, keeps the weights of the best validation loss, and
scores the validation split as Kaggle did: log loss with clipped,
renormalised probabilities, next to chance (ln K) and the class-prior
baseline. Writes the Kaggle submission for the test photos and the GAP
features of every image for the ensemble (features.npz).
"""
from __future__ import annotations

from rightwhale.core.records import RunRecord
from rightwhale.stages.fit_classifier import prediction_grid, train_classifier
from rightwhale.stages.workspace import Workspace
from rightwhale.views.report import write_report


def run(ws: Workspace, title="Classifier on head crops") -> RunRecord:
    cache = ws.cache()
    model, variables, results, names, probs = train_classifier(ws, cache)
    prediction_grid(ws, cache, names["valid"], probs["valid"], ws.path("valid_predictions.png"))
    write_report(ws.run_dir, f"{title}: {ws.cfg.model}", results,
                 figures=[("Validation crops with the top guess", "valid_predictions.png")],
                 notes=[f"data: {ws.survey.root}", "submission.csv: Kaggle format for the test images",
                        "features.npz: GAP features of train/valid/test for the ensemble"])
    return ws.record(results)
