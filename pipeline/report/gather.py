"""What the report says, read from the files the stages wrote (JSON, CSV, PNG): no TensorFlow here."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts, curves
from pipeline.report import figures
from pipeline.stages import DIRS, ORDER

MISSING = "-"


def read(path: Path):
    """A JSON file, or None when it is not there."""
    path = Path(path)
    return artifacts.read_json(path) if path.is_file() else None


def manifests(run_dir: Path) -> dict:
    return {stage: artifacts.read_manifest(Path(run_dir) / DIRS[stage]) for stage in ORDER}


def config_sections(config: dict) -> list:
    """[(section, [(key, value)])] of the flattened config, sections in pipeline order."""
    order = ["data", "augment", "model", "train", "eval", "export"]
    sections = {}
    for key, value in sorted(config.items()):
        section, _, rest = key.partition(".")
        sections.setdefault(section, []).append((rest, MISSING if value in (None, "") else value))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(sections.items(), key=lambda kv: (rank.get(kv[0], len(order)), kv[0]))


def versions(mans: dict) -> dict:
    """Library versions each stage ran with: {"stages": [...], "rows": [(library, [version per stage])]}."""
    stages = [s for s in ORDER if mans.get(s) and mans[s].get("versions")]
    libraries = []
    for s in stages:
        libraries += [lib for lib in mans[s]["versions"] if lib not in libraries]
    rows = [(lib, [mans[s]["versions"].get(lib) or MISSING for s in stages]) for lib in libraries]
    return {"stages": stages, "rows": rows}


def class_counts(run_dir: Path, meta: dict) -> dict:
    """Images per class and split, from ``preflight.json`` (``classes.json`` gives the split totals)."""
    names = meta["class_names"]
    pre = read(Path(run_dir) / "data" / "preflight.json") or {}
    splits = [s for s in ("train", "val", "test") if s in (pre.get("splits") or meta.get("counts", {}))]
    per = {s: (pre.get("splits", {}).get(s) or {}).get("class_counts") or {} for s in splits}
    rows = [(name, [per[s].get(name, MISSING) if per[s] else MISSING for s in splits]) for name in names]
    totals = [meta.get("counts", {}).get(s, MISSING) for s in splits]
    return {"splits": splits, "rows": rows, "totals": totals, "warnings": pre.get("warnings") or []}


def training(run_dir: Path, train_manifest: dict | None) -> dict | None:
    """Curves, best epoch and learning-rate schedule of the train stage; None before training."""
    train_dir = Path(run_dir) / "train"
    if train_manifest is None:
        return None
    summary = train_manifest.get("summary", {})
    history = curves.read_history(train_dir / "history.csv") if (train_dir / "history.csv").is_file() else []
    best = summary.get("best_epoch")
    if best is None and history and all("val_loss" in r for r in history):
        best = int(min(history, key=lambda r: r["val_loss"])["epoch"]) + 1
    return {"curves": figures.file_b64(train_dir / "training_curves.png"),
            "lr": figures.learning_rate(history, best), "best_epoch": best,
            "epochs_run": summary.get("epochs_run", len(history) or None),
            "best_val_loss": summary.get("best_val_loss"),
            "best_val_accuracy": summary.get("best_val_accuracy"),
            "strategy": summary.get("strategy"), "wall_time_s": train_manifest.get("wall_time_s")}


def evaluation(run_dir: Path, card: dict | None) -> dict | None:
    """Per-class precision / recall / F1 of the Keras model beside each exported file's per-class accuracy
    (the card's parity); None before evaluation."""
    metrics = read(Path(run_dir) / "eval" / "metrics.json")
    if metrics is None:
        return None
    files = [(fmt, f) for fmt, f in ((card or {}).get("files") or {}).items() if "parity" in f]
    rows = []
    for name, m in metrics["per_class"].items():
        per_file = [(f["parity"].get("per_class", {}).get(name) or {}).get("accuracy") for _, f in files]
        rows.append({"name": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1-score"],
                     "support": m["support"], "files": per_file})
    flip = bool((card or {}).get("flip_average"))  # the files average the image and its mirror (export)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics.get("macro_f1"), "n_test": metrics["n_test"],
            "flip_accuracy": card["keras"]["accuracy"] if flip else None,
            "confusion": figures.file_b64(Path(run_dir) / "eval" / "confusion_matrix.png"),
            "files": [{"fmt": fmt, "file": f["file"], "accuracy": f["parity"]["accuracy"],
                       "top1_changed": f["parity"].get("top1_changed")} for fmt, f in files],
            "rows": rows}


def _value(row: dict, key: str):
    v = row.get(key)
    if v is None or v == []:
        return MISSING
    if isinstance(v, list):
        return "x".join(str(x) for x in v)
    return v


def layers(run_dir: Path) -> dict | None:
    """The layer table of ``model/summary.json`` ("-" for what it does not give); None when absent."""
    summary = read(Path(run_dir) / "model" / "summary.json")
    if not summary:
        return None
    keys = ("name", "kind", "output_shape", "params", "macs", "receptive_field")
    rows = [{k: _value(layer, k) for k in keys} for layer in summary.get("layers", [])]
    return {"rows": rows, "totals": summary.get("totals") or {}, "input_shape": summary.get("input_shape")}


def arena_bytes(card: dict) -> int | None:
    """The TFLM arena export measured: the micro bundle's, else the card's device check's."""
    micro = (card.get("micro") or {}).get("arena_bytes")
    if micro is not None:
        return micro
    return ((card.get("device") or {}).get("measured") or {}).get("arena_bytes")


def budget(config: dict, card: dict | None, totals: dict) -> list:
    """Rows (what, limit bytes, measured or estimated bytes, fits) for ``model.budget``'s flash and RAM."""
    rows = []
    card = card or {}
    int8 = (card.get("files") or {}).get("int8", {}).get("bytes")
    arena = arena_bytes(card)
    card_budget = (card.get("device") or {}).get("budget") or {}
    for key, what, measured, estimate in (
            ("flash_kb", "flash: int8 file", int8, totals.get("int8_bytes_estimate")),
            ("ram_kb", "RAM: TFLM arena", arena, totals.get("arena_bytes_estimate"))):
        limit = config.get(f"model.budget.{key}", card_budget.get(key))
        if limit is None:
            continue
        value, kind = (measured, "measured") if measured is not None else (estimate, "estimated")
        rows.append({"what": what, "limit": int(limit * 1024), "bytes": value, "kind": kind,
                     "fits": None if value is None else value <= limit * 1024})
    return rows


def device(config: dict, card: dict | None, totals: dict, latency: list) -> dict | None:
    """File sizes, TFLM arena, budget and latency; None before export."""
    if not card:
        return None
    micro = card.get("micro") or {}
    files = [{"fmt": fmt, "file": f["file"], "bytes": f["bytes"], "input": f.get("input", {}),
              "ops": f.get("ops", [])} for fmt, f in (card.get("files") or {}).items()]
    return {"files": files, "arena_bytes": arena_bytes(card), "micro_ops": micro.get("ops", []),
            "tflm_matches_litert": micro.get("tflm_matches_litert"),
            "budget": budget(config, card, totals), "latency": latency,
            "estimates": {"int8 file (estimate)": totals.get("int8_bytes_estimate"),
                          "TFLM arena (estimate)": totals.get("arena_bytes_estimate"),
                          "MACs per inference": totals.get("macs")}}
