"""The stage graph: five stages as functions of (config, run directory), each reading files and writing only
under ``runs/<run>/<stage>/``, finishing with its ``manifest.json``.

A stage's fingerprint covers its config section, its own input files and the identity of every upstream
manifest it reads (fingerprint plus output hashes), as in a build system: a change anywhere upstream makes
every downstream stage stale. A stage whose fingerprint matches and whose outputs are intact is skipped.
A single stage never uses a stale or missing upstream: it stops with one line naming the stage to run.
Checking freshness reads JSON and file metadata only: it never imports TensorFlow.
"""
from __future__ import annotations

import functools
import logging
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import artifacts
from pipeline.errors import PipelineError, UsageError

ORDER = ("ingest", "build", "train", "evaluate", "export")
DIRS = {"ingest": "data", "build": "model", "train": "train", "evaluate": "eval", "export": "export"}
UPSTREAM = {"ingest": (), "build": ("ingest",), "train": ("ingest", "build"), "evaluate": ("ingest", "train"),
            "export": ("ingest", "train")}
# keys that change how a stage runs or reports, never what it makes: not part of any fingerprint
PRESENTATION = {"data": ("workers",), "train": ("verbose", "cache")}
# keys a training checkpoint may outlive: raising train.epochs continues with the schedule stretched
RESUME_FREE = {"data": ("workers", "shard_size"),
               "train": ("verbose", "cache", "epochs", "patience", "time_budget_s")}
MAIN_OUTPUT = {"ingest": "manifest.json", "build": "model.keras", "train": "model.keras",
               "evaluate": "metrics.json", "export": "manifest.json"}

log = logging.getLogger("cnnpipe")


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    skipped: bool
    manifest: dict
    summary: dict = field(default_factory=dict)
    reason: str = ""


@dataclass
class Status:
    """Where a stage stands for the current config: fresh, or why not."""
    stage: str
    out_dir: Path
    fp: str | None
    upstream: dict
    manifest: dict | None
    reason: str | None          # None when fresh

    @property
    def fresh(self) -> bool:
        return self.reason is None


# ---------------------------------------------------------------- what each stage reads

def _section(cfg, name: str, drop: dict = PRESENTATION) -> dict:
    values = cfg.section(name)
    for key in drop.get(name, ()):
        values.pop(key, None)
    return values


def config_section(cfg, stage: str) -> dict:
    """The config a stage reads (less presentation keys): part of its fingerprint and of its manifest."""
    if stage == "ingest":
        from pipeline import sources

        return {"data": _section(cfg, "data"), "source_identity": sources.identity(cfg.data)}
    detect = {"detect": _section(cfg, "detect")} if cfg.model.task == "detect" else {}
    return {"build": lambda: {"model": _section(cfg, "model"), **_detect_keys(cfg, "stride", "boxes")},
            "train": lambda: {"train": _section(cfg, "train"), "augment": _section(cfg, "augment"),
                              **_detect_keys(cfg, "object_weight", "boxes")},
            "evaluate": lambda: {"eval": _section(cfg, "eval"), **detect},
            "export": lambda: {"export": _section(cfg, "export"), "budget": cfg.model.budget,
                               **detect}}[stage]()


def _detect_keys(cfg, *keys) -> dict:
    """The ``detect.*`` keys a stage reads, only for a detection model (other tasks ignore the section)."""
    if cfg.model.task != "detect":
        return {}
    return {"detect": {key: getattr(cfg.detect, key) for key in keys}}


def external_inputs(cfg, stage: str, run_dir: Path = Path("runs/run")) -> list:
    """Files outside the run a stage reads (a transfer-learning base model)."""
    if stage == "build" and cfg.model.base_model:
        from pipeline.errors import ConfigError
        from pipeline.models import transfer

        try:  # a .keras file, or an earlier run's trained model: its retraining makes build stale
            return [transfer.base_path(cfg.model, Path(run_dir).parent)]
        except ConfigError:
            return []  # build itself reports the missing base in one line
    return []


