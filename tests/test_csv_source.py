"""csv:<file>: the format (header optional, quoted fields, relative paths), the same splits as a folder source
and an IDX source for the same images, the source identity, and every bad CSV as one line naming the row."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from pipeline import config, ingest, sources
from pipeline.errors import PipelineError

NAMES = ["ant", "bee", "cow"]


def data_cfg(**kw):
    return config.from_dict({"data": kw}).data


def gray_images(n=60, seed=0):
    """n distinct 9x7 grayscale images and labels 0..2 in an interleaved order."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 9, 7), dtype=np.uint8)
    labels = (np.arange(n) * 7) % 3
    return images, labels


def write_idx(root, images, labels):
    root.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", labels)):
        array = np.asarray(array, np.uint8)
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(root / name, "wb") as fh:
            fh.write(header + array.tobytes())
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root


def write_folder(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / NAMES[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def write_csv(path, rows, header="path,label"):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (header + "\n" if header else "") + "".join(f"{p},{label}\n" for p, label in rows)
    path.write_text(text)
    return path


def shard_digests(out) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tfrecord"))}


def test_csv_folder_and_idx_give_identical_splits(tmp_path):
    images, labels = gray_images()
    folder = write_folder(tmp_path / "folder", images, labels)
    idx = write_idx(tmp_path / "idx", images, labels)
    rows = sorted(((f"{NAMES[y]}/{i:04d}.png", NAMES[y]) for i, y in enumerate(labels)), reverse=True)
    csv = write_csv(folder / "labels.csv", rows)  # any row order: the split follows class, then path
    digests = {}
    for source in (f"folder:{folder}", f"idx:{idx}", f"csv:{csv}"):
        cfg = config.from_dict({"data": {"source": source, "seed": 5, "workers": 1}})
        out = tmp_path / source.split(":")[0]
        _, summary, _ = ingest.run(cfg, out)
        assert (summary["train_images"], summary["val_images"], summary["test_images"]) == (42, 6, 12)
        digests[source.split(":")[0]] = shard_digests(out)
        assert (out / "classes.json").read_text().count('"ant"') == 1
    assert len(digests["folder"]) == 3
    assert digests["folder"] == digests["idx"] == digests["csv"]


def test_csv_format_header_optional_quotes_and_order(tmp_path):
    images, labels = gray_images(12)
    root = write_folder(tmp_path / "d", images, labels)
    (root / "odd, name.png").write_bytes((root / "ant" / "0000.png").read_bytes())
    rows = [(f"{NAMES[y]}/{i:04d}.png", NAMES[y]) for i, y in enumerate(labels)]
    lines = ["label,path", *[f"{label},{path}" for path, label in rows], '"ant","odd, name.png"', ""]
    (root / "x.csv").write_text("\ufeff" + "\n".join(lines))
    src = sources.load(data_cfg(source=f"csv:{root / 'x.csv'}"))
    paths, y = src.splits["all"]
    assert src.files and src.class_names == NAMES and len(paths) == 13
    assert list(np.bincount(y)) == [5, 4, 4]
    assert paths[0].endswith("ant/0000.png") and paths[4].endswith("odd, name.png")  # class, then path
    no_header = write_csv(root / "plain.csv", rows, header="")
    assert len(sources.load(data_cfg(source=f"csv:{no_header}")).splits["all"][1]) == 12


def test_integer_labels_sort_numerically(tmp_path):
    images, labels = gray_images(12)
    root = write_folder(tmp_path / "d", images, labels)
    rows = [(f"{NAMES[y]}/{i:04d}.png", ["2", "10", "9"][y]) for i, y in enumerate(labels)]
    src = sources.load(data_cfg(source=f"csv:{write_csv(root / 'n.csv', rows)}"))
    assert src.class_names == ["2", "9", "10"]


def test_identity_covers_the_csv_and_the_files_it_lists(tmp_path):
    images, labels = gray_images(12)
    root = write_folder(tmp_path / "d", images, labels)
    rows = [(f"{NAMES[y]}/{i:04d}.png", NAMES[y]) for i, y in enumerate(labels)]
    csv = write_csv(root / "l.csv", rows)
    cfg = data_cfg(source=f"csv:{csv}")
    first = sources.identity(cfg)
    assert sources.identity(cfg) == first
    (root / "extra.png").write_bytes(b"not listed")  # a file the CSV does not list changes nothing
    assert sources.identity(cfg) == first
    Image.new("L", (3, 3)).save(root / "ant" / "0000.png")  # a listed file changes
    second = sources.identity(cfg)
    assert second != first
    write_csv(csv, rows[:-1])
    assert sources.identity(cfg) != second
    write_csv(csv, [("nope.png", "ant")])  # identity never fails: ingest reports the problem
    assert sources.identity(cfg)["source"]["files"]


# ---------------------------------------------------------------- bad CSV files: one line naming the row

BAD = [
    ("missing.csv", None, "no such file"),
    ("rows.csv", "path,label\nant/0000.png,ant\nant/nope.png,ant\n", "row 3: ant/nope.png: no such file"),
    ("cols.csv", "path,label,split\nant/0000.png,ant,train\n", "row 1: unknown column 'split'"),
    ("half.csv", "path\nant/0000.png\n", "row 1: the header names path; expected path,label"),
    ("three.csv", "ant/0000.png,ant\nbee/0001.png,bee,extra\n", "row 2: 3 column(s), expected 2"),
    ("one.csv", "ant/0000.png,ant\nbee/0001.png\n", "row 2: 1 column(s), expected 2"),
    ("nolabel.csv", "ant/0000.png,ant\nbee/0001.png,\n", "row 2: empty label"),
    ("nopath.csv", "ant/0000.png,ant\n,bee\n", "row 2: empty path"),
    ("twice.csv", "ant/0000.png,ant\nbee/0001.png,bee\n./ant/0000.png,bee\n",
     "row 3: ./ant/0000.png is already listed in row 1"),
    ("dir.csv", "ant/0000.png,ant\nbee,bee\n", "row 2: bee: not a file"),
    ("newline.csv", 'ant/0000.png,ant\nbee/0001.png,"be\ne"\n', "row 3: label 'be\\ne' holds a line break"),
    ("single.csv", "ant/0000.png,ant\nant/0003.png,ant\n", "needs at least 2 labels, found 1 (ant)"),
    ("latin1.csv", b"ant/0000.png,ant\nbee/0001.png,caf\xe9\n", "row 2: not UTF-8 text (byte 0xe9)"),
]


@pytest.mark.parametrize("name, content, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_csv_is_one_line_naming_the_row(workdir, name, content, needle):
    images, labels = gray_images(12)
    write_folder(workdir / "d", images, labels)
    path = workdir / "d" / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = invoke(["ingest", "--run", "bad", "--set", f"data.source=csv:d/{name}"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"csv:d/{name}" in errors[0] and needle in errors[0], errors[0]
    data_dir = workdir / "runs" / "bad" / "data"
    assert not (data_dir / "manifest.json").exists() and not list(data_dir.glob("*.tfrecord"))
    assert len(list((workdir / "d").rglob("*.png"))) == 12  # the user's files are untouched


def test_csv_errors_from_the_library(tmp_path):
    with pytest.raises(PipelineError, match="not a file"):
        sources.load(data_cfg(source=f"csv:{tmp_path}"))
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"csv: needs an argument, e.g. csv:<file>"):
        sources.load(data_cfg(source="csv:"))
