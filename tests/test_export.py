"""The export stage: every quantization mode audited and evaluated, and the parity gate that refuses to
publish a quantized file that lost accuracy."""
import json

import numpy as np

from conftest import file_hashes, invoke
from pipeline import artifacts, export

ALL = "export.formats=[float32, float16, dynamic, int8, int16x8]"


def test_every_format_is_audited_and_evaluated(own_run, tmp_path):
    result = invoke(["export", *own_run, "--set", ALL])
    assert result.exit_code == 0, result.output
    assert "up to date" not in result.output
    card = json.loads((tmp_path / "exported/mine/model_card.json").read_text())
    assert list(card["files"]) == ["float32", "float16", "dynamic", "int8", "int16x8"]
    dtypes = {fmt: (f["input"]["dtype"], f["output"]["dtype"]) for fmt, f in card["files"].items()}
    assert dtypes == {"float32": ("float32", "float32"), "float16": ("float32", "float32"),
                      "dynamic": ("float32", "float32"), "int8": ("int8", "int8"),
                      "int16x8": ("int16", "int16")}
    sizes = {fmt: f["bytes"] for fmt, f in card["files"].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"] and sizes["dynamic"] < sizes["float32"]
    for fmt, f in card["files"].items():
        assert (tmp_path / "exported/mine" / f["file"]).stat().st_size == f["bytes"]
        assert "CONV_2D" in f["ops"] and not any(op.startswith("Flex") for op in f["ops"])
        assert f["parity"]["accuracy_drop_points"] <= 1.0
        assert set(f["parity"]["per_class"]) == set(card["class_names"])
    assert card["files"]["float32"]["parity"]["top1_changed"] == 0.0
    report = (tmp_path / "exported/mine/report.md").read_text()
    for fmt in card["files"]:
        assert f"| model_{fmt}.tflite | {fmt} |" in report
    manifest = artifacts.read_json(tmp_path / "runs/mine/export/manifest.json")
    assert manifest["representative"] == {"samples": 100, "seed": 42, "split": "train", "stratified": True}


def test_representative_sample_is_stratified():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    idx = export.representative_sample(labels, 40, seed=0)
    assert len(set(idx)) == len(idx) == 40
    counts = np.bincount(labels[idx], minlength=4)
    assert counts.tolist() == [20, 10, 6, 4]
    assert np.array_equal(idx, export.representative_sample(labels, 40, seed=0))


def test_broken_calibration_trips_the_gate_and_keeps_the_bundle(own_run, tmp_path, monkeypatch):
    assert invoke(["export", *own_run]).exit_code == 0
    bundle = tmp_path / "exported/mine"
    before = file_hashes(bundle)
    real = export.convert

    def constant_calibration(model, fmt, rep_images=None, io_dtype="int8"):
        if rep_images is not None:
            rep_images = np.full_like(rep_images, 128)  # every calibration image the same grey
        return real(model, fmt, rep_images, io_dtype)

    monkeypatch.setattr(export, "convert", constant_calibration)
    result = invoke(["export", *own_run, "--force"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "export gate failed: model_int8.tflite loses" in errors[0]
    assert "nothing published" in errors[0]
    assert file_hashes(bundle) == before
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["mine"]
    failed = (tmp_path / "runs/mine/export/report_failed.md").read_text()
    assert "| model_int8.tflite | int8 |" in failed


def test_representative_sample_keeps_every_class_when_one_dominates():
    labels = np.repeat(np.arange(10), [910] + [10] * 9)
    idx = export.representative_sample(labels, 10, seed=1)
    assert len(idx) == 10 and sorted(labels[idx].tolist()) == list(range(10))
