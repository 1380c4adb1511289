"""Streaming ingest: shards byte-identical whatever the worker count, WEBP/TIFF read, unread formats reported
by extension, dedupe while streaming, nothing left behind by a failed ingest; streamed reads of the shards
(labels, images at indices, cache modes, byte-sized shuffle buffer)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from pipeline import artifacts, config, data, ingest, input_pipeline
from pipeline.errors import PipelineError

CLASSES = ("ant", "bee", "cow")


def make_folder(root, per_class=12, size=(10, 8)):
    """PNGs whose pixels say which image they are: red = class * 80 + 10, green = index % 256, blue random."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[..., 0] = c * 80 + 10
            pixels[..., 1] = i % 256
            pixels[..., 2] = rng.integers(0, 256, (size[1], size[0]))
            path = root / name / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    return root


def cfg_for(source, shard_size=100, **data_keys):
    keys = {"source": source, "channels": 3, "val_fraction": 0.2, "test_fraction": 0.2, **data_keys}
    cfg = config.from_dict({"data": keys})
    cfg.data.shard_size = shard_size  # below the config's minimum: several shards from a few images
    return cfg


def digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tfrecord"))}


def test_shards_byte_identical_for_one_and_two_workers(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=40)
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        out.mkdir()
        outputs, summary, _ = ingest.run(cfg_for(f"folder:{root}", workers=workers), out)
        assert summary["workers"] == workers and summary["train_images"] == 78
        assert summary["peak_rss_mb"] > 0 and summary["images_per_second"] > 0
        outs[workers] = out
        assert [p for p in outputs if p.suffix == ".tfrecord"]  # every shard listed for the manifest
    one, two = digests(outs[1]), digests(outs[2])
    assert list(one) == ["test-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord",
                         "val-00000-of-00001.tfrecord"]
    assert one == two
    for name in ("classes.json", "preflight.json"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes()
    assert not list(outs[2].glob(".*"))  # no temporary shard left


def test_shards_are_split_into_shard_size_records(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=120)
    out = tmp_path / "out"
    ingest.run(cfg_for(f"folder:{root}", workers=1), out)
    assert [p.name for p in data.shards(out, "train")] == [f"train-{k:05d}-of-00003.tfrecord"
                                                           for k in range(3)]
    x, y = data.load_split(out, "train")
    assert x.shape == (231, 8, 10, 3) and np.bincount(y).tolist() == [77, 77, 77]
    assert (x[..., 0] == (y * 80 + 10)[:, None, None]).all()  # every image carries its own class


def test_labels_and_images_at_indices_are_streamed_consistently(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=40)
    out = tmp_path / "out"
    ingest.run(cfg_for(f"folder:{root}", workers=1, shard_size=25), out)
    labels = data.read_labels(out, "train")
    assert labels.dtype == np.int64 and len(labels) == 78 and np.bincount(labels).tolist() == [26, 26, 26]
    idx = np.array([77, 3, 26, 0, 51])
    images = data.take(out, "train", idx)
    assert images.shape == (5, 8, 10, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0, 0, 0], labels[idx] * 80 + 10)
    x, y = data.load_split(out, "train")
    assert sorted(map(bytes, x)) == sorted(map(bytes, data.take(out, "train", range(78))))
    with pytest.raises(PipelineError, match="no record 78"):
        data.take(out, "train", [78])