def resume_material(cfg) -> dict:
    """What a training checkpoint must match to be continued: only what changes the training math."""
    from pipeline import sources

    return {"data": _section(cfg, "data", RESUME_FREE), "source_identity": sources.identity(cfg.data),
            "model": _section(cfg, "model"), "train": _section(cfg, "train", RESUME_FREE),
            "augment": _section(cfg, "augment"), **_detect_keys(cfg, "stride", "object_weight", "boxes")}


def train_inputs(cfg, run_dir: Path) -> tuple[list, dict]:
    """(files, material) whose fingerprint is the resume key of the train stage."""
    return [], resume_material(cfg)


# ---------------------------------------------------------------- freshness

def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def changed_keys(old: dict, new: dict) -> list:
    """Dotted keys whose values differ between two config sections (``source_identity`` as one key)."""
    a, b = _flatten(old or {}), _flatten(new or {})
    keys = sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))
    return sorted({"the source's files" if k.startswith("source_identity") else k for k in keys})


def _why_stale(manifest: dict | None, fp: str, section: dict, upstream: dict, out_dir: Path) -> str | None:
    if manifest is None:
        return "not run yet" if not out_dir.exists() else "did not finish (no manifest.json)"
    if manifest.get("fingerprint") != fp:
        changed = changed_keys(manifest.get("config", {}), section)
        if changed:
            return (f"config changed since it ran: {', '.join(changed[:4])}"
                    + (" ..." if len(changed) > 4 else ""))
        ups = [u for u, uid in upstream.items() if manifest.get("upstream", {}).get(u) != uid]
        if ups:
            return f"upstream stage {', '.join(ups)} changed since it ran"
        return "its input files changed since it ran"
    for out in manifest.get("outputs", []):
        if not artifacts.entry_intact(out, out_dir):
            return f"output {out['path']} is missing or changed since it was written"
    return None


def status(cfg, run_dir: Path, stage: str) -> Status:
    """Whether ``stage`` is fresh for ``cfg``: its upstream manifests, config section and outputs."""
    out_dir = Path(run_dir) / DIRS[stage]
    manifest = artifacts.read_manifest(out_dir)
    upstream = {}
    for up in UPSTREAM[stage]:
        up_manifest = artifacts.read_manifest(Path(run_dir) / DIRS[up])
        if up_manifest is None:
            return Status(stage, out_dir, None, {}, manifest, f"upstream stage {up} has not finished")
        upstream[up] = artifacts.manifest_id(up_manifest)
    section = config_section(cfg, stage)
    fp = artifacts.fingerprint(external_inputs(cfg, stage, run_dir), section, upstream)
    reason = _why_stale(manifest, fp, section, upstream, out_dir)
    if reason is None and stage == "export":
        reason = bundle_problem(cfg, Path(run_dir), manifest)
    return Status(stage, out_dir, fp, upstream, manifest, reason)


def ancestors(stage: str) -> list:
    """Every stage ``stage`` depends on, directly or not, in pipeline order."""
    seen, todo = set(), list(UPSTREAM[stage])
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo += UPSTREAM[up]
    return [s for s in ORDER if s in seen]


def require_upstream(cfg, run_dir: Path, stage: str) -> None:
    """Stop with one line when a stage ``stage`` depends on is missing or stale: it never uses a stale
    input."""
    for up in ancestors(stage):
        st = status(cfg, run_dir, up)
        if st.fresh:
            continue
        main = st.out_dir / MAIN_OUTPUT[up]
        if st.manifest is None and not main.exists():
            raise UsageError(f"{main}: not found; run `cnnpipe {up}` before `cnnpipe {stage}`")
        raise UsageError(f"stage {up} of run {Path(run_dir).name} is stale ({st.reason}); "
                         f"run `cnnpipe run --until {stage}` with the same options to refresh it first")


