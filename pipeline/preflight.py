"""Preflight checks of the prepared splits, before anything is trained on them.

:class:`Checker` is fed the images one at a time while ingest streams them to the shards (:func:`run` does
the same for splits held in memory). The report holds, per split, the class counts and the imbalance ratio
(largest / smallest class); the image size and per-channel mean and standard deviation (of train); the
unreadable files the source skipped (and how many per extension); the files left out because Pillow does not
read their format, counted by extension; and exact duplicates (same pixel bytes, by SHA-1) within each split
and across splits. Duplicates are a warning; with ``dedupe`` the val and test splits lose every image whose
content appears in an earlier split (train < val < test) or earlier in the same split. Train is never changed.

:func:`table` renders the report as a few lines of plain text for the terminal.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from pipeline.errors import PipelineError

ORDER = ("train", "val", "test")
EXAMPLES = 5


def _class_counts(labels: np.ndarray, class_names: list) -> dict:
    counts = np.bincount(labels.astype(np.int64), minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}


def _split_stats(labels: np.ndarray, class_names: list) -> dict:
    counts = _class_counts(labels, class_names)
    values = list(counts.values())
    missing = [name for name, n in counts.items() if n == 0]
    ratio = round(max(values) / min(values), 3) if values and min(values) > 0 else None
    return {"images": int(len(labels)), "class_counts": counts, "imbalance_ratio": ratio,
            "missing_classes": missing}


def _duplicates(hashes: dict, labels: dict) -> dict:
    """Within-split and cross-split duplicate counts with a few examples."""
    where: dict = {}
    for split in hashes:
        for i, h in enumerate(hashes[split]):
            where.setdefault(h, []).append((split, i))
    within = {s: 0 for s in hashes}
    across: dict = {}
    examples, conflicts = [], 0
    for h, places in where.items():
        if len(places) < 2:
            continue
        splits_here = [s for s, _ in places]
        for s in set(splits_here):
            within[s] += splits_here.count(s) - 1
        present = [s for s in ORDER if s in splits_here]
        for a_i, a in enumerate(present):
            for b in present[a_i + 1:]:
                across[f"{a}/{b}"] = across.get(f"{a}/{b}", 0) + 1
        if len({int(labels[s][i]) for s, i in places}) > 1:
            conflicts += 1
        if len(examples) < EXAMPLES:
            examples.append({"sha1": h[:12], "at": [f"{s}[{i}]" for s, i in places[:6]],
                             "labels": sorted({int(labels[s][i]) for s, i in places})})
    return {"within": within, "across": across, "label_conflicts": conflicts, "examples": examples}


def _warnings(report: dict) -> list:
    out = []
    for split, stats in report["splits"].items():
        if stats["missing_classes"]:
            out.append(f"{split}: no images of {', '.join(stats['missing_classes'][:5])}")
        elif stats["imbalance_ratio"] and stats["imbalance_ratio"] > 10:
            out.append(f"{split}: classes are imbalanced (largest/smallest = {stats['imbalance_ratio']})")
    dup = report["duplicates"]
    if any(dup["across"].values()):
        pairs = ", ".join(f"{k}: {v}" for k, v in dup["across"].items())
        fix = "" if report["dedupe"]["enabled"] else " (set data.dedupe: true to drop them from val/test)"
        out.append(f"images appear in more than one split ({pairs}){fix}")
    if dup["label_conflicts"]:
        out.append(f"{dup['label_conflicts']} identical image(s) carry different labels")
    if report["skipped"]["count"]:
        out.append(f"{report['skipped']['count']} unreadable file(s) skipped")
    return out


class Checker:
    """Preflight while streaming: fed one image at a time (train first, then val, then test), it decides what
    dedupe drops, counts classes and duplicates and accumulates the train pixel statistics. Memory: one SHA-1
    and one label per image."""

    def __init__(self, class_names: list, dedupe: bool):
        self.class_names, self.dedupe = class_names, bool(dedupe)
        self.hashes: dict = {}      # split -> [sha1 of every readable image, in order]
        self.labels: dict = {}      # split -> [label of every readable image]
        self.kept: dict = {}        # split -> [label of every image written]
        self.seen: set = set()
        self.removed: dict = {}
        self._sum = self._sq = None
        self._n, self._shape, self._dtype = 0, None, "uint8"

    def add(self, split: str, digest: str, label: int) -> bool:
        """Record one image; True when it is kept (dedupe drops val/test images seen in an earlier split or
        earlier in the same split; train is never changed)."""
        self.hashes.setdefault(split, []).append(digest)
        self.labels.setdefault(split, []).append(int(label))
        self.kept.setdefault(split, [])
        if self.dedupe and split != "train":
            self.removed.setdefault(split, 0)
            if digest in self.seen:
                self.removed[split] += 1
                return False
        if self.dedupe:
            self.seen.add(digest)
        self.kept[split].append(int(label))
        return True

    def pixels(self, images: np.ndarray) -> None:
        """Accumulate per-channel sums of a block of kept training images [N, H, W, C]."""
        if not len(images):
            return
        c = images.shape[-1]
        block = images.reshape(-1, c).astype(np.float64)
        if self._sum is None:
            self._sum, self._sq = np.zeros(c), np.zeros(c)
            self._shape, self._dtype = [int(s) for s in images.shape[1:]], str(images.dtype)
        self._sum += block.sum(0)
        self._sq += (block ** 2).sum(0)
        self._n += len(block)

    def _image_stats(self) -> dict:
        n = max(self._n, 1)
        total = self._sum if self._sum is not None else np.zeros(1)
        mean = total / n
        std = np.sqrt(np.maximum((self._sq if self._sq is not None else total) / n - mean ** 2, 0))
        return {"shape": self._shape or [], "dtype": self._dtype,
                "channel_mean": [round(float(m), 3) for m in mean],
                "channel_std": [round(float(s), 3) for s in std]}

    def report(self, skipped: list, ignored: dict | None = None) -> dict:
        """The ``preflight.json`` report; raises when dedupe emptied a split."""
        if not self.hashes:
            raise PipelineError("preflight: no splits to check")
        for split, n in self.removed.items():
            if n and not self.kept.get(split):
                raise PipelineError(f"data.dedupe: every image of the {split} split duplicates an earlier "
                                    "one; the split would be empty")
        labels = {s: np.asarray(v, np.int64) for s, v in self.labels.items()}
        report = {
            "classes": len(self.class_names),
            "splits": {s: _split_stats(np.asarray(v, np.int64), self.class_names)
                       for s, v in self.kept.items()},
            "image": self._image_stats(),
            "skipped": {"count": len(skipped), "by_extension": by_extension(f["path"] for f in skipped),
                        "files": list(skipped)},
            "duplicates": _duplicates(self.hashes, labels),
            "dedupe": {"enabled": self.dedupe, "removed": dict(self.removed)},
        }
        if ignored is not None:
            report["ignored"] = ignored
        report["warnings"] = _warnings(report)
        return report


def by_extension(paths) -> dict:
    """{".heic": 3, ...}: how many of ``paths`` end in each extension (lower case; "" for none)."""
    counts: dict = {}
    for path in paths:
        ext = os.path.splitext(str(path))[1].lower()
        counts[ext] = counts.get(ext, 0) + 1
    return dict(sorted(counts.items()))


def digest(image: np.ndarray) -> str:
    """The content hash duplicates are found by: SHA-1 of the pixel bytes."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def run(splits: dict, class_names: list, skipped: list, dedupe: bool) -> tuple[dict, dict]:
    """Check ``splits`` ({name: (uint8 [N, H, W, C], int64 [N])}) held in memory; return (splits, report): the
    splits with val/test duplicates removed when ``dedupe`` is true, and the report written to
    ``preflight.json``. Ingest streams through a :class:`Checker` instead."""
    if not splits:
        raise PipelineError("preflight: no splits to check")
    checker = Checker(class_names, dedupe)
    names = [s for s in ORDER if s in splits] + [s for s in splits if s not in ORDER]
    out = {}
    for name in names:
        x, y = splits[name]
        keep = [i for i in range(len(y)) if checker.add(name, digest(x[i]), y[i])]
        out[name] = (x, y) if len(keep) == len(y) else (x[keep], y[keep])
        if name == names[0]:
            checker.pixels(out[name][0])
    return {name: out[name] for name in splits}, checker.report(skipped)


