"""``ucr:<name>``: a UCR/UEA time-series classification dataset shipped inside an installed package, no
download.

The ``sktime`` and ``aeon`` wheels carry several archives in the UCR/UEA ``.ts`` text format under
``<package>/datasets/data/<Name>/<Name>_TRAIN.ts`` and ``_TEST.ts`` (sktime 1.2: ArrowHead, BasicMotions,
GunPoint, ItalyPowerDemand, JapaneseVowels, OSULeaf, PLAID, ACSF1). The files are read here with numpy
(neither package is imported); the name matches case-insensitively and an unknown one is a one-line error
listing the classification datasets found.

The archive's train/test split is kept (``data.val_fraction`` of train becomes validation). Multivariate
datasets give one channel per dimension. Unequal lengths (JapaneseVowels, PLAID) are brought to
``data.sequence_length`` (0: the longest) by ``data.sequence_fit`` (``pad`` or ``resample``). Class names are
the labels of the ``@classLabel`` header, in its order. Missing values (``?``) are refused.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, check_class_name

PACKAGES = ("sktime", "aeon")


def _data_dirs() -> list:
    """``<package>/datasets/data`` folders of the installed packages, without importing them."""
    out = []
    for package in PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(root) / "datasets" / "data"
            if folder.is_dir():
                out.append((package, folder))
    return out


def _is_classification(train: Path) -> bool:
    try:
        with open(train, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                low = line.strip().lower()
                if low.startswith("@classlabel"):
                    return low.split()[1:2] == ["true"]
                if low.startswith("@data"):
                    return False
    except OSError:
        return False
    return False


def available() -> dict:
    """{name: (package, folder)} of the classification datasets in the installed packages."""
    found = {}
    for package, folder in _data_dirs():
        for d in sorted(folder.iterdir()):
            train = d / f"{d.name}_TRAIN.ts"
            if d.name not in found and train.is_file() and (d / f"{d.name}_TEST.ts").is_file() \
                    and _is_classification(train):
                found[d.name] = (package, d)
    return found


def read_ts(path: Path) -> tuple[list, list, list]:
    """(sequences float [length, dimensions], label texts, class labels of the header) of one .ts file."""
    where = str(path)
    labels_decl, xs, ys, in_data = [], [], [], False
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    labels_decl = line.split()[2:]
                elif low.startswith("@timestamps") and low.split()[1:2] == ["true"]:
                    raise PipelineError(f"{where}: time-stamped series are not supported")
                elif low.startswith("@data"):
                    in_data = True
                continue
            *dims, label = line.split(":")
            if not dims:
                raise PipelineError(f"{where}: line {n}: no values before the class label")
            try:
                series = [np.array([float(v) for v in d.split(",")], np.float64) for d in dims]
            except ValueError:
                bad = "a missing value (?)" if "?" in line else "a value that is not a number"
                raise PipelineError(f"{where}: line {n}: {bad}; missing values are not supported") from None
            if len({len(s) for s in series}) > 1:
                raise PipelineError(f"{where}: line {n}: its dimensions differ in length")
            if not np.isfinite(np.concatenate(series)).all():
                raise PipelineError(f"{where}: line {n}: NaN or infinite values are not supported")
            xs.append(np.stack(series, axis=1))
            ys.append(label.strip())
    if not xs:
        raise PipelineError(f"{where}: no series after @data")
    return xs, ys, labels_decl


def load_ucr(arg: str, data_cfg) -> SourceData:
    from pipeline.sources.npz import sequence_source

    found = available()
    match = {k.lower(): k for k in found}.get(arg.strip().lower())
    if match is None:
        names = ", ".join(sorted(found)) or f"none (install {' or '.join(PACKAGES)})"
        raise PipelineError(f"data.source ucr:{arg}: unknown dataset; available offline: {names}")
    package, folder = found[match]
    where = f"data.source ucr:{match}"
    parts = {split: read_ts(folder / f"{match}_{split.upper()}.ts") for split in ("train", "test")}
    declared = parts["train"][2] or sorted({y for p in parts.values() for y in p[1]})
    names = [check_class_name(c, where) for c in declared]
    index = {c: i for i, c in enumerate(names)}
    splits = {}
    for split, (xs, ys, _) in parts.items():
        unknown = [y for y in ys if y not in index]
        if unknown:
            raise PipelineError(f"{where}: {split} label {unknown[0]!r} is not among the declared classes")
        splits[split] = (xs, np.asarray([index[y] for y in ys], np.int64))
    dims = parts["train"][0][0].shape[1]
    origin = (f"UCR/UEA {match} from the {package} package ({len(splits['train'][1])} train, "
              f"{len(splits['test'][1])} test, {dims} dimension(s))")
    return sequence_source(splits, names, data_cfg, origin, where,
                           input_files=[folder / f"{match}_TRAIN.ts", folder / f"{match}_TEST.ts"])


def identity(arg: str, data_cfg) -> dict:
    """The files' size and time: a package upgrade that changes them re-ingests."""
    found = available()
    match = {k.lower(): k for k in found}.get(arg.strip().lower())
    if match is None:
        return {"name": arg, "found": False}
    folder = found[match][1]
    files = sorted(folder.glob("*.ts"))
    return {"name": match, "package": found[match][0],
            "files": [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]}