def verify_ingest(run_dir: Path) -> None:
    """Hash every shard against the ingest manifest before a stage reads them: a corrupt shard is one line."""
    data_dir = Path(run_dir) / "data"
    manifest = artifacts.read_manifest(data_dir) or {}
    for out in manifest.get("outputs", []):
        if not artifacts.entry_intact(out, data_dir, full=True):
            raise PipelineError(f"{data_dir / out['path']}: missing or corrupt (sha256 differs from the "
                                f"ingest manifest); run `cnnpipe ingest --force` to write the shards again")


def bundle_problem(cfg, run_dir: Path, manifest: dict | None) -> str | None:
    """Why the published bundle no longer matches what export made (a file deleted, edited or added)."""
    dest = publish_dest(cfg, run_dir)
    card_path = dest / "model_card.json"
    if not card_path.is_file() or artifacts.sha256_file(card_path) != (manifest or {}).get("card_sha256"):
        return f"the bundle {dest} is missing or its model card changed"
    listed = artifacts.read_json(card_path).get("bundle_files", {})
    for rel, digest in listed.items():
        path = dest / rel
        if not path.is_file() or artifacts.sha256_file(path) != digest:
            return f"bundle file {path} is missing or changed"
    return None


def publish_dest(cfg, run_dir: Path) -> Path:
    return Path(cfg.export.dest) / Path(run_dir).name


# ---------------------------------------------------------------- running a stage

def _run(cfg, run_dir: Path, stage: str, work: Callable[[Path], tuple], force: bool = False,
         out_root: Path | None = None, check: Callable[[], None] | None = None) -> StageResult:
    """Skip a fresh stage; otherwise ``check`` its inputs (before anything is touched), run ``work`` and
    commit the manifest."""
    st = status(cfg, run_dir, stage)
    if not force and st.fresh:
        return StageResult(stage, st.out_dir, True, st.manifest, st.manifest.get("summary", {}))
    if check is not None:
        check()
    out_dir = Path(out_root or run_dir) / DIRS[stage]
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / "manifest.json"
    if stale.exists():
        stale.unlink()  # the stage is no longer up to date until it finishes
    start = time.time()
    outputs, summary, extra = work(out_dir)
    inputs = _upstream_files(run_dir, stage) + external_inputs(cfg, stage, run_dir)
    manifest = artifacts.write_manifest(out_dir, stage=stage, fp=st.fp, inputs=inputs,
                                        section=config_section(cfg, stage), outputs=outputs,
                                        wall_time_s=time.time() - start, upstream=st.upstream,
                                        extra={"summary": summary, **(extra or {})})
    return StageResult(stage, out_dir, False, manifest, summary,
                       "forced" if force and st.fresh else st.reason)


def _upstream_files(run_dir: Path, stage: str) -> list:
    """Manifest entries of the upstream outputs a stage read, paths relative to the run folder, sha256 as the
    upstream manifests recorded them (already verified; not hashed again)."""
    entries = []
    for up in UPSTREAM[stage]:
        for out in (artifacts.read_manifest(Path(run_dir) / DIRS[up]) or {}).get("outputs", []):
            entries.append({**out, "path": f"{DIRS[up]}/{out['path']}"})
    return entries


def ingest(cfg, run_dir: Path, force: bool = False) -> StageResult:
    def work(out: Path):
        from pipeline import ingest as ingest_mod

        return ingest_mod.run(cfg, out)

    return _run(cfg, run_dir, "ingest", work, force)


