"""TFLite conversion in every quantization mode and the float-vs-quantized parity figures.

Models are converted with a fixed batch of one (what an edge device runs), so the files hold no dynamic-shape
ops. Full-integer modes are calibrated on a stratified sample of the training split.
"""
from __future__ import annotations

import json

import numpy as np

from pipeline.config import FORMATS

FILE_NAMES = {fmt: f"model_{fmt}.tflite" for fmt in FORMATS}
QUANTIZED = ("float16", "dynamic", "int8", "int16x8")
LUMA = (0.299, 0.587, 0.114)  # RGB -> gray, as pipeline.imaging.to_channels and Pillow's convert("L")


def representative_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified sample of ``n`` items (every class in proportion, at least one each)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / counts.sum() * n
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share)[:n - quota.sum()]] += 1  # largest remainders get the leftover
    quota = np.minimum(np.maximum(quota, 1), counts)
    while quota.sum() > n and (quota > 1).any():  # the "at least one" top-ups came out of the largest
        quota[np.argmax(np.where(quota > 1, quota - share, -np.inf))] -= 1
    picked = []
    for cls, q in zip(classes, quota):
        idx = np.flatnonzero(labels == cls)
        picked.append(rng.choice(idx, size=min(q, len(idx)), replace=False))
    picked = np.concatenate(picked)
    return np.sort(rng.permutation(picked)[:n])


def convert(model, fmt: str, rep_images: np.ndarray | None = None, io_dtype: str = "int8",
            rgb_input: bool = False, flip_average: bool = False) -> bytes:
    """Convert a Keras model taking raw pixels to TFLite bytes in mode ``fmt``.

    float32: no quantization. float16: float16 weights. dynamic: int8 weights, float activations.
    int8: every op int8, input/output ``io_dtype`` (int8, uint8, or float32 for a float interface around
    the int8 graph). int16x8: int16 activations, int8 weights.
    ``rgb_input``: a grayscale model gets an RGB input, turned into luminance inside the file by a 1x1
    convolution with the weights training used (pipeline.imaging.to_channels); a no-op for RGB models.
    ``flip_average``: the file runs the model on the image and on its mirror image (left-right) and returns
    the mean of the two outputs (:func:`flip_average_probs`): the same weights, twice the MACs per image.
    """
    import tensorflow as tf

    shape = [1, *model.input_shape[1:]]
    rgb = rgb_input and len(shape) == 4 and shape[-1] == 1
    if rgb:
        shape[-1] = 3
        luma = tf.constant(np.array(LUMA, np.float32).reshape(1, 1, 3, 1))
        if rep_images is not None and rep_images.shape[-1] == 1:
            rep_images = np.repeat(rep_images, 3, axis=-1)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="pixels")])
    def serve(pixels):
        if rgb:
            pixels = tf.nn.conv2d(pixels, luma, strides=1, padding="VALID")
        if flip_average:
            mirrored = tf.reverse(pixels, axis=[2])  # NHWC: the width axis
            return (model(pixels, training=False) + model(mirrored, training=False)) * 0.5
        return model(pixels, training=False)

    # No trackable object: the converter then freezes the weights into constants (with Keras 3 models passing
    # the model leaves resource variables in the file, which calibration and microcontrollers cannot run).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    if fmt != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt in ("int8", "int16x8"):
        if rep_images is None or len(rep_images) == 0:
            raise ValueError(f"{fmt} conversion needs representative images")
        images = rep_images.astype(np.float32)

        def rep():
            for image in images:
                yield [image[None]]

        converter.representative_dataset = rep
        if fmt == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io = {"uint8": tf.uint8, "int8": tf.int8, "float32": None}[io_dtype]
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            io = tf.int16
        if io is not None:  # float32 keeps a float interface with QUANTIZE/DEQUANTIZE at the ends
            converter.inference_input_type = io
            converter.inference_output_type = io
    elif fmt != "dynamic" and fmt != "float32":
        raise ValueError(f"unknown export format {fmt!r}")
    from pipeline import quiet

    with quiet.filtered_stderr():  # the quantizer prints its settings on stderr
        return converter.convert()


