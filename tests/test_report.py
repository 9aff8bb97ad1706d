"""The HTML report: built from a small study of real runs, self-contained, and checked in a real
browser (headless Chromium): no console errors, no network requests, every image drawn, every
CSV link the table it sits by."""

import base64
import csv
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from ticketlab.cli import main
from ticketlab.report.html import cell

STUDY = """\
description: a small study for the report tests
data: {name: digits}
model: {name: lenet300_100}
train: {steps: 60it, batch_size: 32, save_at: 0it}
replicates: 2
controls: [reinit]
lottery: {levels: 2, rate: 0.5}
sweep: {ks: [0, 0.5, 0.9]}
sensitivity: {ladder: [0.5, 0.9]}
compare:
  sparsities: [0.5, 0.8]
  methods:
    - {name: magnitude, prune: {criterion: magnitude}}
    - {name: random, prune: {criterion: random}}
    - {name: SA k=init, search: {method: anneal, granularity: weight, at: 0it, budget: 20, val_size: 30}}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of real runs, run once: its preset file, runs directory and report."""
    root = tmp_path_factory.mktemp("report")
    preset = root / "study.yaml"
    preset.write_text(STUDY)
    assert main(["run", str(preset), "--quiet", "--json", "--runs-dir", str(root / "runs")]) == 0
    return preset, root / "runs", root / "runs" / "reports" / "study.html"


