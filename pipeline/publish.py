"""The export stage: convert, audit, check parity with LiteRT, build the bundle, publish it atomically.

The bundle is assembled in a hidden staging folder beside ``exported/<run>/`` and renamed into place only
after every file passed its audit and the parity gate, so a failed export leaves the previous bundle intact.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline import artifacts, data, export, models
from pipeline.errors import PipelineError


def _convert_all(cfg, model, rep_images, x_test, y_test, ref_probs, meta: dict, staging: Path) -> dict:
    from pipeline import progress

    files = {}
    with progress.track(len(cfg.export.formats), "export: convert, audit, parity", unit="file") as advance:
        for fmt in cfg.export.formats:
            files[fmt] = _convert_one(cfg, fmt, model, rep_images, x_test, y_test, ref_probs, meta, staging)
            advance(1)
    return files


def _parity(cfg, meta: dict, ref_probs, probs, y_test) -> dict:
    """The file's parity with the Keras model: accuracy of a classifier, the task metric otherwise."""
    if data.task(meta) == "classify":
        return export.parity(ref_probs, probs, y_test, meta["class_names"])
    from pipeline import heads

    return heads.parity(cfg, meta, ref_probs, probs, y_test)


def _convert_one(cfg, fmt, model, rep_images, x_test, y_test, ref_probs, meta: dict, staging: Path) -> dict:
    """Convert to one format, audit the file, write it to the staging folder and measure its parity."""
    from pipeline import audit, edge, metadata

    class_names = meta["class_names"]
    extra = {k: True for k in ("rgb_input", "flip_average") if getattr(cfg.export, k)}  # only when asked for
    blob = export.convert(model, fmt, rep_images, cfg.export.io_dtype, **extra)
    if cfg.export.metadata and data.task(meta) == "classify":  # the card describes the file on disk
        flip = "; the mean of the outputs on the image and its mirror" if cfg.export.flip_average else ""
        blob = metadata.embed(blob, class_names, name=f"cnnpipe image classifier ({fmt})",
                              description=f"{len(class_names)} classes, trained on {cfg.data.source}{flip}")
    check = audit.audit(blob, fmt, io_dtype=cfg.export.io_dtype if fmt == "int8" else None,
                        name=export.FILE_NAMES[fmt])
    path = artifacts.write_bytes(staging / export.FILE_NAMES[fmt], blob)
    runner = edge.EdgeModel(blob)
    probs = runner.predict(x_test)
    return {"file": path.name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
            "input": runner.input, "output": runner.output, "ops": check["ops"],
            "metadata": cfg.export.metadata,
            "parity": _parity(cfg, meta, ref_probs, probs, y_test)}


def _gate(files: dict, max_drop: float, max_class_drop: float, max_metric_drop: float) -> list:
    """Why a quantized file may not be published: overall accuracy lost, or one class's recall lost (a
    detection or segmentation file: its task metric, overall and per class, with ``max_metric_drop``)."""
    failures = []
    for fmt, f in files.items():
        if fmt not in export.QUANTIZED:
            continue
        if "metric" in f["parity"]:
            failures += _task_gate(f, max_metric_drop, max_class_drop)
            continue
        drop = f["parity"]["accuracy_drop_points"]
        if drop > max_drop:
            failures.append(f"{f['file']} loses {drop:.2f} accuracy points against the Keras model "
                            f"(limit export.max_accuracy_drop = {max_drop})")
        for name, c in f["parity"]["per_class"].items():
            if -c["delta_points"] > max_class_drop:
                failures.append(f"{f['file']} loses {-c['delta_points']:.2f} points of recall on class "
                                f"{name!r} (limit export.max_class_drop = {max_class_drop})")
    return failures


def _task_gate(f: dict, max_drop: float, max_class_drop: float) -> list:
    p, failures = f["parity"], []
    if p["drop_points"] > max_drop:
        failures.append(f"{f['file']} loses {p['drop_points']:.2f} points of {p['metric']} against the Keras "
                        f"model (limit export.max_metric_drop = {max_drop})")
    for name, c in p["per_class"].items():
        if -c["delta_points"] > max_class_drop:
            failures.append(f"{f['file']} loses {-c['delta_points']:.2f} points of {p['metric']} on class "
                            f"{name!r} (limit export.max_class_drop = {max_class_drop})")
    return failures


