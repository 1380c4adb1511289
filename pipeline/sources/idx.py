"""``idx:<dir>``: MNIST-format IDX files, gzipped or raw (MNIST, Fashion-MNIST, KMNIST, ...).

The directory holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` and, optionally, the test pair
``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``; each may end in ``.gz`` (the spelling
``train-images.idx3-ubyte`` is accepted too). Without the test pair the pipeline carves a test split out of
train.

Class names, in order of preference:

1. ``classes.txt`` (or ``labels.txt``) in the directory, one name per line;
2. the ten Fashion-MNIST names when the directory path contains ``fashion`` (e.g. the Debian package
   ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``);
3. the label numbers ``"0"``, ``"1"``, ...
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, check_class_name, source_path

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NAME_FILES = ("classes.txt", "labels.txt")
# IDX type byte -> numpy dtype (big-endian as stored)
DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _find(root: Path, prefix: str, kind: str) -> Path | None:
    """The file for e.g. ('train', 'images', 'idx3'): raw or .gz, dash or dot spelling."""
    for stem in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}-ubyte".replace("-idx", ".idx")):
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise PipelineError(f"{path}: cannot read: {exc}") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file into an array with ``ndim`` dimensions, checking the magic number and size."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES:
        raise PipelineError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[3] != ndim:
        raise PipelineError(f"{path}: expected {ndim} dimension(s), the header says {raw[3]}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise PipelineError(f"{path}: truncated header")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = DTYPES[raw[2]]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise PipelineError(f"{path}: {what}: {len(raw)} bytes, the header {dims} needs {expected}")
    # astype copies into a writable, native-byte-order array
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _as_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    if images.min() < 0 or images.max() > 255:
        raise PipelineError(f"{path}: pixel values outside 0..255 ({images.dtype}); convert to uint8 first")
    return images.astype(np.uint8)


def _read_pair(root: Path, prefix: str, required: bool):
    """(images [N, H, W], labels [N], files) of one split, or None when an optional pair is absent."""
    img_path, lab_path = _find(root, prefix, "images-idx3"), _find(root, prefix, "labels-idx1")
    if img_path is None and lab_path is None and not required:
        return None
    for path, kind in ((img_path, "images-idx3"), (lab_path, "labels-idx1")):
        if path is None:
            raise PipelineError(f"{root / f'{prefix}-{kind}-ubyte'}[.gz]: missing IDX file")
    images = _as_uint8(read_idx(img_path, 3), img_path)
    labels = read_idx(lab_path, 1)
    if len(images) != len(labels):
        raise PipelineError(f"{img_path} holds {len(images)} images but {lab_path} holds "
                            f"{len(labels)} labels")
    if len(labels) and labels.min() < 0:
        raise PipelineError(f"{lab_path}: negative label {int(labels.min())}")
    return images, labels.astype(np.int64), [img_path, lab_path]


def class_names_for(root: Path, num_labels: int) -> list:
    """Names from classes.txt/labels.txt, the Fashion-MNIST names for a 'fashion' folder, else numbers."""
    for name in NAME_FILES:
        path = root / name
        if path.is_file():
            names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            for i, name in enumerate(names):
                check_class_name(name, f"{path}: line {i + 1}")
            if len(names) < num_labels:
                raise PipelineError(f"{path}: lists {len(names)} class names but the labels go up to "
                                    f"{num_labels - 1}")
            return names
    if "fashion" in str(root).lower() and num_labels <= len(FASHION_MNIST_CLASSES):
        return list(FASHION_MNIST_CLASSES)
    return [str(i) for i in range(num_labels)]


def load_idx(arg: str, data_cfg) -> SourceData:
    """Read the train (and test, when present) IDX pairs under ``arg``, conformed to the data config."""
    from pipeline.imaging import conform

    root = source_path(arg)
    if not root.exists():
        raise PipelineError(f"data.source idx:{root}: no such directory")
    if not root.is_dir():
        raise PipelineError(f"data.source idx:{root}: not a directory")
    pairs = {"train": _read_pair(root, "train", True), "test": _read_pair(root, "t10k", False)}
    pairs = {k: v for k, v in pairs.items() if v is not None}
    shapes = {k: v[0].shape[1:] for k, v in pairs.items()}
    if len(set(shapes.values())) > 1:
        raise PipelineError(f"{root}: train and test images differ in size "
                            f"({shapes['train']} vs {shapes['test']})")
    all_labels = np.concatenate([v[1] for v in pairs.values()])
    num_labels = int(all_labels.max()) + 1 if len(all_labels) else 0
    if num_labels < 2:
        raise PipelineError(f"{root}: the IDX labels hold fewer than 2 classes")
    names = class_names_for(root, num_labels)
    splits = {k: (conform(x, data_cfg.channels, data_cfg.image_size, data_cfg.resize), y)
              for k, (x, y, _) in pairs.items()}
    files = [f for v in pairs.values() for f in v[2]]
    notes = [] if "test" in pairs else [f"{root}: no t10k-* files; the test split is carved out of train"]
    counts = ", ".join(f"{len(v[1]):,} {k}" for k, v in pairs.items())
    return SourceData(splits=splits, class_names=names, origin=f"IDX files in {root} ({counts})",
                      input_files=files, notes=notes)
