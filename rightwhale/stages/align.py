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

import jax
import jax.numpy as jnp
import numpy as np

from rightwhale import metrics, plots
from rightwhale.checkpoint import load_variables
from rightwhale.crop import head_crop_matrix
from rightwhale.models import get_model
from rightwhale.report import write_report
from rightwhale.stages import crops
from rightwhale.stages.workspace import Workspace
from rightwhale.training import fit, model_input, predict, regression_task
from rightwhale.transforms import augment_batch, transform_points
from rightwhale.tta import tta_matrices_from_config, tta_predict_points


def augment_points(key, images, target, augment):
    size = images.shape[1]
    images, pts, _ = augment_batch(key, images, augment, points=target.reshape(-1, 2, 2) * size)
    return images, pts.reshape(-1, 4) / size


def point_error_metric(output, target, size):
    pixels, _ = metrics.point_errors(output * size, target * size)
    return {"point error (px)": pixels.mean(axis=-1)}


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk"))
def _tta_batch(apply_fn, variables, images, mats, chunk):
    size = images.shape[1]

    def predict_points(images01):
        output, _ = apply_fn(variables, model_input(images01), train=False)
        return output.reshape(-1, 2, 2) * size

    return tta_predict_points(predict_points, images.astype(jnp.float32) / 255.0, mats, chunk=chunk)


def predict_with_tta(model, variables, images, tta, batch_size: int, chunk: int = 16):
    """(points (N, 2, 2) in image pixels, spread (N,)) averaged over the TTA grid."""
    mats = tta_matrices_from_config(tta, images.shape[1])
    points, spread = [], []
    for start in range(0, len(images), batch_size):
        p, s = _tta_batch(model.apply, variables, np.asarray(images[start:start + batch_size]), mats, chunk)
        points.append(np.asarray(p))
        spread.append(np.asarray(s))
    return np.concatenate(points), np.concatenate(spread)


def run(ws: Workspace) -> dict:
    cfg, survey = ws.cfg, ws.survey
    cache = ws.cache()
    size = cfg.image_size
    annotated = {s: [n for n in ws.present(cache, names) if survey.points(n) is not None]
                 for s, names in (("train", ws.train_names), ("valid", ws.valid_names))}
    if not annotated["train"] or not annotated["valid"]:
        raise crops.MissingInput(f"{survey.root}: the aligner needs bonnet and blowhead points "
                                 "(points1.json, points2.json) for training and validation photos")
    truth = {s: cache.to_cache(n, np.stack([survey.points(x) for x in n])) for s, n in annotated.items()}
    model = get_model(cfg.model, 4, **cfg.model_kwargs)
    task = regression_task(metrics=functools.partial(point_error_metric, size=size),
                           headline="point error (px)",
                           augment=functools.partial(augment_points, augment=cfg.train.augment))
    fit(model, cfg.train, task,
        *({"image": ws.rows(cache, annotated[s]), "target": (truth[s] / size).reshape(-1, 4).astype(np.float32)}
          for s in ("train", "valid")), ws.run_dir, resume=ws.resume, progress=ws.progress, log=ws.log)
    variables = load_variables(ws.path("best.msgpack"))

    # Validation: point errors in photo pixels, with and without TTA.
    valid = annotated["valid"]
    images = ws.rows(cache, valid)
    plain = predict(model, variables, images, cfg.train.batch_size)[0].reshape(-1, 2, 2) * size
    tta_pts, spread = predict_with_tta(model, variables, images, cfg.tta, cfg.train.batch_size)
    true_photo = np.stack([survey.points(n) for n in valid])
    results = {"validation photos": len(valid), "TTA copies per photo": cfg.tta.size}
    for label, pts in (("without TTA", plain), ("with TTA", tta_pts)):
        pixels, fraction = metrics.point_errors(cache.to_photo(valid, pts).reshape(-1, 4), true_photo.reshape(-1, 4))
        results |= {f"point error, photo px, {label}": float(pixels.mean()),
                    f"median point error, photo px, {label}": float(np.median(pixels)),
                    f"point error / bonnet-blowhead distance, {label}": float(fraction.mean())}
    results["mean TTA spread (cache px)"] = float(spread.mean())

    # Test photos, then every photo's points in photo pixels: annotated for training, predicted otherwise.
    test = ws.present(cache, ws.test_names)
    test_pts, test_spread = predict_with_tta(model, variables, ws.rows(cache, test), cfg.tta, cfg.train.batch_size)
    predicted = dict(zip(valid, cache.to_photo(valid, tta_pts))) | dict(zip(test, cache.to_photo(test, test_pts)))
    points = {n: survey.points(n) for n in annotated["train"]} | predicted
    ws.write_json("predictions.json", {n: {"bonnet": p[0].tolist(), "blowhead": p[1].tolist(), "tta_spread": float(s)}
                                       for n, p, s in zip([*valid, *test], [*predicted.values()],
                                                          [*spread, *test_spread])})
    made = crops.write_crops(ws, "head", points=points)
    results |= {"head crops written": made["count"], "crops that fell back to the whole photo": len(made["fallback"])}

    _figures(ws, cache, valid, tta_pts, truth["valid"], predicted, size)
    ws.write_json("results.json", results)
    write_report(ws.run_dir, f"Aligner: {cfg.model}", results,
                 figures=[("Validation photos: predicted (dots) and true (rings) bonnet/blowhead", "valid_points.png"),
                          ("Aligned head crops of validation photos, from predicted points", "aligned_crops.png")],
                 notes=["crops/: a data directory of head crops for `train.py --stage classify`",
                        "points1.json / points2.json: annotated (train) and predicted (valid, test) points"])
    return results


def _figures(ws, cache, valid, pred_cache, true_cache, predicted_photo, size, count=12):
    shown = valid[:count]
    plots.image_grid([cache.images[cache.index(n)] for n in shown], ws.path("valid_points.png"),
                     points=pred_cache[:count], true_points=true_cache[:count], titles=shown)
    crop_dir = ws.path("crops")
    from rightwhale.images import read_image, photo_size
    out = ws.cfg.crop_size
    crops_shown, pred_in, true_in = [], [], []
    for n in shown:
        if not (crop_dir / "imgs" / n).exists():
            continue
        w, h = photo_size(ws.survey.image_path(n))
        p = predicted_photo[n]
        mat = head_crop_matrix(p[0], p[1], np.array([h, w], np.float32), out, out)
        crops_shown.append(read_image(crop_dir / "imgs" / n))
        pred_in.append(np.asarray(transform_points(mat, p)))
        true_in.append(np.asarray(transform_points(mat, ws.survey.points(n))))
    if crops_shown:
        plots.image_grid(crops_shown, ws.path("aligned_crops.png"), points=pred_in, true_points=true_in,
                         titles=shown[:len(crops_shown)])
