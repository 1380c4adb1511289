"""Atomic writes, manifests, fingerprints and bundle publishing."""
import errno
import json

import pytest

from pipeline import artifacts
from pipeline.errors import PipelineError


def test_atomic_write_keeps_previous_file_when_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    artifacts.write_json(target, {"accuracy": 0.9})

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(target), "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        artifacts.write_json(target, {"accuracy": 0.1})
    assert json.loads(target.read_text()) == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_fingerprint_changes_with_content_and_config(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    fp1 = artifacts.fingerprint([f], {"k": 1})
    assert fp1 == artifacts.fingerprint([f], {"k": 1})
    assert fp1 != artifacts.fingerprint([f], {"k": 2})
    f.write_bytes(b"two")
    assert fp1 != artifacts.fingerprint([f], {"k": 1})


def test_manifest_and_up_to_date(tmp_path):
    stage = tmp_path / "run" / "eval"
    out = artifacts.write_text(stage / "out.txt", "hello")
    inp = artifacts.write_text(tmp_path / "run" / "in.txt", "input")
    fp = artifacts.fingerprint([inp], {"x": 1})
    m = artifacts.write_manifest(stage, stage="eval", fp=fp, inputs=[inp], section={"x": 1},
                                 outputs=[out], wall_time_s=1.25)
    assert m["inputs"][0]["sha256"] == artifacts.sha256_file(inp)
    assert m["outputs"][0]["path"] == "out.txt" and m["versions"]["tensorflow"]
    assert artifacts.up_to_date(stage, fp)
    assert not artifacts.up_to_date(stage, "other")
    out.unlink()
    assert not artifacts.up_to_date(stage, fp)


def _folder(path, name, text, bundle=False):
    path.mkdir(parents=True)
    (path / name).write_text(text)
    if bundle:  # a folder publish_dir made before
        (path / artifacts.MARKER).write_text("{}")
    return path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_publish_dir_replaces_whole_folder(tmp_path):
    dest = _folder(tmp_path / "exported" / "run", "old.txt", "old", bundle=True)
    staging = _folder(tmp_path / "exported" / ".run.staging", "new.txt", "new")
    artifacts.publish_dir(staging, dest)
    assert _names(dest) == [artifacts.MARKER, "new.txt"]
    assert not staging.exists()
    assert _names(tmp_path / "exported") == ["run"]


def test_publish_dir_recovers_a_swap_killed_between_its_renames(tmp_path):
    dest = tmp_path / "exported" / "run"
    _folder(tmp_path / "exported" / ".run.old", "model.tflite", "last good",
            bundle=True)  # renamed away, killed
    staging = _folder(tmp_path / "exported" / ".run.staging", "model.tflite", "new")
    artifacts.publish_dir(staging, dest)
    assert (dest / "model.tflite").read_text() == "new"
    assert _names(tmp_path / "exported") == ["run"]


@pytest.mark.parametrize("foreign", ["run", ".run.old"])
def test_publish_dir_never_replaces_a_folder_it_did_not_make(tmp_path, foreign):
    users = _folder(tmp_path / "exported" / foreign, "photo.jpg", "the user's data")
    staging = _folder(tmp_path / "exported" / ".run.staging", "model.tflite", "new")
    with pytest.raises(PipelineError, match="not a bundle cnnpipe published"):
        artifacts.publish_dir(staging, tmp_path / "exported" / "run")
    assert (users / "photo.jpg").read_text() == "the user's data" and _names(users) == ["photo.jpg"]


def test_publish_dir_refuses_a_file_or_a_link_in_the_way(tmp_path):
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "run").write_text("a file")
    staging = _folder(tmp_path / "exported" / ".s", "m.tflite", "new")
    with pytest.raises(PipelineError, match="not a bundle"):
        artifacts.publish_dir(staging, tmp_path / "exported" / "run")
    target = _folder(tmp_path / "elsewhere", "keep.txt", "keep", bundle=True)
    (tmp_path / "exported" / "link").symlink_to(target)
    with pytest.raises(PipelineError, match="not a bundle"):
        artifacts.publish_dir(staging, tmp_path / "exported" / "link")
    assert (target / "keep.txt").read_text() == "keep"


def test_manifest_id_follows_output_content(tmp_path):
    stage = tmp_path / "train"
    out = artifacts.write_text(stage / "model.keras", "weights v1")
    m1 = artifacts.write_manifest(stage, stage="train", fp="f", inputs=[], section={}, outputs=[out],
                                  wall_time_s=0)
    artifacts.write_text(out, "weights v2")  # a retrain with the same config made another model
    m2 = artifacts.write_manifest(stage, stage="train", fp="f", inputs=[], section={}, outputs=[out],
                                  wall_time_s=0)
    assert artifacts.manifest_id(m1) != artifacts.manifest_id(m2)
    assert artifacts.entry_intact(m2["outputs"][0], stage, full=True)
    out.write_text("weights v3")
    assert not artifacts.entry_intact(m2["outputs"][0], stage)
