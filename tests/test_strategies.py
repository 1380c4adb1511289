"""Where training runs: the strategy ``train.strategy`` picks, MirroredStrategy over two logical CPU devices,
two worker processes on 127.0.0.1 training one model with MultiWorkerMirroredStrategy, and mixed precision."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import DEFAULT_CONFIG
from pipeline import artifacts, config, stages, strategy
from pipeline.errors import ConfigError, PipelineError
from train_utils import (cli_args, cluster, copy_prepared, free_ports, history, prepared_run, sets, start,
                         wait_all)

SAME = ("train.epochs=3", "train.schedule=constant", "train.verbose=0")
# test accuracy of two worker processes vs one process with the same config: the same global batch and
# schedule, but other dropout masks and summation order, so a few test images may flip
TOLERANCE = 0.06
CHANCE = 0.1  # ten classes


def _accuracy(run_dir):
    return artifacts.read_json(run_dir / "eval" / "metrics.json")["accuracy"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The quick config trained in one process twice at once: the default strategy, and MirroredStrategy over
    two logical CPU devices."""
    prepared = prepared_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("one-process")
    out = {}
    procs, logs = [], []
    for name, extra in (("default", ()), ("mirrored", ("train.strategy=mirrored", "train.cpu_devices=2"))):
        out[name] = copy_prepared(prepared, root / name)
        logs.append(root / f"{name}.log")
        args = cli_args("run", root / name, *SAME, *extra) + ["--until", "evaluate"]
        procs.append(start(args, root, logs[-1]))
    wait_all(procs, logs)
    return out


def test_mirrored_strategy_over_two_logical_cpus(one_process):
    run_dir = one_process["mirrored"]
    where = artifacts.read_json(run_dir / "train" / "manifest.json")["distribution"]
    assert where["strategy"] == "mirrored" and where["class"] == "MirroredStrategy"
    assert where["replicas"] == 2 and [d[-5:] for d in where["devices"]] == ["CPU:0", "CPU:1"]
    assert where["global_batch_size"] == 32
    assert len(history(run_dir)) == 3
    assert _accuracy(run_dir) > 5 * CHANCE


def test_two_worker_processes_train_one_model(one_process, tmp_path_factory):
    prepared = prepared_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("multiworker")
    run_dir = copy_prepared(prepared, root / "runs")
    ports = free_ports(2)
    logs = [root / "worker0.log", root / "worker1.log"]
    procs = [start(cli_args("train", root / "runs", *SAME), root, log, tf_config=cluster(ports, i))
             for i, log in enumerate(logs)]
    wait_all(procs, logs, timeout=300)
    assert "strategy: multiworker, 2 replica(s)" in logs[1].read_text()  # the non-chief trained too ...
    # ... but only the chief wrote the run's files
    assert sorted(p.name for p in (run_dir / "train").iterdir()) == [
        "history.csv", "manifest.json", "model.keras", "tensorboard", "training_curves.png"]
    where = artifacts.read_json(run_dir / "train" / "manifest.json")["distribution"]
    assert where["strategy"] == "multiworker" and where["workers"] == 2 and where["replicas"] == 2
    assert where["task"] == {"type": "worker", "index": 0}

    cfg = config.load(DEFAULT_CONFIG, [s for s in sets(*SAME) if s != "--set"])
    stages.evaluate(cfg, run_dir)
    single, two = _accuracy(one_process["default"]), _accuracy(run_dir)
    assert two > 5 * CHANCE
    assert abs(two - single) <= TOLERANCE, f"two workers {two} vs one process {single}"
    # two workers of one replica each compute what one process with two replicas computes
    assert abs(two - _accuracy(one_process["mirrored"])) <= 0.02


@pytest.mark.parametrize("setting, policy", [("on", "mixed_float16"), ("bfloat16", "mixed_bfloat16")])
def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path_factory, tmp_path, setting, policy):
    from pipeline import models, train

    run_dir = copy_prepared(prepared_run(tmp_path_factory), tmp_path / "runs")
    cfg = config.load(DEFAULT_CONFIG, [s for s in sets("train.epochs=1", "train.verbose=0",
                                                       f'train.mixed_precision="{setting}"') if s != "--set"])
    args = (run_dir / "model" / "model.keras", run_dir / "data", cfg, run_dir / "train")
    summary = train.fit(*args)
    assert summary["manifest"]["distribution"]["precision"] == policy
    assert "resumed_from_epoch" not in summary
    assert summary["best_val_accuracy"] > 3 * CHANCE  # one epoch: learning, not yet converged
    again = train.fit(*args)  # the checkpoint (a loss-scale optimizer included) restores under the policy
    assert again["resumed_from_epoch"] == 1
    saved = models.load(run_dir / "train" / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # the process is left as it was


@pytest.mark.parametrize("value, env, expected", [
    ("auto", None, "default"),
    ("auto", cluster([1, 2], 0), "multiworker"),
    ("default", cluster([1, 2], 0), "default"),
    ("mirrored", None, "mirrored"),
])
def test_strategy_choice(monkeypatch, value, env, expected):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if env:
        monkeypatch.setenv("TF_CONFIG", env)
    assert strategy.resolve(SimpleNamespace(strategy=value)) == expected


@pytest.mark.parametrize("spec, task, chief", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
])
def test_only_one_task_is_the_chief(monkeypatch, spec, task, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": spec, "task": task}))
    assert strategy.is_chief(SimpleNamespace(strategy="auto")) is chief
    assert strategy.is_chief(SimpleNamespace(strategy="default")) is True


def test_bad_cluster_settings_are_one_line_errors(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="multiworker needs the TF_CONFIG"):
        strategy.resolve(SimpleNamespace(strategy="multiworker"))
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG: not valid JSON"):
        strategy.resolve(SimpleNamespace(strategy="auto"))


def test_cpu_split_after_tensorflow_started_is_a_one_line_error():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started in this process
    have = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(PipelineError, match="train.cpu_devices: TensorFlow already started"):
        strategy._split_cpu(tf, have + 1)