def _card(cfg, run: str, meta: dict, model, keras_acc: float, n_test: int, files: dict, rep_n: int) -> dict:
    h, w, c = meta["image_shape"]
    return {
        "run": run,
        "class_names": meta["class_names"],
        "input": {"shape": [1, h, w, c], "image_size": [h, w], "channels": c, "dtype_keras": "float32",
                  "range": [0, 255], "resize": meta.get("resize", "resize"),
                  "description": "raw pixels 0..255 (the model rescales itself); quantized files take "
                                 "round(pixel / scale + zero_point) in their input dtype",
                  **_encoding(meta)},
        "keras": {_headline(meta): keras_acc, "n_test": n_test, "params": models.param_count(model)},
        "gate": {"max_accuracy_drop": cfg.export.max_accuracy_drop,
                 "max_class_drop": cfg.export.max_class_drop, "passed": True, "failures": []},
        "representative_samples": rep_n,
        "flip_average": cfg.export.flip_average,
        "files": files,
        **_task_card(cfg, meta, keras_acc),
    }


def _headline(meta: dict) -> str:
    """The card's name for the Keras model's test figure: accuracy, or the task's metric (f1, mean_iou)."""
    from pipeline import heads

    return heads.HEADLINE[data.task(meta)]


def _task_card(cfg, meta: dict, keras_score: float) -> dict:
    """A detection or segmentation card: the task, its metric and how to decode the output tensor."""
    task = data.task(meta)
    if task == "classify":
        return {}
    from pipeline import heads

    key = heads.HEADLINE[task]
    return {"task": task, "metric": key, "keras_metric": {key: keras_score},
            "decoding": heads.decoding(cfg, meta),
            "gate_metric": {"max_metric_drop": cfg.export.max_metric_drop}}


def _encoding(meta: dict) -> dict:
    """Sequences and audio: how the device turns its signal into the pixels above (pipeline/sequence.py,
    pipeline/audio.py: the front end's parameters), as ingest recorded it."""
    enc = meta.get("encoding")
    if not enc:
        return {}
    what = {"sequence": "a sequence [length, channels] encoded per channel as "
                        "q = clip(round((x - offset) / scale), 0, 255), stored as the one-row image "
                        "[1, length, channels]",
            "audio": "a mono .wav clip at sample_rate turned into a uint8 log-mel image [frames, mels, 1] "
                     "by pipeline/audio.py with these parameters"}.get(enc.get("kind"), "")
    return {"encoding": enc, "signal": what}


