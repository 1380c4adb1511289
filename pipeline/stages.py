"""The five stages as functions of (config, run directory). Each one reads files, writes only under
``runs/<run>/<stage>/`` and finishes by writing its ``manifest.json``. A stage whose input files and config
section are unchanged is skipped.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import artifacts
from pipeline.errors import UsageError

ORDER = ("ingest", "build", "train", "evaluate", "export")
DIRS = {"ingest": "data", "build": "model", "train": "train", "evaluate": "eval", "export": "export"}


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    skipped: bool
    manifest: dict
    summary: dict = field(default_factory=dict)


def _require(path: Path, stage: str, before: str) -> Path:
    if not path.exists():
        raise UsageError(f"{path}: not found; run `cnnpipe {before}` before `cnnpipe {stage}`")
    return path


def _run(stage: str, run_dir: Path, inputs: list, section: dict, work: Callable[[Path], tuple],
         force: bool = False, extra_ok: Callable[[dict], bool] | None = None, fp: str | None = None
         ) -> StageResult:
    out_dir = run_dir / DIRS[stage]
    fp = fp or artifacts.fingerprint(inputs, section)
    if not force and artifacts.up_to_date(out_dir, fp):
        manifest = artifacts.read_json(out_dir / "manifest.json")
        if extra_ok is None or extra_ok(manifest):
            return StageResult(stage, out_dir, True, manifest, manifest.get("summary", {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / "manifest.json"
    if stale.exists():
        stale.unlink()  # the stage is no longer up to date until it finishes
    start = time.time()
    outputs, summary, extra = work(out_dir)
    manifest = artifacts.write_manifest(out_dir, stage=stage, fp=fp, inputs=inputs, section=section,
                                        outputs=outputs, wall_time_s=time.time() - start,
                                        extra={"summary": summary, **(extra or {})})
    return StageResult(stage, out_dir, False, manifest, summary)


def data_files(data_dir: Path, stage: str) -> list:
    """The ingested shards and ``classes.json``, once ingest has committed them (its manifest exists)."""
    _require(data_dir / "manifest.json", stage, "ingest")
    return sorted(data_dir.glob("*.tfrecord")) + [data_dir / "classes.json"]


# ---------------------------------------------------------------- ingest

def ingest(cfg, run_dir: Path, force: bool = False) -> StageResult:
    from pipeline import sources

    section = {"data": cfg.section("data"), "source_identity": sources.identity(cfg.data)}

    def work(out: Path):
        from pipeline import ingest as ingest_mod

        return ingest_mod.run(cfg, out)

    return _run("ingest", run_dir, [], section, work, force)


# ---------------------------------------------------------------- build

def build(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir = run_dir / "data"
    data_files(data_dir, "build")
    classes = data_dir / "classes.json"

    def work(out: Path):
        from pipeline import build as build_mod

        return build_mod.run(cfg, data_dir, out)

    base = [Path(cfg.model.base_model)] if Path(cfg.model.base_model or "/nonexistent").is_file() else []
    return _run("build", run_dir, [classes, *base], {"model": cfg.section("model")}, work, force)


# ---------------------------------------------------------------- train

def train_inputs(cfg, run_dir: Path) -> tuple[list, dict]:
    """The train stage's input files and config section: its fingerprint is also the resume key."""
    model_path = _require(run_dir / "model" / "model.keras", "train", "build")
    return [model_path, *data_files(run_dir / "data", "train")], \
        {"train": cfg.section("train"), "augment": cfg.section("augment")}


def train(cfg, run_dir: Path, force: bool = False) -> StageResult:
    from pipeline import strategy, train as train_mod

    data_dir, model_path = run_dir / "data", run_dir / "model" / "model.keras"
    inputs, section = train_inputs(cfg, run_dir)
    fp = artifacts.fingerprint(inputs, section)

    def work(out: Path):
        # resumes from train/checkpoint/ when it holds the last completed epoch of this same run (fp)
        summary = train_mod.fit(model_path, data_dir, cfg, out, resume_key=fp, resume_dir=run_dir / "train")
        extra = {"seed": cfg.train.seed, **summary.pop("manifest", {})}
        return [out / "model.keras", out / "history.csv"], summary, extra

    if not strategy.is_chief(cfg.train):  # multi-worker: only the chief writes under the run dir (TF docs)
        if not force and artifacts.up_to_date(run_dir / "train", fp):
            return _run("train", run_dir, inputs, section, work, fp=fp)  # the chief's run is complete
        with tempfile.TemporaryDirectory(prefix="cnnpipe-worker-") as tmp:
            return _run("train", Path(tmp), inputs, section, work, force, fp=fp)
    result = _run("train", run_dir, inputs, section, work, force, fp=fp)
    train_mod.discard_checkpoint(result.out_dir)  # the manifest is written: the resume state is done
    return result


# ---------------------------------------------------------------- evaluate

def evaluate(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir, model_path = run_dir / "data", run_dir / "train" / "model.keras"
    _require(model_path, "evaluate", "train")
    inputs = [model_path, *data_files(data_dir, "evaluate")]

    def work(out: Path):
        from pipeline import evaluate as evaluate_mod

        result = evaluate_mod.evaluate(model_path, data_dir, cfg.eval, out)
        summary = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_test": result["n_test"]}
        return [out / "metrics.json", out / "confusion_matrix.png"], summary, {}

    return _run("evaluate", run_dir, inputs, {"eval": cfg.section("eval")}, work, force)


# ---------------------------------------------------------------- export

def export(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir, model_path = run_dir / "data", run_dir / "train" / "model.keras"
    _require(model_path, "export", "train")
    inputs = [model_path, *data_files(data_dir, "export")]
    dest = Path(cfg.export.dest) / run_dir.name

    def published(manifest: dict) -> bool:
        card = dest / "model_card.json"
        return card.is_file() and artifacts.sha256_file(card) == manifest.get("card_sha256")

    def work(out: Path):
        from pipeline import publish

        return publish.export_run(cfg, run_dir, model_path, data_dir, out, dest)

    return _run("export", run_dir, inputs, {"export": cfg.section("export")}, work, force, published)


STAGES = {"ingest": ingest, "build": build, "train": train, "evaluate": evaluate, "export": export}