def flip_average_probs(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The Keras model's outputs on ``images`` (NHWC) averaged with its outputs on their mirror images, as a
    file converted with ``flip_average`` computes them."""
    images = images.astype(np.float32)
    plain = model.predict(images, batch_size=batch_size, verbose=0)
    return (plain + model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)) * 0.5


def parity(reference_probs: np.ndarray, probs: np.ndarray, labels: np.ndarray, class_names: list) -> dict:
    """Accuracy of a converted file against the Keras model: overall, per class, and top-1 changes."""
    ref_pred, pred = reference_probs.argmax(1), probs.argmax(1)
    acc = float((pred == labels).mean())
    ref_acc = float((ref_pred == labels).mean())
    per_class = {}
    for k, name in enumerate(class_names):
        mask = labels == k
        if mask.any():
            a, r = float((pred[mask] == k).mean()), float((ref_pred[mask] == k).mean())
            per_class[name] = {"accuracy": round(a, 6), "delta_points": round(100 * (a - r), 4)}
    return {
        "accuracy": round(acc, 6),
        "keras_accuracy": round(ref_acc, 6),
        "accuracy_drop_points": round(100 * (ref_acc - acc), 4),
        "top1_changed": round(float((pred != ref_pred).mean()), 6),
        "max_abs_prob_diff": round(float(np.abs(probs - reference_probs).max()), 6),
        "per_class": per_class,
    }


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell or list item (class names may hold pipes or markup)."""
    return "".join("\\" + ch if ch in "|\\`*_[]<>#" else ch for ch in str(text)).replace("\n", " ")


def _micro_lines(card: dict) -> list:
    if not card.get("micro"):
        return []
    m = card["micro"]
    return ["", "## Microcontroller", "",
            f"TFLM tensor arena: {m.get('arena_bytes')} bytes; ops: {', '.join(m.get('ops', []))}; "
            f"TFLM matches LiteRT on {m.get('golden_vectors')} golden vectors "
            f"(max difference {m.get('max_abs_diff_lsb')} LSB)."]


def task_report_markdown(run: str, card: dict) -> str:
    """``report.md`` of a detection or segmentation model: its metric per file and class, and the decoding."""
    metric, keras = card["metric"], card["keras_metric"][card["metric"]]
    lines = [f"# Export report: {run} ({card['task']})", "",
             f"Keras model test {metric}: {100 * keras:.2f}% on {card['keras']['n_test']} test images; "
             f"gate: at most {card['gate_metric']['max_metric_drop']} points of {metric} lost by a quantized "
             f"file, at most {card['gate'].get('max_class_drop')} points of any one class's.", "",
             f"| file | format | size | {metric} | drop (points) | changed | max prob diff |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for fmt, f in card["files"].items():
        p = f["parity"]
        lines.append(f"| {f['file']} | {fmt} | {f['bytes']:,} B | {100 * p['value']:.2f}% | "
                     f"{p['drop_points']:+.2f} | {100 * p['changed']:.2f}% | {p['max_abs_prob_diff']:.4f} |")
    if card["gate"].get("failures"):
        lines += ["", "## Gate failed", ""] + [f"- {_cell(f)}" for f in card["gate"]["failures"]]
    lines += ["", f"## Per-class {metric} delta against Keras (points)", "",
              "| class | " + " | ".join(card["files"]) + " |", "|---|" + "---:|" * len(card["files"])]
    for name in card["class_names"]:
        cells = [f"{f['parity']['per_class'].get(name, {}).get('delta_points', 0.0):+.2f}"
                 for f in card["files"].values()]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    lines += ["", "## Decoding the output", "", "```json", json.dumps(card["decoding"], indent=2), "```"]
    return "\n".join(lines + _micro_lines(card)) + "\n"


def report_markdown(run: str, card: dict) -> str:
    """``report.md``: the parity table a person reads before flashing a model."""
    if card.get("task"):
        return task_report_markdown(run, card)
    lines = [f"# Export report: {run}", "",
             f"Keras model test accuracy: {100 * card['keras']['accuracy']:.2f}% "
             f"on {card['keras']['n_test']} test images; gate: at most "
             f"{card['gate']['max_accuracy_drop']} points lost by a quantized file, at most "
             f"{card['gate'].get('max_class_drop', 'any')} points of any one class's recall."
             + (" Every file, and this Keras figure, is the mean of the outputs on the image and on its "
                "mirror image (export.flip_average): twice the MACs per image." if card.get("flip_average")
                else ""),
             "", "| file | format | size | accuracy | drop (points) | top-1 changed | max prob diff |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for fmt, f in card["files"].items():
        p = f["parity"]
        lines.append(f"| {f['file']} | {fmt} | {f['bytes']:,} B | {100 * p['accuracy']:.2f}% | "
                     f"{p['accuracy_drop_points']:+.2f} | {100 * p['top1_changed']:.2f}% | "
                     f"{p['max_abs_prob_diff']:.4f} |")
    if card["gate"].get("failures"):
        lines += ["", "## Gate failed", ""] + [f"- {_cell(f)}" for f in card["gate"]["failures"]]
    lines += ["", "## Per-class accuracy delta against Keras (points)", "",
              "| class | " + " | ".join(card["files"]) + " |", "|---|" + "---:|" * len(card["files"])]
    for name in card["class_names"]:
        cells = [f"{f['parity']['per_class'].get(name, {}).get('delta_points', 0.0):+.2f}"
                 for f in card["files"].values()]
        lines.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    lines += _micro_lines(card)
    return "\n".join(lines) + "\n"
