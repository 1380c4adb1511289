"""The task seam: what makes a model a classifier, a detector or a segmenter.

``model.task`` picks one module here; each supplies, for its targets, the encoding the model is trained
against, the loss, the metrics and figures of evaluate, the parity measure of export's gate and the output
decoding a device runs (numpy-only, in :mod:`pipeline.decoding`). Sources, stages, training, export and the
bundle are shared and call only the functions below, with the run's config and the data's ``classes.json``.

=========  =====================  ==========================  ====================  ====================
task       targets (shards)       model output                metric (gate)         decoded
=========  =====================  ==========================  ====================  ====================
classify   label                  probabilities [K]           accuracy              top-k labels
detect     objects [M, 5]         cell scores [H/s, W/s, K+1]  F1 of centres         class, x, y, score
segment    mask [H, W]            pixel scores [H, W, K]      mean IoU              a mask PNG
=========  =====================  ==========================  ====================  ====================

Classification keeps its historical home (``pipeline/evaluate.py``, ``pipeline/export.py``); this module
routes detect and segment (docs/tasks.md).
"""
from __future__ import annotations

import importlib

import numpy as np

TASKS = ("classify", "detect", "segment")
HEADLINE = {"classify": "accuracy", "detect": "f1", "segment": "mean_iou"}
TITLE = {"classify": "accuracy", "detect": "F1", "segment": "mean IoU"}


def module(task: str):
    return importlib.import_module(f"pipeline.heads.{task}")


def _hw(meta: dict) -> tuple:
    return tuple(int(s) for s in meta["image_shape"][:2])


def encode_fn(cfg, meta: dict):
    """``fn(images, targets) -> (images, encoded)`` for tf.data, after augmentation (None: classify, whose
    one-hot labels the data pipeline makes itself)."""
    task, k = meta.get("task", "classify"), len(meta["class_names"])
    if task == "detect":
        enc, boxes = module("detect").encode, cfg.detect.boxes
        return lambda images, objects: (images, enc(objects, _hw(meta), cfg.detect.stride, k, boxes))
    if task == "segment":
        enc = module("segment").encode
        return lambda images, masks: (images, enc(masks, k))
    return None


def loss(cfg, meta: dict):
    task, k = meta.get("task", "classify"), len(meta["class_names"])
    if task == "detect":
        return module("detect").loss(k, cfg.detect.object_weight, cfg.detect.boxes)
    if task == "segment":
        return module("segment").loss(k)
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)


def truth_list(task: str, targets) -> list | np.ndarray:
    """Targets as the metrics take them: detection objects without their padding rows, one array per image."""
    if task == "detect":
        return [t[t[:, 0] >= 0] for t in np.asarray(targets, np.float32)]
    return targets


def _scores(cfg, probs):
    """A detection output's class scores: without the box channels of ``detect.boxes``."""
    from pipeline.decoding import BOX_CHANNELS

    return np.asarray(probs)[..., :-BOX_CHANNELS] if cfg.detect.boxes else probs


def measure(cfg, meta: dict, targets, probs) -> dict:
    """metrics.json of a detection or segmentation model on a split (with ``detect.boxes``, also the mean IoU
    of the boxes decoded at the true objects' centre cells)."""
    task, names = meta["task"], meta["class_names"]
    if task == "detect":
        detect = module("detect")
        truth = truth_list(task, targets)
        out = detect.metrics(truth, _scores(cfg, probs), names, _hw(meta), cfg.detect.threshold,
                             cfg.detect.match_distance)
        if cfg.detect.boxes:
            out.update(detect.box_iou(truth, np.asarray(probs), _hw(meta)))
        return out
    return module("segment").metrics(targets, probs, names)


def parity(cfg, meta: dict, ref_probs, probs, targets) -> dict:
    """How a converted file's task metric compares with the Keras model's on the same images."""
    task, names = meta["task"], meta["class_names"]
    if task == "detect":
        return module("detect").parity(_scores(cfg, ref_probs), _scores(cfg, probs),
                                       truth_list(task, targets), names, _hw(meta), cfg.detect.threshold,
                                       cfg.detect.match_distance)
    return module("segment").parity(ref_probs, probs, targets, names)


def figure(cfg, meta: dict, images, targets, probs, path, title: str):
    task, names = meta["task"], meta["class_names"]
    if task == "detect":
        return module("detect").figure(images, truth_list(task, targets), probs, names, path, title,
                                       cfg.detect.threshold)
    return module("segment").figure(images, targets, probs, names, path, title, palette=palette(meta))


def parity_record(metric: str, value: float, keras_value: float, per_class: dict, probs, ref_probs,
                  changed: float) -> dict:
    """A converted file's parity entry (both tasks): its metric against the Keras model's, per class, the
    largest probability difference and the share of cells / pixels whose decoded class changed."""
    probs, ref_probs = np.asarray(probs), np.asarray(ref_probs)
    return {
        "metric": metric,
        "value": value,
        "keras_value": keras_value,
        "drop_points": round(100 * (keras_value - value), 4),
        "per_class": per_class,
        "max_abs_prob_diff": round(float(np.abs(probs - ref_probs).max()) if probs.size else 0.0, 6),
        "changed": round(float(changed), 6),
    }


def palette(meta: dict):
    enc = meta.get("encoding") or {}
    return enc.get("palette")


def decoding(cfg, meta: dict) -> dict:
    """What a device needs to turn the output tensor into objects or a mask (the model card's
    ``decoding``)."""
    task, names = meta["task"], meta["class_names"]
    if task == "detect":
        return module("detect").decoding_params(_hw(meta), cfg.detect.stride, cfg.detect.threshold, names,
                                                boxes=cfg.detect.boxes)
    return module("segment").decoding_params(_hw(meta), names, palette=palette(meta))
