"""The ingest stage's work: list the source, split it, then stream every image once: decode (image files in
``data.workers`` processes), check (preflight: duplicates by hash, class counts, pixel statistics) and append
to the split's shards.

Memory is bounded by the chunks in flight (a few MiB per worker), not by the dataset: the listing holds paths
and labels, preflight one hash and one label per image. Chunks are consumed in submission order, so the shards
are byte-identical for the same input and seed whatever the number of workers. Sources that are arrays already
(digits, idx, tfds) stream through the same writer in chunks, without worker processes.
"""
from __future__ import annotations

import collections
import os
import resource
import time
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError

CHUNK_BYTES = 4 << 20      # decoded pixels per chunk handed to a worker
IN_FLIGHT_PER_WORKER = 2   # chunks queued per worker: keeps them busy, bounds memory


def _decode_chunk(paths: list, opts) -> tuple[list, float]:
    """In a worker: ([(image or None, reason, sha1)] for each file, in order; the worker's peak memory)."""
    from pipeline.preflight import digest
    from pipeline.sources.folder import decode

    out = []
    for path in paths:
        image, reason = decode(path, opts)
        out.append((image, reason, digest(image) if image is not None else ""))
    return out, _own_peak_mb()


def _own_peak_mb() -> float:
    """This process's peak resident memory in MiB. VmHWM, not ru_maxrss: a spawned process inherits its
    parent's ru_maxrss on Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chunk_size(item_bytes: int | None) -> int:
    """Items per chunk: about CHUNK_BYTES of decoded pixels; 8 when the size is unknown (images kept as
    they are, which may be large photos)."""
    if not item_bytes:
        return 8
    return int(np.clip(CHUNK_BYTES // item_bytes, 8, 1024))


def _jobs(plan: dict, chunk: int):
    for name, index in plan.items():
        for start in range(0, len(index), chunk):
            yield name, index[start:start + chunk]


def _array_stream(src, plan: dict):
    """(split, indices, results) for sources held in memory: gathered and hashed chunk by chunk."""
    from pipeline import data
    from pipeline.preflight import digest

    first = next(iter(src.splits.values()))[0]
    for name, index in _jobs(plan, _chunk_size(int(np.prod(first.shape[1:])) or 1)):
        images = data.gather(src.splits, index)
        yield name, index, [(image, "", digest(image)) for image in images]


def _done(job, worker_peak: list):
    name, index, future = job
    results, peak = future.result()
    worker_peak[0] = max(worker_peak[0], peak)
    return name, index, results


def _file_stream(src, plan: dict, data_cfg, workers: int, worker_peak: list):
    """(split, indices, results) for image files: decoded by ``workers`` processes, results in order;
    ``worker_peak[0]`` follows the largest peak memory a worker reported."""
    from pipeline import data

    opts = types.SimpleNamespace(channels=data_cfg.channels, image_size=list(data_cfg.image_size),
                                 resize=data_cfg.resize)
    item = int(np.prod(data_cfg.image_size)) * data_cfg.channels if data_cfg.image_size else None
    jobs = ((name, index, list(data.gather(src.splits, index)))
            for name, index in _jobs(plan, _chunk_size(item)))
    if workers <= 1:
        for name, index, paths in jobs:
            yield name, index, _decode_chunk(paths, opts)[0]
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = collections.deque()
        try:
            for name, index, paths in jobs:
                pending.append((name, index, pool.submit(_decode_chunk, paths, opts)))
                if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                    yield _done(pending.popleft(), worker_peak)
            while pending:
                yield _done(pending.popleft(), worker_peak)
        finally:
            for _, _, future in pending:
                future.cancel()


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the system has one): data.workers: 0."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_seconds(who) -> float:
    usage = resource.getrusage(who)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _clear(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in [out / "classes.json", out / "preflight.json", *out.glob("*.tfrecord"),
                *out.glob(".*.tfrecord.tmp")]:
        old.unlink(missing_ok=True)


def _path_of(src, index: int) -> str:
    from pipeline import data

    return str(data.gather(src.splits, np.asarray([index]))[0])


class _Writer:
    """The shards of every split, preflight and the checks that need the decoded images."""

    def __init__(self, src, labels: np.ndarray, out: Path, data_cfg, planned: dict):
        from pipeline import data, preflight

        self.planned = planned  # split -> number of items the split was given

        self.src, self.labels, self.data_cfg = src, labels, data_cfg
        self.checker = preflight.Checker(src.class_names, data_cfg.dedupe)
        self.shards = {name: data.ShardWriter(out, name, data_cfg.shard_size) for name in data.SPLITS}
        self.skipped = list(src.skipped)
        self.first_skip: dict = {}  # label -> the first unreadable file of that class
        self.shape = None
        self.task = src.task
        self.targets = {k: (v, None) for k, v in (src.targets or {}).items()}
        self.target_counts = {name: np.zeros(len(src.class_names), np.int64) for name in data.SPLITS}
        self.max_objects, self.background_only = 0, {name: 0 for name in data.SPLITS}

    def _target(self, gi, image: np.ndarray, name: str):
        """The record's objects or mask, checked against its image and counted per class."""
        from pipeline import data

        if self.task == "classify":
            return None
        target = data.gather(self.targets, np.asarray([gi]))[0]
        k = len(self.src.class_names)
        if self.task == "detect":
            target = np.asarray(target, np.float32).reshape(-1, 5)
            classes = target[:, 0].astype(np.int64)
            self.max_objects = max(self.max_objects, len(target))
            self.background_only[name] += int(len(target) == 0)
        else:
            target = np.asarray(target, np.uint8)
            if target.shape != image.shape[:2]:
                raise PipelineError(f"data.source {self.data_cfg.source}: the mask of "
                                    f"{_path_of(self.src, gi)} is {target.shape[1]}x{target.shape[0]}, "
                                    f"its image {image.shape[1]}x{image.shape[0]}")
            classes = target.ravel()
            self.background_only[name] += int(not (classes > 0).any())
        if len(classes) and (classes.min() < 0 or classes.max() >= k):
            raise PipelineError(f"data.source {self.data_cfg.source}: {_path_of(self.src, gi)} holds class "
                                f"{int(classes.max() if classes.max() >= k else classes.min())}, "
                                f"outside the {k} classes")
        self.target_counts[name] += np.bincount(classes, minlength=k)[:k]
        return target

    def add(self, name: str, index: np.ndarray, results: list) -> None:
        kept = []
        for gi, (image, reason, digest) in zip(index, results):
            if image is None:
                self.skipped.append({"path": _path_of(self.src, gi), "reason": reason})
                self.first_skip.setdefault(int(self.labels[gi]), self.skipped[-1])
                continue
            if self.shape is None:
                self.shape = image.shape
            elif image.shape != self.shape:
                raise PipelineError(
                    f"data.source {self.data_cfg.source}: images differ in size "
                    f"({self.shape[0]}x{self.shape[1]} "
                    f"and {image.shape[0]}x{image.shape[1]}: {_path_of(self.src, gi)}); "
                    "set data.image_size: [height, width]")
            label = int(self.labels[gi])
            if self.checker.add(name, digest, label):
                self.shards[name].write(image, label, self._target(gi, image, name))
                if name == "train":
                    kept.append(image)
        if kept:
            self.checker.pixels(np.stack(kept))

    def finish(self) -> tuple[list, dict]:
        """Check what was written, rename the shards into place; (shard paths, preflight report)."""
        from pipeline import data

        seen = [np.asarray(v, np.int64) for v in self.checker.labels.values()] or [np.zeros(0, np.int64)]
        readable = np.bincount(np.concatenate(seen), minlength=len(self.src.class_names))
        dead = [i for i, c in enumerate(readable) if c == 0]
        if self.task != "classify":  # labels are only the dominant class: what must exist is each class's
            dead = []                # objects / pixels in the training split
            absent = [i for i, c in enumerate(self.target_counts["train"]) if c == 0]
            if absent:
                what = "object" if self.task == "detect" else "pixel"
                raise PipelineError(f"data.source {self.data_cfg.source}: the training split has no {what} "
                                    f"of class {self.src.class_names[absent[0]]!r}; the model could never "
                                    "learn it")
        if dead:
            first = self.first_skip.get(dead[0], {"path": "?", "reason": "?"})
            raise PipelineError(f"data.source {self.data_cfg.source}: no image of class "
                                f"{self.src.class_names[dead[0]]!r} could be read (e.g. {first['path']}: "
                                f"{first['reason']}); fix or remove its files")
        report = self.checker.report(self.skipped, self.src.ignored)
        for name, writer in self.shards.items():
            if writer.count == 0 and not self.checker.labels.get(name):
                raise PipelineError(data.EMPTY.format(name=name) if not self.planned[name] else
                                    f"data: the {name} split is empty: none of its {self.planned[name]} "
                                    "file(s) could be read (see the skipped files in preflight.json)")
        outputs = []
        for writer in self.shards.values():
            outputs += writer.close()
        return outputs, report

    def abort(self) -> None:
        for writer in self.shards.values():
            writer.abort()


