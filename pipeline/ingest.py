"""The ingest stage's work: load the source, split it, run preflight checks and write the shards."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts


def run(cfg, out: Path) -> tuple[list, dict, dict]:
    """Ingest ``cfg.data`` into ``out``; return (output files, summary, manifest additions)."""
    from pipeline import data, preflight, sources

    src = sources.load(cfg.data)
    splits = data.make_splits(src.splits, cfg.data)
    splits, report = preflight.run(splits, src.class_names, src.skipped, cfg.data.dedupe)
    for old in [out / "classes.json", *out.glob("*.tfrecord")]:
        old.unlink(missing_ok=True)
    outputs = []
    for name, (x, y) in splits.items():
        outputs += data.write_split(out, name, x, y, cfg.data.shard_size)
    shape = list(splits["train"][0].shape[1:])
    meta = {"class_names": src.class_names, "image_shape": shape,
            "counts": {k: int(len(v[1])) for k, v in splits.items()},
            "origin": src.origin, "resize": cfg.data.resize, "notes": src.notes}
    report["notes"] = src.notes
    outputs.append(artifacts.write_json(out / "classes.json", meta))
    outputs.append(artifacts.write_json(out / "preflight.json", report))
    summary = {"source": src.origin, "classes": len(src.class_names), "image_shape": shape,
               **{f"{k}_images": v for k, v in meta["counts"].items()}, "skipped_files": len(src.skipped)}
    return outputs, summary, {"input_files": [str(p) for p in src.input_files], "seed": cfg.data.seed}