class Page(HTMLParser):
    """The page's headings, images, CSV links and tables, as the HTML holds them."""

    def __init__(self, text):
        super().__init__()
        self.headings, self.images, self.links, self.tables = [], [], [], []
        self._in, self._row = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2":
            self._in = "h2"
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and "download" in attrs:
            self.links.append(attrs["href"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._row.append("")
            self._in = "cell"

    def handle_endtag(self, tag):
        if tag in ("h2", "td", "th"):
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.headings.append(data)
        elif self._in == "cell":
            self._row[-1] += data


def test_the_run_writes_a_report_of_every_kind_of_run_in_the_study(study, capsys):
    _, runs, report = study
    page = Page(report.read_text())
    assert page.headings == ["Runs", "Dense trainings", "Weight and unit pruning without retraining",
                             "Layer sensitivity", "Iterative magnitude pruning (lottery tickets)", "Masks compared",
                             "Mask searches"]
    assert "The best objective score found against the evaluations spent" in report.read_text()  # SA among them
    # every image is an embedded PNG (the sweep's animation a GIF); nothing is fetched from anywhere
    assert page.images and all(src.startswith(("data:image/png;base64,iVBORw0KGgo", "data:image/gif;base64,R0lGOD"))
                               for src in page.images)
    assert sum(src.startswith("data:image/gif") for src in page.images) == 1
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    # the runs table (after the page's facts) lists every finished run of the study
    runs_table = page.tables[1]
    made = {p.name for p in runs.iterdir() if (p / "summary.json").exists()}
    assert {row[0] for row in runs_table[1:]} == made
    kinds = [row[1] for row in runs_table[1:]]
    assert kinds.count("similarity") == kinds.count("orthogonality") == 2  # the study's, one each per sparsity


def test_every_csv_link_holds_the_table_it_sits_by(study):
    _, _, report = study
    page = Page(report.read_text())
    # the facts table at the top has no link; every other table has one
    tables = page.tables[1:]
    assert len(page.links) == len(tables)
    for href, table in zip(page.links, tables):
        prefix = "data:text/csv;base64,"
        assert href.startswith(prefix)
        rows = list(csv.reader(base64.b64decode(href[len(prefix):]).decode().splitlines()))
        assert [[cell(value) for value in row] for row in rows] == table  # every digit kept, 4 shown


def test_the_report_shows_similarity_and_orthogonality_of_the_compared_masks(study):
    _, runs, report = study
    page = Page(report.read_text())
    similarity = [t for t in page.tables if t[0] == ["a", "b", "cosine", "jaccard", "hamming"]]
    assert len(similarity) == 2  # one per sparsity
    for table in similarity:
        labels = {row[0] for row in table[1:]} | {row[1] for row in table[1:]}
        assert labels == {"magnitude", "random", "SA k=init", "random-1", "random-2"}
        for row in table[1:]:
            assert 0 <= float(row[2]) <= 1 and 0 <= float(row[4]) <= 1
    orthogonality = [t for t in page.tables if t[0][0] == "mask" and t[0][-1] == "mean"]
    assert len(orthogonality) == 2 and orthogonality[0][-1][0] == "dense (no mask)"


def test_a_report_of_named_runs_takes_the_runs_they_were_made_from(study, tmp_path, capsys):
    _, runs, _ = study
    sweep = next(p.name for p in runs.iterdir() if p.name.startswith("sweep-"))
    out = tmp_path / "sweep.html"
    assert main(["report", sweep, "-o", str(out), "--runs-dir", str(runs), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.splitlines()[-1])
    # the dense training; the sweep's curves, its weight and unit histograms, and their animation
    assert payload["report"] == str(out.absolute()) and payload["figures"] == 5
    page = Page(out.read_text())
    assert page.headings == ["Runs", "Dense trainings", "Weight and unit pruning without retraining"]
    gif = base64.b64decode(next(src for src in page.images if src.startswith("data:image/gif")).split(",", 1)[1])
    with Image.open(io.BytesIO(gif)) as animation:
        assert animation.format == "GIF" and animation.n_frames == 3  # one frame per k of the sweep


def test_controls_named_alone_are_tabulated_with_their_levels_like_a_lottery(study, tmp_path, capsys):
    _, runs, _ = study
    report = next(p for p in runs.iterdir() if p.name.startswith("lottery-"))
    lottery = {row["procedure"] + row["level"]: row for row in csv.DictReader((report / "table.csv").open())}
    first = json.loads((next(p for p in runs.iterdir() if p.name.startswith("level-")) / "hparams.json").read_text())
    controls = [p.name for p in runs.iterdir() if p.name.startswith("control-")
                and json.loads((runs / json.loads((p / "hparams.json").read_text())["level"] / "hparams.json")
                               .read_text())["dense"] == first["dense"]]  # one replicate's
    out = tmp_path / "controls.html"
    assert main(["report", *controls, "-o", str(out), "--runs-dir", str(runs)]) == 0
    page = Page(out.read_text())
    assert page.headings == ["Runs", "Dense trainings", "Iterative magnitude pruning (lottery tickets)"]
    table = page.tables[-1]
    assert table[0][:4] == ["procedure", "level", "remaining_pct", "n"]
    assert [row[:2] for row in table[1:]] == [["ticket", "0"], ["ticket", "1"], ["ticket", "2"], ["reinit", "1"],
                                              ["reinit", "2"]]
    for row in table[1:]:  # one replicate of the lottery: its remaining weights as the lottery's table has them
        assert row[3] == "1" and row[2] == cell(lottery[row[0] + row[1]]["remaining_pct"])


def test_a_report_of_a_run_that_is_not_there_is_a_one_line_error(study, tmp_path, capsys):
    _, runs, _ = study
    assert main(["report", "train-000000000000", "-o", str(tmp_path / "r.html"), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ticketlab: error: run train-000000000000 is not a finished run under") and \
        err.count("\n") == 1
    assert main(["report", "train-000000000000", "-o", str(tmp_path / "r.txt"), "--runs-dir", str(runs)]) == 2
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.txt").exists()
    capsys.readouterr()
    assert main(["report", "quickstart", "-o", str(tmp_path / "q.html"), "--runs-dir", str(runs)]) == 2
    assert "preset quickstart has no finished runs under" in capsys.readouterr().err
    sweep = next(p.name for p in runs.iterdir() if p.name.startswith("sweep-"))
    assert main(["report", sweep, "-o", "/dev/null/r.html", "--runs-dir", str(runs)]) == 2
    assert "/dev/null is not a directory" in capsys.readouterr().err


def _browser():
    """Headless Chromium through chromedriver (Debian's chromium and chromium-driver); skipped where
    they are not installed, unless TICKETLAB_REQUIRE_BROWSER is set (as .ci/run sets it)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("TICKETLAB_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test needs {', '.join(missing)}")
        pytest.skip(f"no {', '.join(missing)} here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_report_in_a_real_browser(study, tmp_path):
    _, _, report = study
    driver = _browser()
    try:
        driver.get(report.absolute().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        assert images and all(done and width > 0 and height > 0 for done, width, height in images)
        shown = driver.execute_script("""
            return Array.from(document.querySelectorAll('a.csv')).map(a => [a.href,
                Array.from(a.closest('p').nextElementSibling.querySelectorAll('tr')).map(
                    tr => Array.from(tr.cells).map(c => c.textContent))]);""")
        assert shown
        for href, table in shown:
            rows = csv.reader(base64.b64decode(href.split(",", 1)[1]).decode().splitlines())
            assert [[cell(value) for value in row] for row in rows] == table
        # readable at 1280 px: nothing wider than the window but the tables' own scrolling boxes
        assert driver.execute_script("return document.documentElement.scrollWidth;") <= 1280
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        requested = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(url.startswith(("file://", "data:")) for url in urls), urls
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(height + 100, 16000))
        shot = Path(os.environ.get("TICKETLAB_TEST_OUTPUT", tmp_path)) / "report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_similarity_and_orthogonality_from_the_command_line(study, capsys):
    _, runs, _ = study
    masks = sorted(p.name for p in runs.iterdir() if p.name.startswith("prune-"))[:2]
    assert main(["similarity", *masks, masks[0], "--random", "1", "--runs-dir", str(runs), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert payload["labels"] == [*masks, "random-1"]  # a run named twice is one mask
    assert [payload["cosine"][i][i] for i in range(3)] == pytest.approx([1, 1, 1])
    assert payload["hamming"][0][1] == payload["hamming"][1][0] > 0
    assert main(["orthogonality", masks[0], "--runs-dir", str(runs), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])["orthogonality"][masks[0]]
    assert list(scores) == ["fc1.weight", "fc2.weight", "fc3.weight"] and all(v > 0 for v in scores.values())
    assert main(["similarity", "train-000000000000", "--runs-dir", str(runs)]) == 2
    assert "no run 'train-000000000000'" in capsys.readouterr().err


def test_table_cells_show_four_significant_digits_and_text_as_it_is():
    assert cell("0.123456789") == "0.1235" and cell(0.5) == "0.5" and cell("100.0") == "100"
    assert cell("1ep21it") == "1ep21it" and cell("train-3fc3da0406aa") == "train-3fc3da0406aa"
    assert cell(None) == "" and cell(60) == "60" and cell("SA k=init") == "SA k=init"


def test_a_damaged_run_stops_the_report_with_its_repair(study, tmp_path, capsys):
    preset, runs, _ = study
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    damaged = next(p for p in copy.iterdir() if p.name.startswith("prune-"))
    (damaged / "summary.json").write_text("{")
    assert main(["report", str(preset), "-o", str(tmp_path / "r.html"), "--runs-dir", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"run {damaged.name} is damaged (summary.json is corrupt" in err and "repair it with" in err
    assert err.count("\n") == 1 and not (tmp_path / "r.html").exists()
