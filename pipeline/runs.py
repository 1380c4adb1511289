"""Every run under ``runs/`` at a glance, and two runs side by side, read from the stage manifests only.

A run's state follows the stage graph: ``interrupted`` when a stage started and did not commit its manifest
(or a training checkpoint waits to be resumed), ``stale`` when a stage's recorded upstream identity no longer
matches that upstream manifest or an output changed since it was written, ``complete`` when every stage
through export is committed and consistent, and ``partial`` when the run simply stopped earlier
(``cnnpipe run --until``).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts
from pipeline.stages import DIRS, ORDER, UPSTREAM

COLUMNS = ("run", "source", "preset", "params", "float_acc", "int8_acc", "int8_bytes", "arena_bytes",
           "wall_s", "state")


def _manifests(run_dir: Path) -> dict:
    return {stage: artifacts.read_manifest(run_dir / DIRS[stage]) for stage in ORDER}


def state(run_dir: Path) -> tuple[str, str]:
    """(state, why) of one run folder."""
    manifests = _manifests(run_dir)
    for stage in ORDER:
        folder = run_dir / DIRS[stage]
        if manifests[stage] is None and folder.is_dir() and any(folder.iterdir()):
            return "interrupted", f"{stage} did not finish"
    if (run_dir / "train" / "checkpoint" / "state.json").is_file():
        return "interrupted", "a training checkpoint waits to be resumed"
    for stage, m in manifests.items():
        if m is None:
            continue
        for up in UPSTREAM[stage]:
            if manifests[up] is None or m.get("upstream", {}).get(up) != artifacts.manifest_id(manifests[up]):
                return "stale", f"{up} changed after {stage} ran"
        for out in m.get("outputs", []):
            if not artifacts.entry_intact(out, run_dir / DIRS[stage]):
                return "stale", f"{stage} output {out['path']} changed"
    done = [s for s in ORDER if manifests[s] is not None]
    if len(done) == len(ORDER):
        return "complete", ""
    return "partial", f"until {done[-1]}" if done else "nothing ran"


def _headline(summary: dict, prefix: str = ""):
    """A stage summary's headline figure: accuracy, or a detection / segmentation run's F1 / mean IoU."""
    for key in ("accuracy", "f1", "mean_iou"):
        if f"{prefix}{key}" in summary:
            return summary[f"{prefix}{key}"]
    return None


def _model_name(model: dict):
    """The preset, or ``layers`` for a layer spec; a detection or segmentation model says its task."""
    if not model:
        return None
    name = "layers" if model.get("layers") else model.get("preset")
    task = model.get("task", "classify")
    return name if task == "classify" else f"{name} ({task})"


def figures(run_dir: Path) -> dict:
    """One row of the runs table."""
    m = _manifests(run_dir)
    ingest = (m["ingest"] or {}).get("summary", {})
    build = m["build"] or {}
    export = (m["export"] or {}).get("summary", {})
    card_path = run_dir / "export" / "model_card.json"
    card = artifacts.read_json(card_path) if card_path.is_file() else {}
    st, why = state(run_dir)
    return {
        "run": run_dir.name,
        "source": ingest.get("source") or (m["ingest"] or {}).get("config", {}).get("data", {}).get("source"),
        "preset": _model_name(build.get("config", {}).get("model", {})),
        "params": build.get("summary", {}).get("params"),
        "float_acc": _headline((m["evaluate"] or {}).get("summary", {})),
        "int8_acc": _headline(export, "int8_"),
        "int8_bytes": export.get("int8_bytes"),
        "arena_bytes": card.get("micro", {}).get("arena_bytes"),
        "wall_s": round(sum(x.get("wall_time_s", 0) for x in m.values() if x), 1),
        "state": st,
        "why": why,
    }


def table(runs_root: Path, sort: str = "run", reverse: bool = False) -> list[dict]:
    """A row per run folder under ``runs_root``, sorted by ``sort`` (missing values last)."""
    root = Path(runs_root)
    rows = [figures(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")] \
        if root.is_dir() else []
    present = [r for r in rows if r.get(sort) is not None]
    missing = [r for r in rows if r.get(sort) is None]
    return sorted(present, key=lambda r: r[sort], reverse=reverse) + missing


def config_of(run_dir: Path) -> dict:
    """The resolved config a run used, flattened to dotted keys, from the sections its manifests recorded."""
    from pipeline.stages import _flatten

    flat = {}
    for m in _manifests(run_dir).values():
        for section, values in ((m or {}).get("config") or {}).items():
            if section != "source_identity" and isinstance(values, dict):
                flat.update(_flatten(values, f"{section}."))
    return flat


def compare(a: Path, b: Path) -> dict:
    """The config keys whose values differ between two runs, and both runs' figures."""
    ca, cb = config_of(a), config_of(b)
    keys = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
    return {"config": [(k, ca.get(k), cb.get(k)) for k in keys],
            "figures": [(c, figures(a)[c], figures(b)[c]) for c in COLUMNS if c != "run"]}
