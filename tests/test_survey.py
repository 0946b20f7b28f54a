"""From a survey flight to catalogue decisions: batch identify, new whales, the review page, catalogue add."""
import csv
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from rightwhale.__main__ import main as rightwhale_main
from rightwhale.cli.evaluate import open_set
from rightwhale.io.crop_folders import crop_data_dir
from rightwhale.scorers import novelty
from rightwhale.scorers.match_run import MatchRun
from rightwhale.stages import main as train_main


def test_threshold_costs_known_whales_at_most_the_share_asked():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    known = rng.random((200, 5)) + 4 * np.eye(5)[labels] * (rng.random(200) < 0.8)[:, None]  # 80% matchable
    new = rng.random((100, 5))                                                             # nothing matches
    t = novelty.fit_threshold(known, labels, new, known_loss=0.05)
    right = known.argmax(1) == labels
    flagged_right = (t.is_new(known) & right).mean()
    assert flagged_right <= 0.05 and t.new_flagged > 0.9 and t.auc > 0.85
    # the lowest such threshold: any lower one also flags the right crop at it, past the share
    assert (novelty.novelty_score(known[right]) >= t.threshold).sum() > int(0.05 * len(known))


@pytest.fixture(scope="module")
def catalogue(make_survey, tmp_path_factory):
    """A match run whose gallery lacks one whale entirely, and crops of that whale and of known ones."""
    survey = make_survey(width=480, height=320)
    root = tmp_path_factory.mktemp("workflow")
    crops = root / "crops"
    crop_data_dir(survey, crops, 64, 64, progress=False)
    with open(crops / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    whales = sorted({w for _, w in rows[1:]})
    unseen = max(whales, key=lambda w: sum(r[1] == w for r in rows[1:]))      # the one with most crops
    unseen_crops = [n for n, w in rows[1:] if w == unseen]
    known = root / "known"
    shutil.copytree(crops, known)
    (known / "source.json").unlink()            # a data set of its own: its own split
    with open(known / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[1] != unseen)])
    assert train_main(["--stage", "match", "--crops", str(known), "--runs", str(root / "runs"),
                       "--no-progress"]) == 0
    run = root / "runs" / "match-known"
    gallery_names = set(MatchRun(run).gallery.names)
    known_queries = [n for n, w in rows[1:] if w != unseen and n not in gallery_names][:2]
    batch = root / "batch"
    batch.mkdir()
    # a photo name with a comma and a quote: CSV cells, HTML and links must survive it
    in_batch = {n: n for n in unseen_crops[:2] + known_queries[:1]} | {known_queries[1]: f'odd, "{known_queries[1]}'}
    for n, as_named in in_batch.items():
        shutil.copy(crops / "imgs" / n, batch / as_named)
    (batch / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return {"crops": crops, "known": known, "root": root, "run": run, "unseen": unseen, "unseen_crops": unseen_crops,
            "batch": batch, "in_batch": in_batch, "known_queries": known_queries, "labels": dict(rows[1:])}


def identify(c, out, *extra):
    return rightwhale_main(["identify", str(c["batch"]), "--crops", "--runs", str(c["run"]), "--out", str(out),
                            "--no-progress", "--top", "3", *extra])


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_flags_and_groups_an_unseen_whale(catalogue, tmp_path, capsys):
    c = catalogue
    assert "new whale" in json.loads((c["run"] / "calibration.json").read_text())
    assert identify(c, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "zz_broken.jpg: skipped" in err                    # the bad photo, and only it, is lost
    rows = {r["photo"].split("/")[-1]: r for r in rows_of(tmp_path / "out" / "identifications.csv")}
    assert len(rows) == 4
    a, b = c["unseen_crops"][:2]
    assert rows[a]["decision"] == rows[b]["decision"] == "new?"
    assert rows[a]["group"] == rows[b]["group"] == "new-1"           # one sighting, one provisional whale
    for n in c["known_queries"]:
        row = rows[c["in_batch"][n]]
        assert row["decision"] == "known" and row["group"] == "" and row["whale 1"] == c["labels"][n]
    assert (tmp_path / "out" / "review.html").is_file()


def test_batch_resumes_after_kill_9(catalogue, tmp_path, capsys):
    c = catalogue
    assert identify(c, tmp_path / "whole") == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "rightwhale", "identify", str(c["batch"]), "--crops", "--runs", str(c["run"]),
           "--out", str(out), "--no-progress", "--top", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "photos").glob("*.json")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(list((out / "photos").glob("*.json")))
    capsys.readouterr()
    assert identify(c, out) == 0
    assert f"({done} from an earlier run of this batch)" in capsys.readouterr().out     # not redone
    assert (out / "identifications.csv").read_text() == (tmp_path / "whole" / "identifications.csv").read_text()
    assert proc.returncode == -9 and 1 <= done < 4            # it was killed mid-batch


def test_catalogue_add_then_identify_finds_the_added_whale(catalogue, tmp_path, capsys):
    c = catalogue
    run = tmp_path / "run"
    shutil.copytree(c["run"], run)
    assert identify({**c, "run": run}, tmp_path / "out") == 0
    result = json.loads((tmp_path / "out" / "identifications.json").read_text())
    decisions = tmp_path / "decisions.csv"
    with open(decisions, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["photo", "crop", "decision", "whale", "catalogue"])
        for r in result["photos"]:
            if r["decision"] == "new?":
                w.writerow([r["photo"], r["crop"], "new", "whale_newcomer", result["catalogue"]])
    assert rightwhale_main(["catalogue", "add", str(decisions), "--no-progress"]) == 0
    grown = MatchRun(run)
    assert grown.added_whales == ["whale_newcomer"] and (run / "catalogue" / "train.csv").is_file()
    # another crop of the same whale, never seen, is now named as the added whale
    third = c["unseen_crops"][2]
    query = tmp_path / "query"
    query.mkdir()
    shutil.copy(c["crops"] / "imgs" / third, query / third)
    assert identify({**c, "run": run, "batch": query}, tmp_path / "again") == 0
    row = rows_of(tmp_path / "again" / "identifications.csv")[0]
    assert row["whale 1"] == "whale_newcomer" and row["decision"] == "known"
    # a CNN run that never saw the added whale says so, and the matcher alone ranks
    assert train_main(["--stage", "classify", "--crops", str(c["known"]), "--runs", str(c["root"] / "runs"),
                       "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--no-progress"]) == 0
    cnn = c["root"] / "runs" / "classify-known-resnet19"
    capsys.readouterr()
    assert rightwhale_main(["identify", str(query), "--crops", "--runs", str(cnn), str(run), "--out",
                            str(tmp_path / "both"), "--no-progress"]) == 0
    assert "CNN runs never saw" in capsys.readouterr().out
    row = rows_of(tmp_path / "both" / "identifications.csv")[0]
    assert row["whale 1"] == "whale_newcomer"
    # a second add of the same decisions adds nothing
    assert rightwhale_main(["catalogue", "add", str(decisions), "--no-progress"]) == 0
    assert len(MatchRun(run).gallery) == len(grown.gallery)


def test_open_set_evaluation(catalogue):
    scores = open_set(catalogue["run"], catalogue["crops"], left_out=0.4, progress=False)
    assert scores["new-whale crops"] > 0 and scores["known crops"] > 0
    assert 0.5 < scores["new-whale ROC AUC"] <= 1     # the synthetic whales are far apart
    assert scores["new-whale crops flagged new?"] > scores["known crops flagged new?"]


def browser(downloads):
    """Headless Chromium driven by Selenium, downloading into `downloads`; skips where none can run."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium and chromedriver: .ci/run installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,760"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    from selenium.webdriver.chrome.service import Service
    return webdriver.Chrome(service=Service(driver), options=options)


def test_review_page_in_a_browser_saves_decisions_catalogue_add_accepts(catalogue, tmp_path):
    import os
    c = catalogue
    run = tmp_path / "run"
    shutil.copytree(c["run"], run)
    assert identify({**c, "run": run}, tmp_path / "out") == 0
    photos = json.loads((tmp_path / "out" / "identifications.json").read_text())["photos"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    from selenium.webdriver.common.by import By
    driver = browser(downloads)
    try:
        driver.get((tmp_path / "out" / "review.html").as_uri())
        cards = driver.find_elements(By.CSS_SELECTOR, "section.photo")
        assert len(cards) == len(photos) == 4
        images = driver.find_elements(By.TAG_NAME, "img")
        assert images and all(driver.execute_script("return arguments[0].naturalWidth", im) > 0 for im in images)
        new = [i for i, p in enumerate(photos) if p["decision"] == "new?"]
        assert driver.find_element(By.ID, f"name{new[0]}").get_attribute("value") == "new-1"
        known = [i for i, p in enumerate(photos) if p["decision"] == "known"]
        def click(selector):         # as a researcher does: scrolled to the middle, clear of the header
            element = driver.find_element(By.CSS_SELECTOR, selector)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            element.click()
        for i in new:                # accepting the proposal: a click on the choice already made
            click(f"input[name='d{i}'][value='new']")
        click(f"input[name='d{known[0]}'][value='unsure']")
        assert driver.find_element(By.ID, "done").text == str(len(new) + 1)      # known[1] left unreviewed
        driver.execute_script("window.scrollTo(0, 0)")
        if os.environ.get("RIGHTWHALE_SCREENSHOT"):          # the README's picture
            driver.save_screenshot(os.environ["RIGHTWHALE_SCREENSHOT"])
        driver.find_element(By.ID, "save").click()
        saved = downloads / "decisions.csv"
        deadline = time.time() + 20
        while not saved.is_file() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        driver.quit()
    rows = rows_of(saved)
    assert {r["photo"]: (r["decision"], r["whale"]) for r in rows} == {
        **{photos[i]["photo"]: ("new", "new-1") for i in new}, photos[known[0]]["photo"]: ("unsure", "")}
    assert rightwhale_main(["catalogue", "add", str(saved), "--no-progress"]) == 0
    assert MatchRun(run).added_whales == ["new-1"]


def test_catalogue_add_skips_bad_rows_and_adds_the_rest(catalogue, tmp_path, capsys):
    c = catalogue
    run = tmp_path / "run"
    shutil.copytree(c["run"], run)
    crop = c["crops"] / "imgs" / c["unseen_crops"][0]
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("photo,crop,decision,whale,catalogue\n"
                         f"a.jpg,{crop},maybe,whale_x,{run}\n"              # no such decision
                         f"b.jpg,{crop},new,../escape,{run}\n"              # a name leaving the folder
                         f"c.jpg,{tmp_path / 'gone.png'},new,whale_y,{run}\n"   # crop gone
                         f"d.jpg,{crop},new,whale_z,{run}\n")
    assert rightwhale_main(["catalogue", "add", str(decisions), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert all(f"line {n}: skipped" in err for n in (2, 3, 4))
    assert MatchRun(run).added_whales == ["whale_z"]
