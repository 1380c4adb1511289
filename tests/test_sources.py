"""Data sources: tfds: (through tfds.testing.mock_data), idx: (gz and raw files written here) and folder:
(JPEG, PNG, BMP, GIF, grayscale, RGBA, broken files, empty class), seeded splits and every bad input."""
from __future__ import annotations

import gzip
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from pipeline import config, sources
from pipeline.errors import PipelineError
from pipeline.sources import SourceUnavailable


def data_cfg(**kw):
    return config.from_dict({"data": kw}).data


# ---------------------------------------------------------------- idx:

def write_idx(path, array: np.ndarray, gz: bool):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def make_idx_dir(root, gz=True, test=True, n=30):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    splits = {"train": n, "t10k": n // 3} if test else {"train": n}
    for prefix, count in splits.items():
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (count, 6, 5)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(count) % 3, gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_idx_gz_and_raw(tmp_path, gz):
    root = make_idx_dir(tmp_path / "mnistlike", gz=gz)
    data = sources.load(data_cfg(source=f"idx:{root}"))
    x, y = data.splits["train"]
    assert x.shape == (30, 6, 5, 1) and x.dtype == np.uint8 and y.dtype == np.int64
    assert data.splits["test"][0].shape == (10, 6, 5, 1)
    assert list(y[:4]) == [0, 1, 2, 0]
    assert data.class_names == ["0", "1", "2"]
    assert len(data.input_files) == 4 and all(p.exists() for p in data.input_files)


def test_idx_conformed_to_channels_and_size(tmp_path):
    root = make_idx_dir(tmp_path / "d")
    data = sources.load(data_cfg(source=f"idx:{root}", channels=3, image_size=[12, 10]))
    assert data.splits["train"][0].shape == (30, 12, 10, 3)


def test_idx_class_names_file_and_fashion_names(tmp_path):
    root = make_idx_dir(tmp_path / "fashion-mnist")
    names = sources.load(data_cfg(source=f"idx:{root}")).class_names
    assert names[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    (root / "classes.txt").write_text("zero\none\ntwo\n")
    assert sources.load(data_cfg(source=f"idx:{root}")).class_names == ["zero", "one", "two"]
    (root / "classes.txt").write_text("zero\n")
    with pytest.raises(PipelineError, match="classes.txt: lists 1 class names"):
        sources.load(data_cfg(source=f"idx:{root}"))


def test_idx_class_names_follow_the_class_name_rules(tmp_path):
    root = make_idx_dir(tmp_path / "d")
    (root / "classes.txt").write_text("zero\n😀 one\ntw\to\n")
    with pytest.raises(PipelineError, match=r"classes.txt: line 3: class name 'tw\\to' holds a line break or "
                                            "control character"):
        sources.load(data_cfg(source=f"idx:{root}"))
    (root / "classes.txt").write_text('zero\n😀 one\nsay "two"\n')
    assert sources.load(data_cfg(source=f"idx:{root}")).class_names == ["zero", "😀 one", 'say "two"']


def test_idx_without_test_pair_is_carved_later(tmp_path):
    root = make_idx_dir(tmp_path / "d", test=False)
    data = sources.load(data_cfg(source=f"idx:{root}"))
    assert list(data.splits) == ["train"] and "carved" in data.notes[0]


def test_idx_bad_inputs(tmp_path):
    with pytest.raises(PipelineError, match="no such directory"):
        sources.load(data_cfg(source=f"idx:{tmp_path / 'nope'}"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match="not a directory"):
        sources.load(data_cfg(source=f"idx:{tmp_path / 'file'}"))
    root = make_idx_dir(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(PipelineError, match=r"t10k-labels-idx1-ubyte\[.gz\]: missing IDX file"):
        sources.load(data_cfg(source=f"idx:{root}"))
    root = make_idx_dir(tmp_path / "e", gz=False)
    (root / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(PipelineError, match="not an IDX file"):
        sources.load(data_cfg(source=f"idx:{root}"))
    root = make_idx_dir(tmp_path / "f", gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(PipelineError, match="truncated"):
        sources.load(data_cfg(source=f"idx:{root}"))
    root = make_idx_dir(tmp_path / "g", gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(29), gz=False)
    with pytest.raises(PipelineError, match="30 images but .* 29 labels"):
        sources.load(data_cfg(source=f"idx:{root}"))
    root = make_idx_dir(tmp_path / "h", gz=True)
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(PipelineError, match="cannot read"):
        sources.load(data_cfg(source=f"idx:{root}"))


# ---------------------------------------------------------------- tfds:

@pytest.fixture(scope="module")
def tfds_metadata(tmp_path_factory):
    """dataset_info.json for fashion_mnist with train/validation/test/extra splits: a 'prepared' copy
    whose examples tfds.testing.mock_data generates (no download, no network)."""
    import tensorflow_datasets as tfds

    from pipeline.sources.tfds import _builder

    root = tmp_path_factory.mktemp("tfds")
    builder = _builder("fashion_mnist", str(root))  # TFDS's own leaves an empty folder in /tmp each time
    builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(name=s, shard_lengths=[8], num_bytes=0)
                                                 for s in ("train", "validation", "test", "extra")]))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
    return root


def test_tfds_through_mock_data(tfds_metadata):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8, data_dir=str(tfds_metadata),
                                policy=tfds.testing.MockPolicy.USE_FILES):
        data = sources.load(data_cfg(source="tfds:fashion_mnist", channels=3, image_size=[16, 16]))
    assert set(data.splits) == {"train", "val", "test"}  # 'validation' renamed, 'extra' left out
    x, y = data.splits["val"]
    assert x.shape == (8, 16, 16, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    assert any("extra" in note for note in data.notes)


def test_tfds_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    from pipeline.sources import tfds as tfds_source

    monkeypatch.setattr(tfds_source, "_reachable", lambda *a, **k: False)
    temp = tmp_path / "temp"  # temporary files go here: TFDS leaves an empty folder unless kept in ours
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    start = time.time()
    with pytest.raises(SourceUnavailable) as err:
        tfds_source.load_tfds("mnist", data_cfg(tfds_dir=str(tmp_path / "tfds")))
    assert time.time() - start < 10
    assert list(temp.iterdir()) == [] and tempfile.gettempdir() == str(temp)
    message = str(err.value)
    assert "\n" not in message and "tfds build mnist" in message and "data.fallback" in message
    with pytest.raises(PipelineError, match="tfds build mnist"):  # no fallback: the same line, as an error
        sources.load(data_cfg(source="tfds:mnist", tfds_dir=str(tmp_path)))


def test_tfds_offline_uses_fallback(tmp_path, monkeypatch):
    from pipeline.sources import tfds as tfds_source

    monkeypatch.setattr(tfds_source, "_reachable", lambda *a, **k: False)
    root = make_idx_dir(tmp_path / "idx")
    cfg = data_cfg(source="tfds:mnist", tfds_dir=str(tmp_path / "tfds"), fallback=f"idx:{root}")
    data = sources.load(cfg)
    assert data.splits["train"][0].shape == (30, 6, 5, 1)
    assert any("used fallback" in note for note in data.notes)


def test_tfds_probe_is_quick_when_nothing_listens():
    from pipeline.sources.tfds import _reachable

    start = time.time()
    assert _reachable(("127.0.0.1", 9), timeout=1.0) is False
    assert time.time() - start < 3


def test_tfds_bad_names(tmp_path):
    with pytest.raises(PipelineError, match="no such TFDS dataset"):
        sources.load(data_cfg(source="tfds:no_such_dataset_xyz", tfds_dir=str(tmp_path)))
    with pytest.raises(PipelineError, match="not an image-classification dataset"):
        sources.load(data_cfg(source="tfds:imdb_reviews", tfds_dir=str(tmp_path)))


# ---------------------------------------------------------------- folder:

def _save(path, mode, size, color, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)


@pytest.fixture
def image_folder(tmp_path):
    """cat/dog classes in every format and mode, three broken files, an empty class and a stray text file."""
    root = tmp_path / "pets"
    _save(root / "cat" / "a.jpg", "RGB", (20, 16), (200, 30, 30), "JPEG")
    _save(root / "cat" / "b.png", "RGBA", (20, 16), (10, 200, 10, 128), "PNG")
    _save(root / "cat" / "c.png", "L", (20, 16), 90, "PNG")
    _save(root / "cat" / "sub" / "d.BMP", "RGB", (20, 16), (1, 2, 3), "BMP")
    _save(root / "dog" / "e.gif", "P", (20, 16), 5, "GIF")
    _save(root / "dog" / "f.jpeg", "L", (20, 16), 250, "JPEG")
    _save(root / "dog" / "g.png", "RGB", (20, 16), (0, 0, 255), "PNG")
    (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (root / "dog" / "zero.png").write_bytes(b"")
    (root / "cat" / "text.png").write_text("this is not a PNG\n")
    (root / "cat" / "README.txt").write_text("ignored")
    (root / "bird").mkdir()
    return root


def ingest_folder(root, out, **keys):
    """Run the ingest stage's work on a folder; (classes.json, preflight.json, {split: (x, y)})."""
    from pipeline import artifacts, data, ingest

    cfg = config.from_dict({"data": {"source": f"folder:{root}", "workers": 1, **keys}})
    ingest.run(cfg, out)
    splits = {name: data.load_split(out, name) for name in data.SPLITS}
    return artifacts.read_json(out / "classes.json"), artifacts.read_json(out / "preflight.json"), splits


def test_folder_lists_files_without_decoding(image_folder):
    data = sources.load(data_cfg(source=f"folder:{image_folder}", channels=3, image_size=[8, 10]))
    paths, y = data.splits["all"]
    assert data.files and paths.dtype == object and y.dtype == np.int64
    assert data.class_names == ["cat", "dog"]  # the empty 'bird' folder is left out ...
    assert any("'bird'" in note for note in data.notes)  # ... with a note
    names = [p.rsplit("/", 1)[1] for p in paths]
    # class, then path component by component (cat/sub/d.BMP before cat/text.png)
    assert names == ["a.jpg", "b.png", "c.png", "d.BMP", "text.png", "corrupt.jpg", "e.gif", "f.jpeg",
                     "g.png", "zero.png"]
    assert list(y) == [0] * 5 + [1] * 5
    assert data.ignored["by_extension"] == {".txt": 1} and data.input_files == []


def test_folder_formats_broken_files_and_empty_class(image_folder, tmp_path):
    meta, report, splits = ingest_folder(image_folder, tmp_path / "out", channels=3, image_size=[8, 10],
                                         val_fraction=0.2, test_fraction=0.2)
    x = np.concatenate([splits[s][0] for s in splits])
    y = np.concatenate([splits[s][1] for s in splits])
    assert x.shape == (7, 8, 10, 3) and x.dtype == np.uint8
    assert meta["class_names"] == ["cat", "dog"] and list(np.bincount(y)) == [4, 3]
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]["files"]}
    assert set(skipped) == {"corrupt.jpg", "zero.png", "text.png"}
    assert all(skipped.values()) and "0 bytes" in skipped["zero.png"]
    assert report["skipped"]["by_extension"] == {".jpg": 1, ".png": 2}
    assert report["ignored"]["by_extension"] == {".txt": 1}


def test_folder_grayscale_output_and_pad_policy(image_folder, tmp_path):
    _, _, splits = ingest_folder(image_folder, tmp_path / "out", channels=1, image_size=[20, 20],
                                 resize="pad", val_fraction=0.2, test_fraction=0.2)
    x = np.concatenate([splits[s][0] for s in splits])
    assert x.shape == (7, 20, 20, 1)
    assert x[:, :2].max() == 0  # letterboxed: 16 -> 20 rows padded with black


def test_folder_split_layout(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        for cls, value in (("a", 10), ("b", 200)):
            for i in range(n):
                _save(root / split / cls / f"{i}.png", "L", (6, 6), value + i, "PNG")
    data = sources.load(data_cfg(source=f"folder:{root}"))
    assert {k: len(v[1]) for k, v in data.splits.items()} == {"train": 6, "val": 2, "test": 4}
    assert data.class_names == ["a", "b"]
    meta, _, splits = ingest_folder(root, tmp_path / "out")
    assert meta["counts"] == {"train": 6, "val": 2, "test": 4}
    assert sorted(int(v) for v in splits["test"][0][:, 0, 0, 0]) == [10, 11, 200, 201]  # the user's test/


def test_folder_bad_inputs(tmp_path, image_folder):
    def load(path, **kw):
        return sources.load(data_cfg(source=f"folder:{path}", **kw))

    with pytest.raises(PipelineError, match="no such directory"):
        load(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PipelineError, match="not a directory"):
        load(tmp_path / "afile")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no class subfolders"):
        load(tmp_path / "empty")
    _save(tmp_path / "one" / "only" / "x.png", "L", (4, 4), 1, "PNG")
    with pytest.raises(PipelineError, match=r"at least 2 class folders .* found 1 \(only\)"):
        load(tmp_path / "one")
    _save(tmp_path / "sp" / "train" / "a" / "x.png", "L", (4, 4), 1, "PNG")
    _save(tmp_path / "sp" / "train" / "b" / "x.png", "L", (4, 4), 2, "PNG")
    _save(tmp_path / "sp" / "test" / "c" / "x.png", "L", (4, 4), 3, "PNG")
    with pytest.raises(PipelineError, match="c have images in val/test but none in train"):
        load(tmp_path / "sp")
    with pytest.raises(PipelineError, match="has test/ but no train/"):
        _save(tmp_path / "nt" / "test" / "a" / "x.png", "L", (4, 4), 3, "PNG")
        load(tmp_path / "nt")
    with pytest.raises(PipelineError, match=r"images differ in size \(16x20 and 30x30: .*big.png\); "
                                            "set data.image_size"):
        _save(image_folder / "dog" / "big.png", "L", (30, 30), 1, "PNG")
        ingest_folder(image_folder, tmp_path / "out", val_fraction=0.2, test_fraction=0.2)
    assert not list((tmp_path / "out").glob("*.tfrecord"))


# ---------------------------------------------------------------- splits

def test_same_seed_same_splits():
    from pipeline.data import make_splits

    rng = np.random.default_rng(1)
    pool = {"all": (rng.integers(0, 256, (120, 4, 4, 1), dtype=np.uint8), np.arange(120) % 4)}
    a = make_splits(pool, data_cfg(seed=7))
    b = make_splits(pool, data_cfg(seed=7))
    c = make_splits(pool, data_cfg(seed=8))
    for name in ("train", "val", "test"):
        assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1])
        assert np.bincount(a[name][1]).min() > 0  # stratified: every class in every split
    assert not np.array_equal(a["test"][0], c["test"][0])


def test_sixteen_bit_png_keeps_its_range_and_exif_rotation_applies(tmp_path):
    from PIL import Image

    from pipeline import imaging

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    out = imaging.decode_file(tmp_path / "deep.png", 1)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 1)
    np.testing.assert_array_equal(out[..., 0], (ramp >> 8).astype(np.uint8))

    tall = np.zeros((6, 4, 3), np.uint8)
    tall[0, :, 0] = 255  # a red top row
    img = Image.fromarray(tall)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = imaging.decode_file(tmp_path / "phone.jpg", 3)
    assert shown.shape == (4, 6, 3)  # upright: width and height swapped
