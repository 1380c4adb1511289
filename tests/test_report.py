"""The run report: its content through the library, `cnnpipe report` through the CLI (bad runs included),
the copy in the published bundle, and the page rendered by headless Chromium."""
import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from conftest import invoke
from pipeline import report
from pipeline.report import gather

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# what the browser test adds to a copy of the page: on load, how many images decoded and how wide the page is
PROBE = """<script>window.addEventListener("load", function () {
  var n = 0;
  for (var i = 0; i < document.images.length; i++) { if (document.images[i].naturalWidth > 0) n++; }
  document.body.setAttribute("data-images", document.images.length);
  document.body.setAttribute("data-images-loaded", n);
  document.body.setAttribute("data-scroll-width", document.documentElement.scrollWidth);
  document.body.setAttribute("data-inner-width", window.innerWidth);
});</script>"""


class _Cells(HTMLParser):
    """Table rows of a page as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _rows(html: str) -> list:
    parser = _Cells()
    parser.feed(html)
    return parser.rows


def _pct(v, digits=1):
    return f"{100 * v:.{digits}f}%"


@pytest.fixture
def own_run(tiny_run, tmp_path, monkeypatch):
    """A copy of the tiny run and its bundle under tmp_path, the working folder."""
    shutil.copytree(tiny_run["run"], tmp_path / "runs" / "tiny")
    shutil.copytree(tiny_run["exported"], tmp_path / "exported" / "tiny")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs" / "tiny"


@pytest.fixture
def written(own_run):
    """The report of the copied run, written through the CLI."""
    result = invoke(["report", "--run", "tiny", "--bench-runs", "20"])
    assert result.exit_code == 0, result.output
    path = own_run / "report.html"
    assert f"report: {path.relative_to(own_run.parent.parent)}" in result.output
    return own_run, path.read_text()


def test_report_shows_every_section_with_the_run_s_numbers(written):
    run, html = written
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    card = json.loads((run / "export" / "model_card.json").read_text())
    for section in report.SECTIONS:
        assert f'<section id="{section}">' in html
    rows = _rows(html)
    assert f"{100 * metrics['accuracy']:.2f}%" in html
    for name, m in metrics["per_class"].items():  # float beside each exported file, per class
        expected = [name, _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1-score"]), str(m["support"]),
                    _pct(m["recall"]), *[_pct(card["files"][fmt]["parity"]["per_class"][name]["accuracy"])
                                         for fmt in ("float32", "int8")]]
        assert expected in rows
    wrong = metrics["n_test"] - sum(metrics["confusion_matrix"][i][i] for i in range(10))
    assert f"{wrong} of {metrics['n_test']} test images are misclassified" in html
    assert html.count('alt="test image ') >= min(wrong, 24) + 1  # the gallery and the feature-map probe
    changed = round(card["files"]["int8"]["parity"]["top1_changed"] * metrics["n_test"])
    assert f"the Keras model on {changed} of {metrics['n_test']} test images" in html
    counts = json.loads((run / "data" / "preflight.json").read_text())["splits"]
    assert ["3", *(str(counts[s]["class_counts"]["3"]) for s in ("train", "val", "test"))] in rows
    summary = json.loads((run / "model" / "summary.json").read_text())
    conv = next(layer for layer in summary["layers"] if layer["kind"] == "conv")
    assert [conv["name"], "conv", "8x8x8", f"{conv['params']:,}", f"{conv['macs']:,}", "3x3"] in rows
    assert ["model_int8.tflite", f"{card['files']['int8']['bytes']:,} B "
            f"({card['files']['int8']['bytes'] / 1024:.1f} KiB)", "int8 1x8x8x1",
            ", ".join(card["files"]["int8"]["ops"])] in rows
    assert f"{card['micro']['arena_bytes']:,} B" in html
    files = ("model_int8.tflite", "model_float32.tflite")
    latency = [r for r in rows if r and r[0] in files and r[1] == "20"]
    assert len(latency) == 2 and all(float(r[2]) > 0 for r in latency)
    assert ["train", "epochs", "4"] not in rows and ["epochs", "4"] in rows  # the recorded config
    assert ["keras", *[json.loads((run / d / "manifest.json").read_text())["versions"]["keras"]
                       for d in ("data", "model", "train", "eval", "export")]] in rows


def test_report_is_self_contained(written):
    _, html = written
    sources = re.findall(r'<img[^>]* src="([^"]*)"', html)
    assert len(sources) == html.count("<img") >= 20  # samples, curves, confusion, galleries, filters, maps
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) >= 8
    assert not re.search(r'(src|href)="(https?:)?//', html) and "@import" not in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_budget_rows_compare_measured_bytes_with_model_budget(own_run):
    card = json.loads((own_run / "export" / "model_card.json").read_text())
    int8, arena = card["files"]["int8"]["bytes"], card["micro"]["arena_bytes"]
    rows = gather.budget({"model.budget.flash_kb": 64, "model.budget.ram_kb": 1}, card, {})
    assert rows == [
        {"what": "flash: int8 file", "limit": 65536, "bytes": int8, "kind": "measured", "fits": True},
        {"what": "RAM: TFLM arena", "limit": 1024, "bytes": arena, "kind": "measured", "fits": False}]
    estimated = gather.budget({"model.budget.ram_kb": 8}, None, {"arena_bytes_estimate": 5000})
    assert estimated == [{"what": "RAM: TFLM arena", "limit": 8192, "bytes": 5000, "kind": "estimated",
                          "fits": True}]
    assert gather.budget({}, card, {}) == []
    # without the micro bundle (export.micro off) the card's device check holds the arena and the budget
    checked = {"files": {"int8": {"bytes": int8}},
               "device": {"budget": {"ram_kb": 4}, "measured": {"arena_bytes": arena}}}
    assert gather.budget({}, checked, {}) == [{"what": "RAM: TFLM arena", "limit": 4096, "bytes": arena,
                                               "kind": "measured", "fits": arena <= 4096}]


def test_report_before_export_says_so_in_one_line_per_section(own_run, tmp_path):
    shutil.rmtree(own_run / "export")
    shutil.rmtree(tmp_path / "exported")
    result = invoke(["report", "--run", "tiny", "--bench-runs", "0"])
    assert result.exit_code == 0, result.output
    html = (own_run / "report.html").read_text()
    assert "Not exported yet: no int8 file to compare with." in html
    assert "Not exported yet: run <code>cnnpipe export</code> for file sizes, arena and latency." in html
    assert "Not exported yet: the exported files' per-class accuracy appears after" in html
    assert "test images are misclassified by the Keras model" in html  # the rest is there


def test_report_of_an_export_without_int8(own_run):
    card_path = own_run / "export" / "model_card.json"
    card = json.loads(card_path.read_text())
    del card["files"]["int8"], card["micro"]
    card.pop("device", None)  # what export measured of the int8 file
    card_path.write_text(json.dumps(card))
    path = report.write(own_run, bench_runs=3)
    html = path.read_text()
    assert "No int8 file among the exported files (export.formats)." in html
    rows = _rows(html)
    assert ["class", "precision", "recall", "F1", "support", "Keras acc.", "float32 acc."] in rows
    tflite = [r[0] for r in rows if r and r[0].endswith(".tflite")]
    assert tflite == ["model_float32.tflite"] * 2  # its size and its latency
    assert "not measured (export.micro off or no int8 file)" in html


def test_report_of_a_run_that_does_not_exist(workdir):
    result = invoke(["report", "--run", "nosuch"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "error: runs/nosuch: no such run (see `cnnpipe runs`)"
    assert not (workdir / "runs").exists()
    bad = invoke(["report", "--run", "../elsewhere"])
    assert bad.exit_code == 2 and "a run name is a plain, non-empty folder name" in bad.output


def test_report_of_a_run_before_evaluate(own_run):
    shutil.rmtree(own_run / "eval")
    before = sorted(p.relative_to(own_run) for p in own_run.rglob("*"))
    result = invoke(["report", "--run", "tiny"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        "error: runs/tiny/eval/manifest.json: not found; run `cnnpipe run --until evaluate --run tiny` "
        "before `cnnpipe report` (evaluate has not finished)")
    assert sorted(p.relative_to(own_run) for p in own_run.rglob("*")) == before  # nothing written


def test_export_publishes_the_report_in_the_bundle(tiny_run):
    bundle = tiny_run["exported"]
    card = json.loads((bundle / "model_card.json").read_text())
    from pipeline import artifacts

    assert card["bundle_files"]["report.html"] == artifacts.sha256_file(bundle / "report.html")
    html = (bundle / "report.html").read_text()
    for section in report.SECTIONS:
        assert f'<section id="{section}">' in html
    assert f"{card['files']['int8']['bytes']:,} B" in html and f"{card['micro']['arena_bytes']:,} B" in html
    rows = _rows(html)
    assert ["rgb_input", "False"] in rows  # the export keys of the export being published
    assert ["library", "ingest", "build", "train", "evaluate", "export"] in rows


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *map(str, args)],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (`make test` installs it)")
def test_chromium_renders_every_section_with_its_images(written, tmp_path):
    run, html = written
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attrs = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body))
    assert int(attrs["data-images"]) == html.count("<img") >= 20
    assert attrs["data-images-loaded"] == attrs["data-images"]  # every embedded image decoded
    for section in report.SECTIONS:
        assert f'<section id="{section}">' in dom.stdout

    shot = tmp_path / "report.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1600", page.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1100, 1600)
    histogram = image.histogram()
    assert max(histogram) < 0.97 * sum(histogram)  # not one flat colour
    assert len([n for n in histogram if n]) > 50    # text and pictures, many grey levels

    # headless Chromium's narrowest window is 500 px: a phone held in portrait is narrower still
    phone = _chromium(tmp_path, "--virtual-time-budget=5000", "--window-size=390,844", "--dump-dom",
                      page.as_uri())
    body = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', re.search(r"<body([^>]*)>", phone.stdout).group(1)))
    assert int(body["data-inner-width"]) <= 500
    # nothing wider than the screen: wide tables scroll sideways inside their own box
    assert int(body["data-scroll-width"]) <= int(body["data-inner-width"])


FASHION = "/usr/share/datasets/fashion-mnist"


def _idx_subset(src, dest, train: int, test: int) -> None:
    """The first images of the Fashion-MNIST IDX files, written as IDX files with the class names beside."""
    import gzip

    import numpy as np

    from pipeline.sources import idx

    dest.mkdir()
    for prefix, n in (("train", train), ("t10k", test)):
        images = idx.read_idx(src / f"{prefix}-images-idx3-ubyte.gz", 3)[:n]
        labels = idx.read_idx(src / f"{prefix}-labels-idx1-ubyte.gz", 1)[:n]
        for kind, array, code in (("images-idx3", images, 3), ("labels-idx1", labels, 1)):
            header = bytes([0, 0, 0x08, code]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            with gzip.open(dest / f"{prefix}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
    (dest / "classes.txt").write_text("\n".join(idx.FASHION_MNIST_CLASSES) + "\n")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or not os.path.isdir(FASHION),
                    reason="needs headless Chromium and the Debian package dataset-fashion-mnist")
def test_fashion_mnist_report_in_chromium(workdir, tmp_path):
    """A short Fashion-MNIST run of the default ResNet-8 (4,000 training images, 2 epochs) through export, its
    report rendered."""
    from pathlib import Path

    from conftest import REPO

    _idx_subset(Path(FASHION), tmp_path / "fashion-subset", 4000, 1000)
    result = invoke(["run", "--config", REPO / "configs" / "fashion_mnist.yaml", "--run", "fashion",
                     "--set", f"data.source=idx:{tmp_path / 'fashion-subset'}", "--set", "data.fallback=",
                     "--set", "train.epochs=2", "--set", "train.verbose=0",
                     "--set", "export.representative_samples=200",
                     # ~100 test images a class after 2 epochs: 5 changed labels move a class 5 points; the
                     # export gates have their own tests, this one is about the page
                     "--set", "export.max_class_drop=100"])
    assert result.exit_code == 0, result.output
    bundle_page = (workdir / "exported" / "fashion" / "report.html").read_text()
    assert "Ankle boot" in bundle_page  # the bundle's copy
    assert "Keras, flip-averaged" in bundle_page  # the config's files average the image and its mirror
    assert invoke(["report", "--run", "fashion"]).exit_code == 0
    html = (workdir / "runs" / "fashion" / "report.html").read_text()
    for name in ("T-shirt/top", "Trouser", "Ankle boot"):
        assert re.search(rf'<td>{re.escape(name)}</td>\s*<td class="l"><img', html)  # sample images per class
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    attrs = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', re.search(r"<body([^>]*)>", dom.stdout).group(1)))
    assert attrs["data-images-loaded"] == attrs["data-images"] == str(html.count("<img"))
    for section in report.SECTIONS:
        assert f'<section id="{section}">' in dom.stdout
    shot = tmp_path / "fashion-report.png"
    shooting = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,2400", page.as_uri())
    assert shooting.returncode == 0, shooting.stderr[-2000:]
    histogram = Image.open(shot).convert("L").histogram()
    assert max(histogram) < 0.97 * sum(histogram) and len([n for n in histogram if n]) > 50


def test_montage_enlarges_small_images_by_whole_pixels():
    import numpy as np

    from pipeline.report import figures

    def size(b64):
        return Image.open(io.BytesIO(base64.b64decode(b64))).size

    digits = [np.full((8, 8, 1), 40 * i, np.uint8) for i in range(5)]
    assert size(figures.montage(digits)) == (5 * 48 + 4 * figures.GAP, 48)  # 8 px -> 48 px, nearest neighbour
    assert size(figures.montage(digits, cols=2)) == (2 * 48 + figures.GAP, 3 * 48 + 2 * figures.GAP)
    fashion = np.zeros((28, 28, 3), np.uint8)
    assert size(figures.image(fashion)) == (56, 56)
    sequence = np.zeros((1, 40, 1), np.uint8)  # a one-row sequence stays within LONGEST, not 48 px tall
    assert size(figures.image(sequence)) == (160, 4)
    large = np.zeros((300, 200, 3), np.uint8)
    assert size(figures.image(large)) == (200, 300)  # never shrunk
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(figures.image(digits[3])))))
    assert pixels.shape == (48, 48, 3) and (pixels == 120).all()