def export_run(cfg, run_dir: Path, model_path: Path, data_dir: Path, out: Path, dest: Path):
    meta = data.read_meta(data_dir)
    names = meta["class_names"]
    y_train = data.read_labels(data_dir, "train")  # calibration: labels streamed, only the sample decoded
    x_test, y_test = data.load_split(data_dir, "test", meta)
    task = data.task(meta)
    kind = (meta.get("encoding") or {}).get("kind", "images")  # sequences and spectrograms have no mirror
    if cfg.export.flip_average and (task != "classify" or kind != "images"):
        raise PipelineError(f"export.flip_average: only for classifiers of images; this run's inputs are "
                            f"{kind} (model.task: {task}); nothing exported, {dest} unchanged")
    model = models.load(model_path, compile=False)
    if cfg.export.flip_average:  # the reference computes what the files compute
        ref_probs = export.flip_average_probs(model, x_test)
    else:
        ref_probs = model.predict(x_test.astype(np.float32), batch_size=256, verbose=0)
    if task == "classify":
        keras_acc = float((ref_probs.argmax(1) == y_test).mean())
        picks = y_test
    else:  # the task metric; golden vectors are picked by each image's dominant class
        keras_acc = _keras_metric(cfg, meta, ref_probs, y_test)
        picks = data.read_labels(data_dir, "test")
    rep_idx = export.representative_sample(y_train, cfg.export.representative_samples, cfg.data.seed)
    rep_images = data.take(data_dir, "train", rep_idx, meta)
    if cfg.export.rgb_input and meta["image_shape"][-1] == 1:  # the files take RGB (luminance inside)
        x_test, meta = np.repeat(x_test, 3, axis=-1), {**meta, "image_shape": [*meta["image_shape"][:2], 3]}

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))  # ours alone
    try:
        files = _convert_all(cfg, model, rep_images, x_test, y_test, ref_probs, meta, staging)
        card = _card(cfg, run_dir.name, meta, model, keras_acc, len(y_test), files, len(rep_idx))
        card["device"], device_failures = models.summary.device_check(  # measured vs estimated, model.budget
            cfg.model.budget, run_dir / "model" / "summary.json", files, staging, x_test)
        failures = _gate(files, cfg.export.max_accuracy_drop, cfg.export.max_class_drop,
                         cfg.export.max_metric_drop) + device_failures
        if failures:
            card["gate"].update(passed=False, failures=failures)
            artifacts.write_text(out / "report_failed.md", export.report_markdown(run_dir.name, card))
            raise PipelineError(f"export gate failed: {failures[0]}; nothing published, {dest} unchanged "
                                f"(details: {out / 'report_failed.md'})")
        _bundle_extras(cfg, card, files, staging, x_test, picks)
        artifacts.write_text(staging / "labels.txt", "\n".join(names) + "\n")
        artifacts.write_text(staging / "report.md", export.report_markdown(run_dir.name, card))
        artifacts.write_json(staging / artifacts.MARKER, {"made_by": "cnnpipe export", "bundle": dest.name})
        # the run report, from the card in hand and the files in the staging folder
        from pipeline import report

        if task == "classify":  # the run report describes classifiers (docs/tasks.md)
            report.into_bundle(cfg, run_dir, staging, card, model)
        card["bundle_files"] = bundle_listing(staging)
        artifacts.write_json(staging / "model_card.json", card)
        artifacts.publish_dir(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    copies = [artifacts.write_bytes(out / name, (dest / name).read_bytes())
              for name in ("model_card.json", "report.md")]
    failed = out / "report_failed.md"
    if failed.exists():
        failed.unlink()
    key = "accuracy" if task == "classify" else card["metric"]
    summary = {"published": str(dest), f"keras_{key}": round(keras_acc, 6),
               **{f"{fmt}_{key}": f["parity"]["accuracy" if task == "classify" else "value"]
                  for fmt, f in files.items()},
               **{f"{fmt}_bytes": f["bytes"] for fmt, f in files.items()}}
    extra = {"card_sha256": artifacts.sha256_file(dest / "model_card.json"),
             "representative": {"samples": int(len(rep_idx)), "seed": cfg.data.seed,
                                "split": "train", "stratified": True}}
    return copies, summary, extra


def _keras_metric(cfg, meta: dict, ref_probs, targets) -> float:
    from pipeline import heads

    return float(heads.measure(cfg, meta, targets, ref_probs)[heads.HEADLINE[meta["task"]]])


def bundle_listing(folder: Path) -> dict:
    """sha256 of every file in the bundle but the card itself (which holds this listing)."""
    return {str(p.relative_to(folder)): artifacts.sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "model_card.json"}


def _bundle_extras(cfg, card: dict, files: dict, staging: Path, x_test, y_test) -> None:
    """Microcontroller files and golden vectors for the int8 model; the TensorFlow-free predict script."""
    from pipeline import bundle

    if cfg.export.micro and "int8" in files:
        from pipeline import metadata, micro

        blob = metadata.strip((staging / files["int8"]["file"]).read_bytes())  # flash holds no labels
        idx = export.representative_sample(y_test, cfg.export.golden_vectors, cfg.data.seed)
        card["micro"] = micro.write_bundle(blob, x_test[idx], y_test[idx], card["class_names"],
                                           staging / "micro", cfg.export.golden_vectors)
        card["micro"]["golden_vectors"] = int(len(idx))
    bundle.write_runtime(staging)
