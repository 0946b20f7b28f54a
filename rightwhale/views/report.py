"""report.md of a run folder: the numbers that matter and the pictures, in one page."""
from __future__ import annotations

from pathlib import Path

from rightwhale.core import atomic


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict]) -> str:
    """A markdown table from a list of dicts sharing keys."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_report(run_dir, title: str, results: dict, figures: list[tuple[str, str]] = (),
                 notes: list[str] = (), history: bool = True) -> Path:
    """results: metric -> value; figures: (caption, file name in run_dir)."""
    parts = [f"# {title}", "", table([{"metric": k, "value": v} for k, v in results.items()]), ""]
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    if history:
        parts += ["## Training history", "", "![history](history.png)", ""]
    for caption, name in figures:
        parts += [f"## {caption}", "", f"![{caption}]({name})", ""]
    path = Path(run_dir) / "report.md"
    atomic.write_text(path, "\n".join(parts))
    return path