def run(cfg, out: Path) -> tuple[list, dict, dict]:
    """Ingest ``cfg.data`` into ``out``; return (output files, summary, manifest additions)."""
    from pipeline import data, progress, sources

    import tensorflow  # noqa: F401  (the shard writer's; imported first so the rate below is the stream's)

    dc = cfg.data
    src = sources.load(dc)
    labels = np.concatenate([np.asarray(y, np.int64) for _, y in src.splits.values()])
    plan = data.split_indices({k: y for k, (_, y) in src.splits.items()}, dc, allow_empty=True)
    workers = dc.workers or cpu_count()
    _clear(out)
    writer = _Writer(src, labels, out, dc, {name: len(index) for name, index in plan.items()})
    total = sum(len(v) for v in plan.values())
    worker_peak, children_cpu = [0.0], _cpu_seconds(resource.RUSAGE_CHILDREN)
    stream = _file_stream(src, plan, dc, workers, worker_peak) if src.files else _array_stream(src, plan)
    start = time.perf_counter()
    try:
        with progress.track(total, "ingest", unit="img") as advance:
            for name, index, results in stream:
                writer.add(name, index, results)
                advance(len(index))
        outputs, report = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        if hasattr(stream, "close"):
            stream.close()
    seconds = time.perf_counter() - start
    meta = {"class_names": src.class_names, "image_shape": [int(s) for s in writer.shape],
            "counts": {k: int(v["images"]) for k, v in report["splits"].items()},
            "origin": src.origin, "resize": dc.resize, "notes": src.notes}
    if src.encoding:  # sequences and audio: how the source turned its signal into uint8 pixels
        meta["encoding"] = src.encoding
    if src.task != "classify":  # what the targets hold, per split and class (objects or pixels)
        meta["task"] = src.task
        unit = "objects" if src.task == "detect" else "pixels"
        meta["targets"] = {name: {unit: dict(zip(src.class_names, map(int, writer.target_counts[name]))),
                                  "background_only_images": writer.background_only[name]}
                           for name in data.SPLITS}
        if src.task == "detect":
            meta["max_objects"] = max(1, writer.max_objects)
    report["notes"] = src.notes
    outputs.append(artifacts.write_json(out / "classes.json", meta))
    outputs.append(artifacts.write_json(out / "preflight.json", report))
    summary = {"source": src.origin, "classes": len(src.class_names), "image_shape": meta["image_shape"],
               **{f"{k}_images": v for k, v in meta["counts"].items()}, "skipped_files": len(writer.skipped),
               **({"task": src.task} if src.task != "classify" else {}),
               "images_per_second": round(total / max(seconds, 1e-9), 1),
               "workers": workers if src.files else 0,
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "cpu_seconds": _cpu_seconds(resource.RUSAGE_SELF)}
    if src.files and workers > 1:
        summary["worker_peak_rss_mb"] = round(worker_peak[0], 1)
        summary["worker_cpu_seconds"] = round(_cpu_seconds(resource.RUSAGE_CHILDREN) - children_cpu, 2)
    return outputs, summary, {"input_files": [str(p) for p in src.input_files], "seed": dc.seed}
