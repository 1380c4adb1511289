"""Atomic writes, manifests, fingerprints and bundle publishing."""
import errno
import json

import pytest

from pipeline import artifacts


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


def _folder(path, name, text):
    path.mkdir(parents=True)
    (path / name).write_text(text)
    return path


def test_publish_dir_replaces_whole_folder(tmp_path):
    dest = _folder(tmp_path / "exported" / "run", "old.txt", "old")
    staging = _folder(tmp_path / "exported" / ".run.staging", "new.txt", "new")
    artifacts.publish_dir(staging, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert not staging.exists()
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["run"]


def test_publish_dir_recovers_a_swap_killed_between_its_renames(tmp_path):
    dest = tmp_path / "exported" / "run"
    _folder(tmp_path / "exported" / ".run.old", "model.tflite", "last good")  # dest renamed away, then killed
    staging = _folder(tmp_path / "exported" / ".run.staging", "model.tflite", "new")
    artifacts.publish_dir(staging, dest)
    assert (dest / "model.tflite").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["run"]
