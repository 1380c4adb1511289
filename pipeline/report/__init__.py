"""The run report: one self-contained HTML page (images embedded as base64 PNG, no network) that shows a run.

``gather``   what the stages wrote: config, versions, class counts, curves, metrics, layers, device figures
``looks``    what needs the model: samples, mistakes, labels int8 changes, filters, feature maps, latency
``figures``  the pictures (Pillow montages, matplotlib plots) as base64 PNG

The page is rendered from ``pipeline/templates/report.html.j2`` with jinja2 (autoescaped). ``cnnpipe report``
writes ``runs/<run>/report.html``; export puts a copy into the published bundle. A section whose stage has not
run yet says so in one line.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline import artifacts
from pipeline.errors import UsageError
from pipeline.report import figures, gather

SECTIONS = ("run", "data", "training", "evaluation", "mistakes", "int8-changes", "model", "device")
FILE_NAME = "report.html"


def check(run_dir: Path) -> None:
    """Stop with one line unless the run exists and has been trained and evaluated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run (see `cnnpipe runs`)")
    for stage, folder in (("ingest", "data"), ("train", "train"), ("evaluate", "eval")):
        if artifacts.read_manifest(run_dir / folder) is None:
            where = run_dir / folder / "manifest.json"
            raise UsageError(f"{where}: not found; run `cnnpipe run --until evaluate --run {run_dir.name}` "
                             f"before `cnnpipe report` ({stage} has not finished)")
    classes = run_dir / "data" / "classes.json"
    task = artifacts.read_json(classes).get("task", "classify") if classes.is_file() else "classify"
    if task != "classify":
        raise UsageError(f"{run_dir}: a {task} run; the report page describes classifiers. Its figures are "
                         f"{run_dir / 'eval' / 'metrics.json'}, {run_dir / 'eval' / 'predictions.png'} "
                         "and the bundle's report.md")


def _config(run_dir: Path, extra: dict | None) -> dict:
    from pipeline import runs

    return {**runs.config_of(run_dir), **(extra or {})}


def context(run_dir: Path, *, card: dict | None = None, files_dir: Path | None = None, model=None,
            config: dict | None = None, bench_runs: int = 30, state: tuple | None = None,
            running: str | None = None) -> dict:
    """Everything the template shows. ``card`` and ``files_dir``: the model card and the folder of the
    exported files (read from ``runs/<run>/export`` and the published bundle when not given); ``model``:
    the trained Keras model when already loaded; ``config``: keys that override the recorded ones;
    ``running``: the stage making the report, whose manifest is not written yet (its versions are this
    process's)."""
    from pipeline import data, models
    from pipeline.report import looks

    run_dir = Path(run_dir)
    mans = gather.manifests(run_dir)
    if running:
        mans[running] = {**(mans.get(running) or {}), "versions": artifacts.library_versions()}
    if card is None:
        card = gather.read(run_dir / "export" / "model_card.json")
        published = ((mans.get("export") or {}).get("summary") or {}).get("published")
        files_dir = Path(published) if published else None
    cfg = _config(run_dir, config)
    meta = data.read_meta(run_dir / "data")
    if model is None and (run_dir / "train" / "model.keras").is_file():
        model = models.load(run_dir / "train" / "model.keras", compile=False)
    layer_table = gather.layers(run_dir)
    totals = (layer_table or {}).get("totals", {})
    int8 = (card or {}).get("files", {}).get("int8", {}).get("file")
    int8_path = Path(files_dir) / int8 if int8 and files_dir and (Path(files_dir) / int8).is_file() else None
    flip = bool((card or {}).get("flip_average"))
    tests = looks.test_pass(model, run_dir / "data", meta, int8_path, flip_average=flip) \
        if model is not None else None
    ingest = mans.get("ingest") or {}
    return {
        "run": run_dir.name, "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sections": SECTIONS,
        "state": state, "exported": card is not None,
        "source": cfg.get("data.source") or ingest.get("summary", {}).get("source"),
        "origin": meta.get("origin"), "image_shape": meta["image_shape"], "class_names": meta["class_names"],
        "config": gather.config_sections(cfg), "n_config": len(cfg), "versions": gather.versions(mans),
        "wall": [(s, m["wall_time_s"]) for s, m in mans.items() if m and m.get("wall_time_s") is not None],
        "counts": gather.class_counts(run_dir, meta),
        "samples": looks.samples(run_dir / "data", meta),
        "training": gather.training(run_dir, mans.get("train")),
        "evaluation": gather.evaluation(run_dir, card),
        "tests": tests,
        "layers": layer_table,
        "filters": looks.filters(model) if model is not None else None,
        "maps": looks.feature_maps(model, tests["first_image"]) if tests else [],
        "probe": figures.image(tests["first_image"]) if tests and tests["first_image"] is not None else None,
        "device": gather.device(cfg, card, totals, looks.latency(card, files_dir, bench_runs)
                                if card and files_dir else []),
    }


def render(ctx: dict) -> str:
    """The page for a :func:`context`."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, num=_num, kib=_kib)
    return env.get_template("report.html.j2").render(**ctx)


def write(run_dir: Path, path: Path | None = None, bench_runs: int = 30) -> Path:
    """``cnnpipe report``: check the run, then write ``runs/<run>/report.html`` (or ``path``) atomically."""
    from pipeline import runs

    run_dir = Path(run_dir)
    check(run_dir)
    html = render(context(run_dir, bench_runs=bench_runs, state=runs.state(run_dir)))
    return artifacts.write_text(path or run_dir / FILE_NAME, html)


def into_bundle(cfg, run_dir: Path, staging: Path, card: dict, model) -> Path:
    """Export: the report of the run being exported, from the card in hand and the files in ``staging``."""
    from pipeline import stages

    export_keys = stages._flatten(stages.config_section(cfg, "export"))
    html = render(context(run_dir, card=card, files_dir=staging, model=model, config=export_keys,
                          running="export"))
    return artifacts.write_text(Path(staging) / FILE_NAME, html)


# ---- formatting filters of the template -----------------------------------------------------------------
def _pct(v, digits: int = 2) -> str:
    return gather.MISSING if v is None or isinstance(v, str) else f"{100 * float(v):.{digits}f}%"


def _num(v, digits: int | None = None) -> str:
    if v is None or isinstance(v, str):
        return gather.MISSING if v in (None, "") else v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}" if digits is not None else f"{v:,.4g}"


def _kib(v) -> str:
    return gather.MISSING if v is None else f"{v:,} B ({artifacts.human_bytes(v)})"
