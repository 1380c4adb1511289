"""``train.deterministic: true``: two runs of the same config, each from scratch in its own run folder,
give byte-identical ``eval/metrics.json`` and the same training history (but its wall-time columns), and the
manifest records what repeats them."""
from __future__ import annotations

import numpy as np

from pipeline import artifacts, data
from train_utils import RUN, cli_args, history, start, wait_all

# seeded augmentation included, so the augmentation's random numbers are covered too
DETERMINISTIC = ("train.deterministic=true", "train.epochs=3", "train.verbose=0", "augment.translate=0.1")


def test_two_deterministic_runs_are_byte_identical(tmp_path):
    runs = [tmp_path / "one", tmp_path / "two"]
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    procs = [start(cli_args("run", r, *DETERMINISTIC) + ["--until", "evaluate"], tmp_path, log)
             for r, log in zip(runs, logs)]
    wait_all(procs, logs)
    first, second = (r / RUN for r in runs)
    metrics = [(d / "eval" / "metrics.json").read_bytes() for d in (first, second)]
    assert metrics[0] == metrics[1]
    assert artifacts.read_json(first / "eval" / "metrics.json")["accuracy"] > 0.5

    def values(run_dir):  # every column but the two wall-time ones, which no seed can repeat
        return [{k: v for k, v in row.items() if k not in ("epoch_s", "time_s")} for row in history(run_dir)]

    assert values(first) == values(second) and len(values(first)) == 3
    assert all(float(row["epoch_s"]) > 0 for row in history(first))
    for split in ("train", "test"):  # the same images and labels in the same order
        (xa, ya), (xb, yb) = (data.load_split(d / "data", split) for d in (first, second))
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    _check_manifest_records_the_run(first)


def _check_manifest_records_the_run(run_dir):
    m = artifacts.read_json(run_dir / "train" / "manifest.json")
    assert m["seeds"] == {"data": 42, "model": 42, "train": 42}
    assert m["deterministic"] is True and m["config"]["train"]["deterministic"] is True
    assert m["config"]["augment"]["translate"] == 0.1
    assert m["distribution"]["strategy"] == "default" and m["distribution"]["replicas"] == 1
    assert m["distribution"]["precision"] == "float32" and m["distribution"]["global_batch_size"] == 32
    assert {"tensorflow", "keras", "numpy", "python"} <= set(m["versions"])
    inputs = {e["path"]: e["sha256"] for e in m["inputs"]}
    assert inputs["model/model.keras"] == artifacts.sha256_file(run_dir / "model" / "model.keras")
    assert any(p.startswith("data/train-") for p in inputs)
