"""Class names users give: a line break or non-UTF-8 bytes stop ingest naming the folder; split-folder names
never switch the layout silently; report-key names, emoji, quotes and accents work end to end."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, invoke, one_line_error
from pipeline import evaluate

ODD = ["accuracy", "macro avg", "weighted avg", "😀 smile", 'say "hi"', "café", "Ωmega's"]


def png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


def folder(root, names, per_class=4):
    for c, name in enumerate(names):
        for i in range(per_class):
            png(root / name / f"{i}.png", 20 + 30 * c + i)
    return root


def nothing_written(workdir, run="bad"):
    data_dir = workdir / "runs" / run / "data"
    assert not (data_dir / "manifest.json").exists()
    assert not list(data_dir.glob("*.tfrecord")) if data_dir.exists() else True


def test_line_break_in_a_class_folder_is_rejected_naming_it(workdir):
    folder(workdir / "imgs", ["cat", "dog\nbird"])
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:imgs"])
    one_line_error(result, 1, "folder:imgs", "class folder 'dog\\nbird'", "line break")
    nothing_written(workdir)
    assert (workdir / "imgs" / "dog\nbird" / "0.png").is_file()  # the user's files are untouched


def test_control_character_and_unicode_line_separator_are_rejected(workdir):
    folder(workdir / "a", ["cat", "tab\there"])
    one_line_error(invoke(["ingest", "--run", "bad", "--set", "data.source=folder:a"]), 1, "'tab\\there'")
    folder(workdir / "b", ["cat", "two\u2028lines"])
    one_line_error(invoke(["ingest", "--run", "bad", "--set", "data.source=folder:b"]), 1, "line break")
    nothing_written(workdir)


def test_non_utf8_class_folder_is_rejected_naming_it(workdir):
    root = workdir / "imgs"
    folder(root, ["cat", "dog"])
    raw = os.fsencode(str(root)) + b"/caf\xe9"
    try:
        os.mkdir(raw)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    for i in range(3):
        Image.new("L", (8, 8), 9).save(os.fsdecode(raw + f"/{i}.png".encode()))
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:imgs"])
    one_line_error(result, 1, "folder:imgs", "class folder b'caf\\xe9' is not valid UTF-8")
    nothing_written(workdir)


def test_split_names_beside_class_folders_are_an_error_not_a_layout(workdir):
    folder(workdir / "mixed", ["cat", "test"])
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:mixed"])
    one_line_error(result, 1, "mixes split folder(s) test/ with other folder(s) cat/", "train/test/")
    nothing_written(workdir)
    folder(workdir / "flat", ["train", "val"])  # only split names, images right inside them
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:flat"])
    one_line_error(result, 1, "train/ holds images but no class folders", "train/train/")
    nothing_written(workdir)
    for split in ("val", "validation"):
        folder(workdir / "both" / split, ["a", "b"])
    folder(workdir / "both" / "train", ["a", "b"])
    one_line_error(invoke(["ingest", "--run", "bad", "--set", "data.source=folder:both"]), 1,
                   "has both val/ and validation/")


def test_classes_named_like_splits_work_one_level_down(workdir):
    for split, n in (("train", 6), ("test", 2)):
        folder(workdir / "ds" / split, ["train", "test", "val"], per_class=n)
    result = invoke(["ingest", "--run", "ok", "--set", "data.source=folder:ds"])
    assert result.exit_code == 0, result.output
    meta = json.loads((workdir / "runs" / "ok" / "data" / "classes.json").read_text())
    assert meta["class_names"] == ["test", "train", "val"]
    assert meta["counts"]["test"] == 6 and meta["counts"]["train"] + meta["counts"]["val"] == 18


def test_metrics_keyed_by_index_not_by_name():
    names = ["accuracy", "macro avg", "weighted avg"]
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = evaluate.metrics(y_true, y_pred, names)
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert list(m["per_class"]) == names
    assert m["per_class"]["accuracy"] == {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2}
    assert m["per_class"]["macro avg"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class"]["weighted avg"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 2 / 3]), abs=1e-6)


@pytest.mark.slow
def test_odd_class_names_end_to_end(workdir):
    """Report keys, emoji, quotes and accents through ingest, train, evaluate and export (micro files are
    covered where the C headers are made)."""
    root = folder(workdir / "odd", ODD, per_class=12)
    result = invoke(["run", "--run", "odd", "--set", "data.source=folder:odd", *TINY,
                     "--set", "export.micro=false", "--set", "export.max_accuracy_drop=100",
                     "--set", "export.max_class_drop=100"])
    assert result.exit_code == 0, result.output
    expected = sorted(ODD)
    run = workdir / "runs" / "odd"
    assert json.loads((run / "data" / "classes.json").read_text(encoding="utf-8"))["class_names"] == expected
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert list(metrics["per_class"]) == expected and metrics["n_test"] == 7 * 2
    assert sum(c["support"] for c in metrics["per_class"].values()) == 14
    assert 0.0 <= metrics["accuracy"] <= 1.0 and isinstance(metrics["macro_f1"], float)
    bundle = workdir / "exported" / "odd"
    assert (bundle / "labels.txt").read_text(encoding="utf-8").splitlines() == expected
    card = json.loads((bundle / "model_card.json").read_text(encoding="utf-8"))
    assert card["class_names"] == expected
    assert root.is_dir() and len(list(root.rglob("*.png"))) == 7 * 12
