"""Training history: nolearn's live epoch table, and what choosing the best epoch flatters (history.png is
views/plots.history_curves).

One record per epoch (a flat dict of plain numbers, saved as history.json by rightwhale.train.loop.fit):
  epoch, train_loss (dropout and augmentation on, averaged over the epoch),
  train_eval_loss (dropout off, fixed training subset: the overfitting signal
  the writeup asks for), valid_loss, train_valid_ratio, valid_<metric> for
  each task metric, valid_loss_half0 / valid_loss_half1 (the even and odd validation rows apart),
  learning_rate, seconds, best (lowest valid loss so far).
"""
_COLUMNS = (  # (header, record key, format)
    ("epoch", "epoch", "{:>5d}"),
    ("train loss", "train_loss", "{:>10.5f}"),
    ("train no-drop", "train_eval_loss", "{:>13.5f}"),
    ("valid loss", "valid_loss", "{:>10.5f}"),
    ("train/valid", "train_valid_ratio", "{:>11.3f}"),
)


def _columns(headline):
    name = f"valid {headline}"
    metric = [(name, f"valid_{headline}", "{:>%d.4f}" % max(len(name), 8))] if headline else []
    return [*_COLUMNS, *metric, ("dur", "seconds", "{:>6.1f}s")]


def table_header(headline: str | None) -> str:
    """Header line and rule of the epoch table (headline: task metric shown, or None)."""
    cols = _columns(headline)
    widths = [len(fmt.format(0 if key == "epoch" else 0.0)) for _, key, fmt in cols]
    names = "  ".join(f"{h:>{w}}" for (h, _, _), w in zip(cols, widths))
    return f"  {names}\n  {'  '.join('-' * w for w in widths)}"


def table_row(record: dict, headline: str | None) -> str:
    """One epoch's line; the best validation loss so far is marked with '*'."""
    cells = "  ".join(fmt.format(record[key]) for _, key, fmt in _columns(headline))
    return f"{'*' if record.get('best') else ' '} {cells}"


def epoch_choice(history: list[dict]) -> dict:
    """The best epoch's validation loss flatters the run: the epoch was chosen by those very images. Choosing
    it on one half of them and reading the loss of the other half (both ways, averaged) removes that choice's
    bias; the difference is what the best epoch's figure overstates."""
    if not history or "valid_loss_half1" not in history[0]:
        return {}               # older runs, or a single validation image
    choose = [[r[f"valid_loss_half{h}"] for r in history] for h in (0, 1)]
    held_out = [choose[1 - h][min(range(len(history)), key=choose[h].__getitem__)] for h in (0, 1)]
    return {"validation loss at the best epoch": min(r["valid_loss"] for r in history),
            "validation loss, epoch chosen on the other half": sum(held_out) / 2}
