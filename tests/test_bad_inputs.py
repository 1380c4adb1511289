"""Every bad input a user can give through the CLI: one line naming the problem and where, exit code 2 for
usage errors and 1 for runtime errors, no traceback, and nothing half-written or lost."""
import errno

import numpy as np
import pytest
from PIL import Image

from conftest import DEFAULT_CONFIG, REPO, TINY, invoke, one_line_error
from pipeline import artifacts, config


def _no_stage_written(root, run, stage="data"):
    d = root / "runs" / run / stage
    assert not (d / "manifest.json").exists()
    assert not list(d.glob("*.tfrecord")) if d.exists() else True


def _png(path, size=(8, 8), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


@pytest.mark.parametrize("source, code, needle", [
    ("nosuch", 2, "data.source: unknown source 'nosuch'"),
    ("folder:", 2, "data.source: folder: needs an argument"),
    ("folder:does/not/exist", 1, "does/not/exist: no such directory"),
])
def test_unknown_or_missing_source(workdir, source, code, needle):
    result = invoke(["ingest", "--config", DEFAULT_CONFIG, "--run", "bad", "--set", f"data.source={source}"])
    one_line_error(result, code, needle)
    _no_stage_written(workdir, "bad")


def test_empty_folder_single_class_and_mixed_sizes(workdir):
    (workdir / "empty").mkdir()
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:empty"])
    one_line_error(result, 1, "folder:empty", "no class subfolders")

    for i in range(3):
        _png(workdir / "one" / "cat" / f"{i}.png")
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:one"])
    one_line_error(result, 1, "folder:one", "at least 2 class")

    for i, size in enumerate([(8, 8), (12, 10)] + [(8, 8)] * 10):  # enough images for every split
        _png(workdir / "mixed" / ("a" if i % 2 else "b") / f"{i}.png", size)
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:mixed"])
    one_line_error(result, 1, "folder:mixed", "differ in size", "data.image_size")
    _no_stage_written(workdir, "bad")


def test_unreadable_folder(workdir):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    d = workdir / "locked"
    d.mkdir()
    d.chmod(0)
    try:
        result = invoke(["ingest", "--run", "bad", "--set", "data.source=folder:locked"])
        assert result.exit_code == 1
    finally:
        d.chmod(0o755)


def test_tfds_offline_without_a_copy_fails_fast(workdir):
    from pipeline.sources import tfds as tfds_source

    if tfds_source._reachable():
        pytest.skip("the TFDS download host is reachable from here")
    result = invoke(["ingest", "--run", "bad", "--set", "data.source=tfds:mnist",
                     "--set", f"data.tfds_dir={workdir / 'tfds'}"])
    line = one_line_error(result, 1, "tfds:mnist")
    assert "fallback" in line or "tfds build" in line
    _no_stage_written(workdir, "bad")


def test_yaml_syntax_error_through_cli(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("data:\n  source: digits\n  seed: [1\n")
    one_line_error(invoke(["run", "--config", bad]), 2, "bad.yaml", "YAML syntax error")
    assert not (workdir / "runs").exists()


def test_preset_keys_beside_a_layer_spec_are_refused_not_ignored(workdir):
    args = ["--config", REPO / "configs" / "fashion_mnist.yaml", "--run", "spec"]   # a written-out ResNet-8
    result = invoke(["build", *args, "--set", "model.filters=[16, 32]", "--set", "model.preset=lenet5"])
    one_line_error(result, 2, "model.preset, model.filters: no effect when model.layers is given",
                   "--set model.layers=[]")
    assert not (workdir / "runs").exists()
    cfg = config.load(REPO / "configs" / "fashion_mnist.yaml", ["model.layers=[]", "model.preset=lenet5"])
    assert (cfg.model.layers, cfg.model.preset) == ([], "lenet5")     # the way out the message names works
    both = workdir / "both.yaml"                                         # one file holding both
    both.write_text("model:\n  layers: [{conv: {filters: 8}}, {global_pool: {}}]\n  dense: [64]\n")
    one_line_error(invoke(["build", "--config", both, "--run", "spec"]), 2, "model.dense: no effect")
    assert not (workdir / "runs").exists()
    # a file written for a preset lists the preset's keys; a spec given with --set replaces that preset
    assert config.load(DEFAULT_CONFIG, ["model.layers=[{conv: {filters: 8}}]"]).model.filters == [32, 64]


def test_image_too_small_for_pooling(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "small", "--set", "data.image_size=[3, 3]"]
    assert invoke(["ingest", *args]).exit_code == 0
    result = invoke(["build", *args, "--set", "model.filters=[8, 16]"])
    one_line_error(result, 2, "data.image_size: 3x3 is too small for the model's pooling")
    assert not (workdir / "runs/small/model/model.keras").exists()


def test_corrupt_keras_file_given_to_evaluate_export_and_build(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "bad", *TINY, "--set", "train.epochs=1"]
    assert invoke(["run", "--until", "train", *args]).exit_code == 0
    model = workdir / "runs/bad/train/model.keras"
    model.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # the trained model truncated after the fact
    for stage in ("evaluate", "export"):
        result = invoke([stage, *args])
        one_line_error(result, 2, "stage train of run bad is stale",
                       "output model.keras is missing or changed")
    assert not (workdir / "runs/bad/eval").exists()
    assert not (workdir / "exported").exists()
    result = invoke(["run", "--until", "build", *args, "--run", "transfer",
                     "--set", f"model.base_model={model}"])
    assert result.exit_code != 0
    one_line_error(result, result.exit_code, str(model), "not a readable .keras model")
    assert not (workdir / "runs/transfer/model/model.keras").exists()


def test_full_disk_during_export_keeps_the_previous_bundle(workdir, monkeypatch):
    args = ["--config", DEFAULT_CONFIG, "--run", "disk", *TINY, "--set", "train.epochs=2",
            "--set", "export.max_accuracy_drop=100", "--set", "export.micro=false"]
    assert invoke(["run", *args]).exit_code == 0
    bundle = workdir / "exported/disk"
    before = {p.name: artifacts.sha256_file(p) for p in bundle.iterdir() if p.is_file()}

    real, calls = artifacts.write_bytes, []

    def fail_second_write(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(artifacts, "write_bytes", fail_second_write)
    result = invoke(["export", *args, "--set", "export.io_dtype=uint8"])
    one_line_error(result, 1, "No space left on device")
    after = {p.name: artifacts.sha256_file(p) for p in bundle.iterdir() if p.is_file()}
    assert after == before
    assert sorted(p.name for p in (workdir / "exported").iterdir()) == ["disk"]
    assert not (workdir / "runs/disk/export/manifest.json").exists()
