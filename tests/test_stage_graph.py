"""The stage graph users iterate with: chained fingerprints, stale upstream refused, the resume key, the run
lock, chief-only evaluation and export, bundle files checked against the card, and publishing that never
replaces a folder it did not make."""
import json
import shutil
import time

import pytest

from conftest import DEFAULT_CONFIG, TINY, file_hashes, invoke, invoke_in, one_line_error
from pipeline import artifacts, export, lock, stages

QUICK = ["--set", "train.epochs=2", "--set", "export.max_accuracy_drop=100"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run taken through every stage once; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("graph")
    result = invoke_in(root, ["run", "--config", DEFAULT_CONFIG, "--run", "g", *TINY, *QUICK])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def mine(exported, tmp_path, monkeypatch):
    """A copy of the exported run and its bundle in this test's own folder; returns the CLI options."""
    shutil.copytree(exported / "runs", tmp_path / "runs")
    shutil.copytree(exported / "exported", tmp_path / "exported")
    monkeypatch.chdir(tmp_path)
    return ["--config", DEFAULT_CONFIG, "--run", "g", *TINY, *QUICK]


def test_changed_model_key_makes_train_refuse_its_stale_build(mine, tmp_path):
    before = file_hashes(tmp_path / "runs/g/train")
    result = invoke(["train", *mine, "--set", "model.filters=[16]"])
    one_line_error(result, 2, "stage build of run g is stale", "model.filters", "cnnpipe run --until train")
    assert "up to date" not in result.output
    assert file_hashes(tmp_path / "runs/g/train") == before


def test_export_never_publishes_the_previous_configs_model(mine, tmp_path):
    bundle = file_hashes(tmp_path / "exported/g")
    result = invoke(["export", *mine, "--set", "train.learning_rate=0.001"])
    one_line_error(result, 2, "stage train of run g is stale", "train.learning_rate")
    (tmp_path / "runs/g/train/manifest.json").unlink()  # a retrain that was killed
    result = invoke(["export", *mine])
    one_line_error(result, 2, "stage train of run g is stale", "did not finish")
    assert file_hashes(tmp_path / "exported/g") == bundle


def test_a_retrain_makes_every_downstream_stage_stale(mine, tmp_path):
    old_train = artifacts.read_json(tmp_path / "runs/g/train/manifest.json")
    result = invoke(["train", *mine, "--force"])
    assert result.exit_code == 0, result.output
    new_train = artifacts.read_json(tmp_path / "runs/g/train/manifest.json")
    assert artifacts.manifest_id(new_train) != artifacts.manifest_id(old_train)
    cfg = _cfg(mine)
    assert not stages.status(cfg, tmp_path / "runs/g", "evaluate").fresh
    assert (stages.status(cfg, tmp_path / "runs/g", "evaluate").reason
            == "upstream stage train changed since it ran")
    result = invoke(["run", *mine])
    assert result.exit_code == 0, result.output
    assert result.output.count("up to date") == 3  # ingest, build, train
    assert result.output.count("ran because: upstream stage train changed since it ran") == 2


def _cfg(args):
    from pipeline import config

    return config.load(DEFAULT_CONFIG, [a for a in args[4:] if a != "--set"])


def test_presentation_keys_never_make_a_stage_stale(mine, tmp_path):
    result = invoke(["run", *mine, "--set", "train.verbose=0", "--set", "data.workers=1",
                     "--set", "train.cache=none"])
    assert result.exit_code == 0, result.output
    assert result.output.count("up to date") == 5


def test_deleted_or_edited_bundle_file_makes_export_run_again(mine, tmp_path):
    card = json.loads((tmp_path / "exported/g/model_card.json").read_text())
    listed = card["bundle_files"]
    on_disk = {k: v for k, v in file_hashes(tmp_path / "exported/g").items() if k != "model_card.json"}
    assert listed == on_disk and "labels.txt" in listed and "micro/model_data.cc" in listed
    for damage in ("delete", "edit"):
        target = tmp_path / "exported/g/labels.txt"
        target.unlink() if damage == "delete" else target.write_text("cat\n")
        result = invoke(["export", *mine])
        assert result.exit_code == 0, result.output
        assert "ran because: bundle file exported/g/labels.txt is missing or changed" in result.output
        assert target.read_text().split() == [str(i) for i in range(10)]
    again = invoke(["export", *mine])
    assert "up to date" in again.output


def test_publishing_refuses_a_folder_it_did_not_make(mine, tmp_path):
    photos = tmp_path / "data" / "g"
    photos.mkdir(parents=True)
    (photos / "cat.jpg").write_bytes(b"my photo")
    result = invoke(["export", *mine, "--set", "export.dest=data"])
    one_line_error(result, 1, "data/g: exists and is not a bundle cnnpipe published",
                   "refusing to replace it")
    assert file_hashes(tmp_path / "data") == {"g/cat.jpg": artifacts.sha256_file(photos / "cat.jpg")}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["g"]  # no staging folder left


@pytest.mark.parametrize("run", ["", " ", "../up", ".hidden"])
def test_run_name_must_be_a_plain_folder_name(workdir, run):
    result = invoke(["ingest", "--config", DEFAULT_CONFIG, "--run", run])
    one_line_error(result, 2, "--run", "a run name is a plain, non-empty folder name")
    assert not (workdir / "runs").exists()


def test_a_second_command_on_a_locked_run_stops_naming_the_holder(mine, tmp_path):
    run_dir = tmp_path / "runs/g"
    before = file_hashes(run_dir / "train")
    with lock.hold(run_dir, "cnnpipe train --run g"):
        result = invoke(["train", *mine, "--force"])
    line = one_line_error(result, 1, "run g is busy", "cnnpipe train --run g", "pid ")
    assert str(__import__("os").getpid()) in line
    assert file_hashes(run_dir / "train") == before
    # once released, the same command runs
    assert "up to date" in invoke(["evaluate", *mine]).output


def test_a_lock_left_by_a_killed_process_is_taken_over(mine, tmp_path):
    (tmp_path / "runs/g/.lock").write_text(json.dumps({"pid": 999999, "host": "gone",
                                                       "command": "cnnpipe run",
                                                       "started": time.time() - 60}))
    result = invoke(["evaluate", *mine])
    assert result.exit_code == 0, result.output
    holder = json.loads((tmp_path / "runs/g/.lock").read_text())
    assert holder["pid"] == __import__("os").getpid()


def test_only_the_chief_evaluates_and_exports(mine, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    (tmp_path / "runs/g/eval/manifest.json").unlink()
    before = file_hashes(tmp_path / "exported")
    for stage in ("evaluate", "export"):
        result = invoke([stage, *mine, "--set", "export.max_class_drop=0"])
        assert result.exit_code == 0, result.output
        assert "only the chief evaluates and exports" in result.output
    assert not (tmp_path / "runs/g/eval/manifest.json").exists()
    assert file_hashes(tmp_path / "exported") == before


def test_a_corrupt_shard_is_found_by_its_sha256_before_training(mine, tmp_path):
    shard = sorted((tmp_path / "runs/g/data").glob("train-*.tfrecord"))[0]
    stat = shard.stat()
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # bit rot: same size, same modification time
    shard.write_bytes(bytes(raw))
    import os

    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    before = file_hashes(tmp_path / "runs/g/train")
    result = invoke(["train", *mine, "--force"])
    one_line_error(result, 1, shard.name, "corrupt (sha256 differs from the ingest manifest)",
                   "cnnpipe ingest --force")
    assert file_hashes(tmp_path / "runs/g/train") == before  # the last good training is kept


def test_the_class_gate_catches_a_class_that_int8_wipes_out(mine, tmp_path, monkeypatch):
    bundle = file_hashes(tmp_path / "exported/g")
    real = export.convert

    def calibrate_on_one_class(model, fmt, rep_images=None, io_dtype="int8"):
        if rep_images is not None:  # every calibration image a faint copy: big activations get clipped
            rep_images = (rep_images[:1] * 0.1).repeat(len(rep_images), axis=0)
        return real(model, fmt, rep_images, io_dtype)

    monkeypatch.setattr(export, "convert", calibrate_on_one_class)
    result = invoke(["export", *mine, "--force"])  # the overall limit is 100 points: only the class gate acts
    line = one_line_error(result, 1, "export gate failed: model_int8.tflite loses",
                          "points of recall on class", "export.max_class_drop = 5.0", "nothing published")
    name = line.split("on class '")[1].split("'")[0]
    failed = (tmp_path / "runs/g/export/report_failed.md").read_text()
    assert "## Gate failed" in failed and f"class '{name}'" in failed
    row = next(r for r in failed.splitlines() if r.startswith(f"| {name} |"))
    assert float(row.split("|")[3]) < -5.0  # the int8 column of the per-class table
    assert file_hashes(tmp_path / "exported/g") == bundle


def test_rerun_with_nothing_changed_is_fast_and_imports_no_tensorflow(mine, tmp_path):
    import subprocess
    import sys

    from train_utils import env

    code = ("import sys, time; t = time.time(); from tasks.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('tensorflow' in sys.modules, round(time.time() - t, 2))")
    out = subprocess.run([sys.executable, "-c", code, "run", *mine], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("up to date") == 5
    imported, seconds = out.stdout.split()[-2:]
    assert imported == "False" and float(seconds) < 2.0


def test_train_summary_reports_peak_memory(mine, tmp_path):
    summary = artifacts.read_json(tmp_path / "runs/g/train/manifest.json")["summary"]
    assert 100 < summary["peak_rss_mb"] < 24 * 1024  # TensorFlow alone takes a few hundred MB


def test_library_status_names_what_changed(mine, tmp_path):
    cfg = _cfg(mine + ["--set", "eval.batch_size=7"])
    st = stages.status(cfg, tmp_path / "runs/g", "evaluate")
    assert not st.fresh and st.reason == "config changed since it ran: eval.batch_size"
    assert stages.status(cfg, tmp_path / "runs/g", "train").fresh
    assert stages.changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == ["a.c"]
    assert stages.ancestors("export") == ["ingest", "build", "train"]
