"""Figures (rightwhale/views/plots.py): drawn without pyplot, so importing them leaves the user's backend alone."""
import subprocess
import sys

import numpy as np
from PIL import Image

from rightwhale.views import plots


def test_importing_the_figures_keeps_the_users_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import rightwhale.views.plots, rightwhale.io.history; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_an_image_grid_is_a_png_with_a_panel_per_image(tmp_path):
    images = [np.full((20, 40, 3), v, np.uint8) for v in (0, 128, 255)]
    path = plots.image_grid(images, tmp_path / "grid.png", titles=list("abc"), points=[[[5, 5]]] * 3, ncols=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 2 * im.height      # three 2:1 panels side by side


def test_history_curves_draw_a_training_history(tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_eval_loss": 0.9 / e, "valid_loss": 1.2 / e,
                "valid_IoU": 0.1 * e, "best": e == 3} for e in range(1, 4)]
    path = plots.history_curves(tmp_path / "history.png", history, "IoU")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height
