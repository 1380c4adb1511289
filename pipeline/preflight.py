"""Preflight checks of the prepared splits, before anything is trained on them.

:func:`run` reports, per split, the class counts and the imbalance ratio (largest / smallest class); the image
size and per-channel mean and standard deviation (of train); the unreadable files the source skipped; and
exact duplicates (same pixel bytes, by SHA-1) within each split and across splits. Duplicates are a warning;
with ``dedupe`` the val and test splits lose every image whose content appears in an earlier split
(train < val < test) or earlier in the same split. Train is never changed.

:func:`table` renders the report as a few lines of plain text for the terminal.
"""
from __future__ import annotations

import hashlib

import numpy as np

from pipeline.errors import PipelineError

ORDER = ("train", "val", "test")
EXAMPLES = 5


def _hashes(images: np.ndarray) -> list:
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


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


def _channel_stats(images: np.ndarray, chunk: int = 8192) -> dict:
    """Shape and per-channel mean/std of pixel values (0..255), accumulated in chunks."""
    c = images.shape[-1]
    total, sq, n = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, c).astype(np.float64)
        total += block.sum(0)
        sq += (block ** 2).sum(0)
        n += len(block)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean ** 2, 0))
    return {"shape": [int(s) for s in images.shape[1:]], "dtype": str(images.dtype),
            "channel_mean": [round(float(m), 3) for m in mean],
            "channel_std": [round(float(s), 3) for s in std]}


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


def _dedupe(splits: dict, hashes: dict) -> tuple[dict, dict]:
    """Drop from val and test the images seen in an earlier split or earlier in the same split."""
    seen = set(hashes.get("train", []))
    removed = {}
    out = dict(splits)
    for split in ORDER[1:]:
        if split not in splits:
            continue
        keep = []
        for i, h in enumerate(hashes[split]):
            if h not in seen:
                keep.append(i)
                seen.add(h)
        removed[split] = len(hashes[split]) - len(keep)
        if not keep:
            raise PipelineError(f"data.dedupe: every image of the {split} split duplicates an earlier one; "
                                "the split would be empty")
        x, y = splits[split]
        out[split] = (x[keep], y[keep])
        hashes[split] = [hashes[split][i] for i in keep]
    return out, removed


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


def run(splits: dict, class_names: list, skipped: list, dedupe: bool) -> tuple[dict, dict]:
    """Check ``splits`` ({name: (uint8 [N, H, W, C], int64 [N])}); return (splits, report): the splits with val/test
    duplicates removed when ``dedupe`` is true, and the report written to ``preflight.json``."""
    if not splits:
        raise PipelineError("preflight: no splits to check")
    hashes = {name: _hashes(x) for name, (x, _) in splits.items()}
    duplicates = _duplicates(hashes, {name: y for name, (_, y) in splits.items()})
    removed = {}
    if dedupe:
        splits, removed = _dedupe(splits, hashes)
    first = "train" if "train" in splits else next(iter(splits))
    report = {
        "classes": len(class_names),
        "splits": {name: _split_stats(y, class_names) for name, (_, y) in splits.items()},
        "image": _channel_stats(splits[first][0]),
        "skipped": {"count": len(skipped), "files": list(skipped)},
        "duplicates": duplicates,
        "dedupe": {"enabled": bool(dedupe), "removed": removed},
    }
    report["warnings"] = _warnings(report)
    return splits, report


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
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    lines += [f"note: {n}" for n in report.get("notes", [])]  # the source's notes, added by ingest
    return "\n".join(lines)
