"""OUT/review.html: a static page to review a batch of identifications in any browser, no server.

Per photo: the aligned crop, the matcher's keypoint pairs with each candidate's
best crop (or the contact sheet), the candidates with probabilities and
inliers, and the proposed decision. The researcher accepts a candidate, marks
a new whale (named, by default its provisional group new-N) or unsure, and
saves the decisions as a CSV (in-page JavaScript, a download; nothing leaves
the machine) for `python -m rightwhale catalogue add`. Pictures are linked
by relative path, so the page stays small for a thousand photos and must
stay beside them.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from rightwhale.core import atomic

DECISIONS_FILE = "decisions.csv"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rightwhale review: __COUNT__ photos</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0 1em 4em; background: #f6f6f3; }
header { position: sticky; top: 0; background: #f6f6f3; padding: .6em 0; border-bottom: 1px solid #ccc; }
.photo { background: white; margin: 1em 0; padding: .8em; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
.photo h2 { font-size: 15px; margin: 0 0 .5em; }
.pics { display: flex; gap: .8em; flex-wrap: wrap; align-items: flex-start; }
.pics img { max-height: 420px; border: 1px solid #ddd; }
.pics img.crop { width: 180px; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { padding: .15em .6em; text-align: left; }
.tag { padding: .1em .5em; border-radius: 3px; color: white; }
.known { background: #2a7d2a; } .new { background: #b8602a; } .check { background: #8a2a8a; }
.reviewed { outline: 3px solid #2a7d2a55; }
</style></head><body>
<header><b>rightwhale review</b>: __COUNT__ photos, <span id="done">0</span> reviewed (click a choice,
the proposed one too, to review a photo; only reviewed photos are saved).
<button id="save">Save decisions (CSV)</button> <span id="saved"></span></header>
<main id="photos">__CARDS__</main>
<script id="data" type="application/json">__DATA__</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
function choice(i) {
  const picked = document.querySelector(`input[name="d${i}"]:checked`);
  if (!picked) return null;
  if (picked.value === "new") return ["new", document.getElementById(`name${i}`).value.trim()];
  if (picked.value === "unsure") return ["unsure", ""];
  return ["known", picked.value.slice(6)];            // "known:<whale>"
}
function csvCell(s) { s = String(s); return /[",\\r\\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; }
function reviewed(i) { return document.getElementById(`card${i}`).dataset.touched === "1"; }
function decisionsCsv() {      // the photos the researcher reviewed, never an unreviewed proposal
  const rows = [["photo", "crop", "decision", "whale", "catalogue"]];
  data.photos.forEach((p, i) => {
    const c = choice(i);
    if (c && reviewed(i)) rows.push([p.photo, p.crop, c[0], c[1], data.catalogue || ""]);
  });
  return rows.map(r => r.map(csvCell).join(",")).join("\\n") + "\\n";
}
function refresh() {
  let done = 0;
  data.photos.forEach((p, i) => {
    document.getElementById(`card${i}`).classList.toggle("reviewed", reviewed(i));
    done += reviewed(i);
  });
  document.getElementById("done").textContent = done;
}
// a click on any choice, the proposed one included, or typing a name marks the photo reviewed
document.querySelectorAll("section.photo input").forEach(el => el.addEventListener(
  el.type === "text" ? "input" : "click", e => { e.target.closest(".photo").dataset.touched = "1"; refresh(); }));
document.getElementById("save").addEventListener("click", () => {
  const unnamed = data.photos.findIndex((p, i) => {
    const c = choice(i); return reviewed(i) && c && c[0] === "new" && !c[1];
  });
  if (unnamed >= 0) {
    document.getElementById("saved").textContent = `name the new whale of ${data.photos[unnamed].photo} first`;
    return;
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([decisionsCsv()], {type: "text/csv"}));
  a.download = "__FILE__";
  document.body.appendChild(a); a.click(); a.remove();
  document.getElementById("saved").textContent = "saved as __FILE__ (your downloads folder)";
});
</script></body></html>
"""

TAGS = {"known": "known", "new?": "new", "check alignment": "check"}


def _link(path, here: Path) -> str:
    """A picture's address relative to the page, URL-quoted (names may hold #, % or ?)."""
    return html.escape(quote(Path(os.path.relpath(Path(path).absolute(), here)).as_posix())) if path else ""


def _card(i: int, r: dict, here: Path) -> str:
    e = html.escape
    link = lambda p: _link(p, here)      # noqa: E731
    rows = "".join(
        f"<tr><td><label><input type='radio' name='d{i}' value='known:{e(w)}'"
        f"{' checked' if r['decision'] == 'known' and k == 0 else ''}> accept</label></td><td>{e(w)}</td>"
        f"<td>{p:.3f}</td><td>{r['matcher inliers'].get(w, '')}</td></tr>"
        for k, (w, p) in enumerate(r["top"]))
    new_name = r.get("group") or ""
    picture = r["matches"] or r["candidates"]
    return f"""
<section class="photo" id="card{i}"><h2>{e(Path(r['photo']).name)}
 <span class="tag {TAGS.get(r['decision'], 'check')}">{e(r['decision'])}</span>
 {e(r.get('group') or '')}</h2>
<div class="pics"><img class="crop" src="{link(r['crop'])}" alt="crop of {e(Path(r['photo']).name)}">
<img src="{link(picture)}" alt="matches of {e(Path(r['photo']).name)}"></div>
<table><tr><th></th><th>whale</th><th>p</th><th>inliers</th></tr>{rows}</table>
<label><input type="radio" name="d{i}" value="new"{' checked' if r['decision'] == 'new?' else ''}> new whale,
 named <input type="text" id="name{i}" value="{e(new_name)}" placeholder="its name"></label>
<label><input type="radio" name="d{i}" value="unsure"{' checked' if r['decision'] == 'check alignment' else ''}>
 unsure</label>
<br><small>new-whale score {'' if r['new-whale score'] is None else f"{r['new-whale score']:.2f}"}
{'' if r['tta_spread_ratio'] is None else f"; aligner TTA spread {r['tta_spread_ratio']:.0%} of the head"}</small>
</section>"""


def write_review(path, results: list[dict], catalogue) -> Path:
    """The review page of a batch: `results` as identify writes them, `catalogue` the match run."""
    path = Path(path)
    here = path.parent.absolute()
    data = {"catalogue": str(catalogue) if catalogue else None,
            "photos": [{"photo": r["photo"], "crop": str(Path(r["crop"]).absolute())} for r in results]}
    fields = {"COUNT": str(len(results)), "FILE": DECISIONS_FILE,
              "CARDS": "".join(_card(i, r, here) for i, r in enumerate(results)),
              "DATA": json.dumps(data).replace("<", "\\u003c")}      # no "</script>" or "<!--" in the data
    page = re.sub(r"__(COUNT|FILE|CARDS|DATA)__", lambda m: fields[m.group(1)], PAGE)   # one pass: names stay names
    atomic.write_text(path, page)
    return path