def table(report: dict) -> str:
    """A short plain-text summary of a preflight report for the terminal."""
    lines = [f"{'split':<7}{'images':>9}{'classes':>9}{'min/class':>11}{'max/class':>11}{'imbalance':>11}"
             f"{'dups':>7}"]
    for split, s in report["splits"].items():
        counts = list(s["class_counts"].values()) or [0]
        ratio = f"{s['imbalance_ratio']:.2f}" if s["imbalance_ratio"] else "-"
        present = sum(1 for n in counts if n)
        lines.append(f"{split:<7}{s['images']:>9,}{present:>9}{min(counts):>11,}{max(counts):>11,}{ratio:>11}"
                     f"{report['duplicates']['within'].get(split, 0):>7}")
    img = report["image"]
    lines.append(f"images {'x'.join(map(str, img['shape']))} {img['dtype']}, channel mean "
                 f"{', '.join(f'{m:.1f}' for m in img['channel_mean'])}, std "
                 f"{', '.join(f'{v:.1f}' for v in img['channel_std'])}")
    across = report["duplicates"]["across"]
    lines.append("duplicates across splits: " + (", ".join(f"{k} {v}" for k, v in across.items()) or "none"))
    if report["dedupe"]["enabled"]:
        removed = report["dedupe"]["removed"]
        lines.append("dedupe removed: " + (", ".join(f"{k} {v}" for k, v in removed.items()) or "nothing"))
    skipped = report["skipped"]
    if skipped["count"]:
        lines.append(f"skipped {skipped['count']} unreadable file(s):")
        lines += [f"  {f['path']}: {f['reason']}" for f in skipped["files"][:EXAMPLES]]
        if skipped["count"] > EXAMPLES:
            lines.append(f"  ... and {skipped['count'] - EXAMPLES} more (preflight.json)")
    ignored = report.get("ignored") or {}
    if ignored.get("count"):
        exts = ", ".join(f"{ext or '(none)'} {n}" for ext, n in ignored["by_extension"].items())
        lines.append(f"ignored {ignored['count']} file(s) in formats Pillow does not read: {exts}")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    lines += [f"note: {n}" for n in report.get("notes", [])]  # the source's notes, added by ingest
    return "\n".join(lines)