def test_webp_and_tiff_are_read_and_unread_formats_counted_by_extension(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=6)
    Image.new("RGB", (10, 8), (1, 2, 3)).save(root / "ant" / "photo.webp", "WEBP", lossless=True)
    Image.new("RGB", (10, 8), (4, 5, 6)).save(root / "bee" / "scan.tif", "TIFF")
    Image.new("RGB", (10, 8), (7, 8, 9)).save(root / "cow" / "scan2.TIFF", "TIFF")
    (root / "ant" / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "bee" / "clip.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "cow" / "notes.txt").write_text("not an image")
    (root / "cow" / "broken.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    out = tmp_path / "out"
    _, summary, _ = ingest.run(cfg_for(f"folder:{root}", workers=1, val_fraction=0.1), out)
    assert summary["train_images"] + summary["val_images"] + summary["test_images"] == 21
    report = artifacts.read_json(out / "preflight.json")
    assert report["ignored"]["by_extension"] == {".heic": 2, ".txt": 1} and report["ignored"]["count"] == 3
    assert report["skipped"]["by_extension"] == {".webp": 1}
    assert report["skipped"]["files"][0]["path"].endswith("broken.webp")
    x = np.concatenate([data.load_split(out, s)[0] for s in ("train", "val", "test")])
    pixels = {tuple(int(v) for v in im[0, 0]) for im in x}
    assert {(1, 2, 3), (4, 5, 6), (7, 8, 9)} <= pixels  # the WEBP and both TIFFs made it into the shards


def test_dedupe_while_streaming_drops_val_and_test_copies(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=20)
    for name in CLASSES:  # every image twice, under another name
        for path in sorted((root / name).glob("*.png")):
            (root / name / f"copy-{path.name}").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    _, summary, _ = ingest.run(cfg_for(f"folder:{root}", workers=2, dedupe=True), out)
    report = artifacts.read_json(out / "preflight.json")
    removed = report["dedupe"]["removed"]
    assert removed["val"] + removed["test"] > 0
    seen = set()
    for split in ("train", "val", "test"):
        x, _ = data.load_split(out, split)
        hashes = {hashlib.sha1(im.tobytes()).hexdigest() for im in x}
        if split != "train":
            assert len(hashes) == len(x)
        assert not hashes & seen
        seen |= hashes
    assert summary["val_images"] == report["splits"]["val"]["images"]


def test_failed_ingest_leaves_no_shard_behind(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=10)
    Image.new("RGB", (30, 30)).save(root / "bee" / "999-big.png")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PipelineError, match=r"images differ in size \(8x10 and 30x30: .*999-big.png\); "
                                            r"set data.image_size"):
        ingest.run(cfg_for(f"folder:{root}", workers=2), out)
    assert list(out.iterdir()) == []


def test_unreadable_class_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=5)
    (root / "dog").mkdir()
    for i in range(3):
        (root / "dog" / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"
    with pytest.raises(PipelineError,
                       match=r"no image of class 'dog' could be read \(e.g. .*dog/[012].jpg: "):
        ingest.run(cfg_for(f"folder:{root}", workers=1), out)
    assert not list(out.glob("*.tfrecord"))


def test_array_sources_stream_through_the_same_writer(tmp_path):
    out = tmp_path / "out"
    _, summary, _ = ingest.run(config.from_dict({"data": {"shard_size": 500}}), out)  # bundled digits
    assert summary["workers"] == 0
    assert summary["train_images"] + summary["val_images"] + summary["test_images"] == 1797
    assert len(data.shards(out, "train")) == 3
    x, y = data.load_split(out, "train")
    assert x.shape == (summary["train_images"], 8, 8, 1) and set(np.unique(y)) == set(range(10))


# ---------------------------------------------------------------- reading: cache modes and shuffle buffer

@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingested")
    root = make_folder(tmp / "imgs", per_class=30)
    out = tmp / "run" / "data"
    ingest.run(cfg_for(f"folder:{root}", workers=1, shard_size=20), out)
    return out


def test_auto_cache_follows_free_memory(ingested, monkeypatch):
    meta = data.read_meta(ingested)
    need = input_pipeline.split_bytes(meta)
    assert need == 240 * (meta["counts"]["train"] + meta["counts"]["val"])
    monkeypatch.setattr(input_pipeline, "free_memory", lambda: 4 * need)
    assert input_pipeline.cache_mode(meta) == "memory"
    monkeypatch.setattr(input_pipeline, "free_memory", lambda: 4 * need - 1)
    assert input_pipeline.cache_mode(meta) == "none"
    assert input_pipeline.cache_mode(meta, "disk") == "disk"


def test_shuffle_buffer_is_sized_in_bytes(ingested):
    meta = data.read_meta(ingested)
    assert input_pipeline.shuffle_size(meta, shuffle_bytes=240 * 10) == 10
    assert input_pipeline.shuffle_size(meta, shuffle_bytes=1) == 1
    assert input_pipeline.shuffle_size(meta) == meta["counts"]["train"]  # 128 MiB holds the whole tiny split
    assert input_pipeline.shuffle_size(meta, shuffle_buffer=7) == 7


@pytest.mark.parametrize("mode", ["none", "memory", "disk"])
def test_every_cache_mode_yields_the_same_epoch(ingested, mode, tmp_path):
    meta = data.read_meta(ingested)
    ds = input_pipeline.train_dataset(ingested, meta, 16, seed=3, cache=mode, cache_dir=tmp_path / "cache")
    epochs = []
    for _ in range(2):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        epochs.append((np.concatenate(xs), np.concatenate(ys)))
    x, y = epochs[0]
    assert x.shape == (meta["counts"]["train"], 8, 10, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y.argmax(1) * 80 + 10, x[:, 0, 0, 0])
    reference = data.load_split(ingested, "train", meta)[0]
    assert sorted(map(bytes, x.astype(np.uint8))) == sorted(map(bytes, reference))
    assert not np.array_equal(epochs[0][0], epochs[1][0])  # reshuffled each epoch
    if mode == "disk":
        assert list((tmp_path / "cache").glob("train*"))
    val = input_pipeline.eval_dataset(ingested, meta, "val", 8, cache=mode, cache_dir=tmp_path / "cache")
    assert sum(int(b[1].shape[0]) for b in val) == meta["counts"]["val"]
