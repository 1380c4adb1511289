"""Preflight: class counts, imbalance, channel statistics, skipped files, duplicates and dedupe."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from pipeline import config, preflight
from pipeline.errors import PipelineError

NAMES = ["a", "b", "c"]


def images(values):
    """One 4x4x1 image per value, every pixel equal to it (so equal values = identical content)."""
    return np.stack([np.full((4, 4, 1), v, np.uint8) for v in values])


def sha(image) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture
def splits():
    return {
        "train": (images([1, 2, 3, 4, 5, 5]), np.array([0, 1, 2, 0, 1, 1])),  # 5 twice within train
        "val": (images([2, 6, 6, 7]), np.array([1, 0, 0, 2])),  # 2 from train; 6 twice
        "test": (images([3, 7, 8, 9]), np.array([0, 2, 1, 2])),  # 3 from train (other label); 7 from val
    }


def test_report_without_dedupe(splits):
    skipped = [{"path": "x/broken.jpg", "reason": "OSError: truncated"}]
    out, report = preflight.run(splits, NAMES, skipped, False)
    assert out is splits or all(np.array_equal(out[k][0], splits[k][0]) for k in splits)
    assert report["splits"]["train"]["class_counts"] == {"a": 2, "b": 3, "c": 1}
    assert report["splits"]["train"]["imbalance_ratio"] == 3.0
    assert report["splits"]["val"]["images"] == 4
    dup = report["duplicates"]
    assert dup["within"] == {"train": 1, "val": 1, "test": 0}
    assert dup["across"] == {"train/val": 1, "train/test": 1, "val/test": 1}
    assert dup["label_conflicts"] == 1 and dup["examples"]
    assert report["skipped"]["count"] == 1 and report["skipped"]["files"][0]["path"] == "x/broken.jpg"
    assert report["dedupe"] == {"enabled": False, "removed": {}}
    assert any("data.dedupe" in w for w in report["warnings"])
    json.dumps(report)  # written as preflight.json


def test_channel_statistics():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 5, 5, 3), dtype=np.uint8)
    _, report = preflight.run({"train": (x, np.arange(50) % 3)}, NAMES, [], False)
    assert report["image"]["shape"] == [5, 5, 3]
    assert np.allclose(report["image"]["channel_mean"], x.reshape(-1, 3).mean(0), atol=1e-3)
    assert np.allclose(report["image"]["channel_std"], x.reshape(-1, 3).std(0), atol=1e-3)


def test_missing_class_and_imbalance_warnings():
    x = images(range(12))
    _, report = preflight.run({"train": (x, np.array([0] * 11 + [1]))}, NAMES, [], False)
    stats = report["splits"]["train"]
    assert stats["missing_classes"] == ["c"] and stats["imbalance_ratio"] is None
    assert any("no images of c" in w for w in report["warnings"])
    _, report = preflight.run({"train": (images(range(12)), np.array([0] * 11 + [1]))}, NAMES[:2], [], False)
    assert report["splits"]["train"]["imbalance_ratio"] == 11.0
    assert any("imbalanced" in w for w in report["warnings"])


def test_dedupe_removes_from_val_and_test_only(splits):
    out, report = preflight.run(splits, NAMES, [], True)
    assert report["dedupe"]["removed"] == {"val": 2, "test": 2}
    assert len(out["train"][1]) == 6  # train is never changed
    assert [int(v) for v in out["val"][0][:, 0, 0, 0]] == [6, 7]
    assert [int(v) for v in out["test"][0][:, 0, 0, 0]] == [8, 9]
    assert list(out["val"][1]) == [0, 2] and list(out["test"][1]) == [1, 2]  # labels follow their images
    assert report["splits"]["val"]["images"] == 2


def test_dedupe_that_empties_a_split_is_an_error():
    same = {"train": (images([1, 2]), np.array([0, 1])), "val": (images([1]), np.array([0])),
            "test": (images([3]), np.array([1]))}
    with pytest.raises(PipelineError, match="every image of the val split duplicates"):
        preflight.run(same, NAMES, [], True)


def test_seeded_splits_with_dedupe_share_no_content():
    """From a pool full of duplicates: make_splits then dedupe leaves no content in two splits."""
    from pipeline.data import make_splits

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (60, 4, 4, 1), dtype=np.uint8)
    pool_x = np.concatenate([base, base[:30], base[:10]])  # 40 exact copies
    pool_y = np.concatenate([np.arange(60) % 3, np.arange(30) % 3, np.arange(10) % 3])
    keys = {"dedupe": True, "seed": 5, "val_fraction": 0.2, "test_fraction": 0.2}
    cfg = config.from_dict({"data": keys}).data
    splits = make_splits({"all": (pool_x, pool_y)}, cfg)
    out, report = preflight.run(splits, NAMES, [], cfg.dedupe)
    seen = {}
    for name in ("train", "val", "test"):
        hashes = [sha(im) for im in out[name][0]]
        if name != "train":
            assert len(hashes) == len(set(hashes)), f"duplicate within {name}"
        for h in set(hashes):
            assert h not in seen, f"content in {seen.get(h)} and {name}"
            seen[h] = name
    assert sum(report["dedupe"]["removed"].values()) > 0
    again, _ = preflight.run(make_splits({"all": (pool_x, pool_y)}, cfg), NAMES, [], True)
    assert all(np.array_equal(again[k][0], out[k][0]) for k in out)  # deterministic


def test_table_is_short_plain_text(splits):
    _, report = preflight.run(splits, NAMES, [{"path": f"p{i}.png", "reason": "bad"} for i in range(7)], True)
    text = preflight.table(report)
    assert text.splitlines()[0].split()[:3] == ["split", "images", "classes"]
    assert "dedupe removed: val 2, test 2" in text
    assert "skipped 7 unreadable file(s)" in text and "and 2 more" in text
    assert len(text.splitlines()) < 25


def test_empty_splits_error():
    with pytest.raises(PipelineError, match="no splits"):
        preflight.run({}, NAMES, [], False)


def test_streaming_checker_matches_the_in_memory_report(splits):
    """Fed one image at a time (as ingest streams them), the checker decides and reports as run() does."""
    _, expected = preflight.run(splits, NAMES, [], True)
    checker = preflight.Checker(NAMES, dedupe=True)
    kept = {}
    for name in ("train", "val", "test"):
        x, y = splits[name]
        kept[name] = [int(x[i, 0, 0, 0]) for i in range(len(y)) if checker.add(name, sha(x[i]), y[i])]
        if name == "train":
            for image in x:  # pixel statistics accumulated block by block
                checker.pixels(image[None])
    assert kept == {"train": [1, 2, 3, 4, 5, 5], "val": [6, 7], "test": [8, 9]}
    assert checker.report([]) == expected


def test_skipped_and_ignored_files_counted_by_extension():
    assert preflight.by_extension(["a/x.HEIC", "b/y.heic", "c/z.txt", "noext"]) == {
        "": 1, ".heic": 2, ".txt": 1}
    ignored = {"count": 3, "by_extension": {".heic": 2, ".txt": 1}, "examples": []}
    checker = preflight.Checker(NAMES, dedupe=False)
    for i, label in enumerate([0, 1, 2]):
        checker.add("train", f"h{i}", label)
    checker.pixels(images([1, 2, 3]))
    report = checker.report([{"path": "q/broken.webp", "reason": "bad"}], ignored)
    assert report["skipped"]["by_extension"] == {".webp": 1} and report["ignored"] == ignored
    assert "ignored 3 file(s) in formats Pillow does not read: .heic 2, .txt 1" in preflight.table(report)