def build(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir = run_dir / "data"
    require_upstream(cfg, run_dir, "build")

    def work(out: Path):
        from pipeline import build as build_mod

        return build_mod.run(cfg, data_dir, out)

    return _run(cfg, run_dir, "build", work, force)


def _resume_notice(cfg, run_dir: Path, key: str) -> None:
    """Say whether training continues a checkpoint, or why a checkpoint is set aside."""
    from pipeline import resume

    material = resume_material(cfg)
    previous = resume.peek(run_dir / "train" / "checkpoint")
    if previous is not None:
        epoch, old_key = previous
        if old_key.split("/")[0] == key:
            log.info(f"resuming from epoch {epoch}")
        else:
            old = artifacts.read_json(run_dir / "train" / "resume_key.json") \
                if (run_dir / "train" / "resume_key.json").is_file() else {}
            changed = changed_keys(old, material) or ["the data or model"]
            log.info(f"a checkpoint after epoch {epoch} was made with another configuration "
                     f"({', '.join(changed[:4])} changed): training starts fresh")
    artifacts.write_json(run_dir / "train" / "resume_key.json", material)


def train(cfg, run_dir: Path, force: bool = False) -> StageResult:
    from pipeline import strategy

    data_dir, model_path = run_dir / "data", run_dir / "model" / "model.keras"
    require_upstream(cfg, run_dir, "train")
    key = artifacts.fingerprint(*train_inputs(cfg, run_dir))

    def work(out: Path):
        from pipeline import curves, train as train_mod

        if chief:
            _resume_notice(cfg, run_dir, key)
        # resumes from train/checkpoint/ when it holds the last completed epoch of this same run (key)
        summary = train_mod.fit(model_path, data_dir, cfg, out, resume_key=key, resume_dir=run_dir / "train")
        extra = {"seed": cfg.train.seed, **summary.pop("manifest", {})}
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        figure = curves.write(out / "history.csv", out / "training_curves.png")
        return [out / "model.keras", out / "history.csv", figure], summary, extra

    chief = strategy.is_chief(cfg.train)
    check = functools.partial(verify_ingest, run_dir)
    if not chief:  # multi-worker: only the chief writes under the run dir (TF docs)
        if not force and status(cfg, run_dir, "train").fresh:
            return _run(cfg, run_dir, "train", work)  # the chief's run is complete
        with tempfile.TemporaryDirectory(prefix="cnnpipe-worker-") as tmp:
            return _run(cfg, run_dir, "train", work, force, out_root=Path(tmp), check=check)
    result = _run(cfg, run_dir, "train", work, force, check=check)
    if not result.skipped:
        from pipeline import train as train_mod

        train_mod.discard_checkpoint(result.out_dir)  # the manifest is written: the resume state is done
        (result.out_dir / "resume_key.json").unlink(missing_ok=True)
    return result


def evaluate(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir, model_path = run_dir / "data", run_dir / "train" / "model.keras"
    require_upstream(cfg, run_dir, "evaluate")

    def work(out: Path):
        from pipeline import evaluate as evaluate_mod

        if cfg.model.task != "classify":
            from pipeline import heads

            result = evaluate_mod.evaluate_task(model_path, data_dir, cfg, out)
            key = heads.HEADLINE[cfg.model.task]
            return [out / "metrics.json", out / "predictions.png"], {
                "task": cfg.model.task, key: result[key], "n_test": result["n_test"]}, {}
        result = evaluate_mod.evaluate(model_path, data_dir, cfg.eval, out)
        summary = {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_test": result["n_test"]}
        return [out / "metrics.json", out / "confusion_matrix.png"], summary, {}

    return _run(cfg, run_dir, "evaluate", work, force, check=functools.partial(verify_ingest, run_dir))


def export(cfg, run_dir: Path, force: bool = False) -> StageResult:
    data_dir, model_path = run_dir / "data", run_dir / "train" / "model.keras"
    require_upstream(cfg, run_dir, "export")
    dest = publish_dest(cfg, run_dir)
    artifacts.check_publish_target(dest)

    def work(out: Path):
        from pipeline import publish

        return publish.export_run(cfg, run_dir, model_path, data_dir, out, dest)

    return _run(cfg, run_dir, "export", work, force, check=functools.partial(verify_ingest, run_dir))


STAGES = {"ingest": ingest, "build": build, "train": train, "evaluate": evaluate, "export": export}
