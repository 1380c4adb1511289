"""Run directories, manifests, content hashes and atomic writes.

Every stage writes under ``runs/<run>/<stage>/``. Files are written to a temporary name in the same folder
and renamed, so a killed stage leaves the last good file or nothing. The stage's ``manifest.json`` is written
last: a stage without a manifest, or whose manifest fingerprint differs, is not up to date.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

STAGES = ("data", "model", "train", "eval", "export")
LIBRARIES = ("tensorflow", "keras", "numpy", "scikit-learn", "ai-edge-litert", "tensorflow-datasets")


def run_dir(root: str | Path, run: str) -> Path:
    return Path(root) / run


def stage_dir(root: str | Path, run: str, stage: str) -> Path:
    return run_dir(root, run) / stage


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; published files get the usual permissions
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    with open(path) as fh:
        return json.load(fh)


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_entry(path: Path, base: Path) -> dict:
    st = path.stat()
    return {"path": str(path.relative_to(base)) if path.is_relative_to(base) else str(path),
            "sha256": sha256_file(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(inputs: list[Path], section: dict, upstream: dict | None = None) -> str:
    """What decides whether a stage must run again: its input files' contents, its config section and the
    identities of the upstream manifests it reads (:func:`manifest_id`), as in a build system."""
    return sha256_json({"inputs": sorted(sha256_file(p) for p in inputs), "config": section,
                        "upstream": upstream or {}})


def manifest_id(manifest: dict) -> str:
    """The identity of a finished stage: its fingerprint and the content of every output. A rerun that made
    different files (a retrain) changes it, so every downstream stage becomes stale."""
    return sha256_json({"fingerprint": manifest.get("fingerprint"),
                        "outputs": [(o["path"], o["sha256"]) for o in manifest.get("outputs", [])]})


def entry_intact(entry: dict, base: Path, full: bool = False) -> bool:
    """True when the file of a manifest entry still has the recorded content. Cheap when its size and
    modification time are unchanged (unless ``full``); the sha256 decides otherwise."""
    path = base / entry["path"]
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != entry.get("bytes"):
        return False
    if not full and entry.get("mtime_ns") == st.st_mtime_ns:
        return True
    return sha256_file(path) == entry["sha256"]


def read_manifest(directory: Path) -> dict | None:
    """The stage's manifest, or None when it is missing or unreadable (the stage did not finish)."""
    try:
        data = read_json(Path(directory) / "manifest.json")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def up_to_date(directory: Path, fp: str) -> bool:
    """True when ``directory`` holds a manifest with fingerprint ``fp`` and all its outputs are intact."""
    data = read_manifest(directory)
    if data is None or data.get("fingerprint") != fp:
        return False
    return all(entry_intact(out, Path(directory)) for out in data.get("outputs", []))


def write_manifest(directory: Path, *, stage: str, fp: str, inputs: list[Path], section: dict,
                   outputs: list[Path], wall_time_s: float, extra: dict | None = None,
                   upstream: dict | None = None) -> dict:
    base = directory.parent
    manifest = {
        "stage": stage,
        "fingerprint": fp,
        "inputs": [p if isinstance(p, dict) else file_entry(Path(p), base) for p in inputs],
        "config": section,
        "upstream": upstream or {},
        "versions": library_versions(),
        "wall_time_s": round(wall_time_s, 3),
        "outputs": [file_entry(Path(p), directory) for p in outputs],
    }
    if extra:
        manifest.update(extra)
    write_json(directory / "manifest.json", manifest)
    return manifest


MARKER = ".cnnpipe-bundle"  # in every folder export publishes: the only folders publishing may replace


def is_bundle(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MARKER).is_file()


def check_publish_target(dest: Path) -> None:
    """Refuse to publish over anything cnnpipe did not make: ``dest`` must be absent or carry the marker."""
    dest = Path(dest)
    for path in (dest, dest.with_name(f".{dest.name}.old")):
        if (path.exists() or path.is_symlink()) and (path.is_symlink() or not is_bundle(path)):
            raise PipelineError(f"{path}: exists and is not a bundle cnnpipe published (no {MARKER} marker); "
                                f"refusing to replace it: choose another export.dest or --run")


def publish_dir(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by the fully written ``staging`` folder with renames, never leaving it half-written.

    Only a folder carrying the marker (one this function published before) is ever replaced or removed."""
    staging, dest = Path(staging), Path(dest)
    check_publish_target(dest)
    if not (staging / MARKER).is_file():
        write_json(staging / MARKER, {"made_by": "cnnpipe export", "bundle": dest.name})
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old")
    if old.exists() and not dest.exists():  # a previous swap was killed between its two renames
        os.replace(old, dest)
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging, dest)
    if old.exists():
        shutil.rmtree(old)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
