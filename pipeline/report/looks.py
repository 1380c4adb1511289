"""What the report computes from the model and the data: sample images, the test split run through the Keras
model and the int8 file (mistakes, changed labels), first-layer filters, feature maps and latency.

The test split is streamed batch by batch; only the images the galleries show are kept.
"""
from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np

from pipeline import data
from pipeline.report import figures

CONV = ("Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "SeparableConv1D")


def samples(data_dir: Path, meta: dict, per_class: int = 8, max_classes: int = 40,
            batch_size: int = 512) -> list:
    """[{name, png}]: the first ``per_class`` training images of each class as one montage row, read from the
    start of the train shards until every class shown has them (or the split ends)."""
    names = meta["class_names"][:max_classes]
    found = {k: [] for k in range(len(names))}
    for images, labels in data.split_dataset(data_dir, "train", meta).batch(batch_size).as_numpy_iterator():
        for image, label in zip(images, labels):
            if int(label) in found and len(found[int(label)]) < per_class:
                found[int(label)].append(image)
        if all(len(v) >= per_class for v in found.values()):
            break
    if not any(found.values()):
        return []
    return [{"name": name, "png": figures.montage(found[k]) if found[k] else None}
            for k, name in enumerate(names)]


def _fit_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale data for a file that takes RGB (``export.rgb_input``): the channel repeated."""
    if images.shape[-1] == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    return images


def test_pass(model, data_dir: Path, meta: dict, int8_path: Path | None = None, keep: int = 24,
              batch_size: int = 256, flip_average: bool = False) -> dict:
    """Run the test split through the Keras model (and the int8 file when given): the ``keep`` most
    confident mistakes and the first ``keep`` images whose top-1 label the int8 file changes.
    ``flip_average``: the int8 file averages each image with its mirror image (export.flip_average), so its
    labels are compared with the Keras model's averaged the same way."""
    from pipeline import edge

    names = meta["class_names"]
    runner = edge.EdgeModel(int8_path) if int8_path is not None else None
    mistakes, changed, first = [], [], None
    n = n_wrong = n_changed = n_int8_right = 0
    for images, labels in data.split_dataset(data_dir, "test", meta).batch(batch_size).as_numpy_iterator():
        probs = np.asarray(model(images.astype(np.float32), training=False))  # eager: no retracing
        pred = probs.argmax(1)
        qprobs = runner.predict(_fit_channels(images, runner.image_shape[-1])) if runner else None
        if first is None:
            first = images[0]
        for i in np.flatnonzero(pred != labels):
            item = (float(probs[i, pred[i]]), n + int(i), images[i], int(labels[i]), int(pred[i]),
                    float(probs[i, labels[i]]))
            (heapq.heappush if len(mistakes) < keep else heapq.heappushpop)(mistakes, item)
        n_wrong += int((pred != labels).sum())
        if qprobs is not None:
            if flip_average:  # the Keras outputs the file's are measured against
                probs = (probs + np.asarray(model(images[:, :, ::-1].astype(np.float32), training=False))) / 2
                pred = probs.argmax(1)
            qpred = qprobs.argmax(1)
            n_int8_right += int((qpred == labels).sum())
            for i in np.flatnonzero(qpred != pred):
                if len(changed) < keep:
                    changed.append({"png": figures.image(images[i]), "index": n + int(i),
                                    "true": names[int(labels[i])],
                                    "float": names[int(pred[i])], "float_score": float(probs[i, pred[i]]),
                                    "int8": names[int(qpred[i])], "int8_score": float(qprobs[i, qpred[i]]),
                                    "int8_right": bool(qpred[i] == labels[i]),
                                    "float_right": bool(pred[i] == labels[i])})
            n_changed += int((qpred != pred).sum())
        n += len(labels)
    mistakes = [{"png": figures.image(img), "index": idx, "true": names[t], "pred": names[p], "score": s,
                 "true_score": ts} for s, idx, img, t, p, ts in sorted(mistakes, key=lambda m: (-m[0], m[1]))]
    return {"n": n, "wrong": n_wrong, "mistakes": mistakes, "changed": changed, "n_changed": n_changed,
            "int8": runner is not None, "int8_accuracy": n_int8_right / n if runner and n else None,
            "first_image": first}


def conv_blocks(model) -> list:
    """[(first conv layer, last layer of its block)]: a block runs from a convolution up to the next one,
    or to the last layer that still has a spatial output."""
    blocks, current = [], None
    for layer in model.layers:
        if type(layer).__name__ in CONV:
            if current:
                blocks.append(tuple(current))
            current = [layer, layer]
        elif current is not None:
            if len(layer.output.shape) >= 3:
                current[1] = layer
            else:
                blocks.append(tuple(current))
                current = None
    if current:
        blocks.append(tuple(current))
    return blocks


def filters(model, limit: int = 64) -> dict | None:
    """The first convolution's learned kernels as one montage; None when the model has no convolution."""
    blocks = conv_blocks(model)
    if not blocks:
        return None
    layer = blocks[0][0]
    kernel = np.asarray(layer.get_weights()[0], np.float32)
    if kernel.ndim == 3:  # Conv1D [k, in, out]: a one-row image per filter
        kernel = kernel[None]
    if type(layer).__name__.startswith(("Depthwise", "Separable")):  # [kh, kw, in, mult]: one per channel
        kernel = kernel.reshape(*kernel.shape[:2], 1, -1)
    tiles = figures.filter_tiles(kernel, limit)
    return {"layer": layer.name, "shape": list(kernel.shape), "shown": len(tiles),
            "total": int(kernel.shape[-1]),
            "png": figures.montage(tiles, cols=min(16, len(tiles)), tile=40, gap=6, background=150)}


def feature_maps(model, image: np.ndarray, limit: int = 16, max_blocks: int = 8) -> list:
    """[{layer, shape, png}]: one test image's activations after each convolution block (first ``limit``
    channels of each)."""
    import keras

    blocks = conv_blocks(model)[:max_blocks]
    if not blocks or image is None:
        return []
    probe = keras.Model(model.inputs[0], [end.output for _, end in blocks])
    outs = probe(np.asarray(image, np.float32)[None], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    rows = []
    for (start, end), out in zip(blocks, outs):
        maps = np.asarray(out)[0]
        if maps.ndim == 2:  # a sequence [length, channels]
            maps = maps[None]
        tiles = figures.map_tiles(maps, limit)
        rows.append({"layer": f"{start.name} .. {end.name}" if end is not start else start.name,
                     "shape": list(maps.shape), "shown": len(tiles),
                     "png": figures.montage(tiles, cols=min(8, len(tiles)))})
    return rows


def latency(card: dict, folder: Path, runs: int = 30) -> list:
    """Batch-1 LiteRT latency, one thread, of every file the card lists that is in ``folder``."""
    from pipeline import edge

    rows = []
    for fmt, f in (card.get("files") or {}).items():
        path = Path(folder) / f["file"]
        if path.is_file() and runs > 0:
            b = edge.bench(path, runs=runs, warmup=5, num_threads=1)
            rows.append({"fmt": fmt, "file": f["file"], "runs": b["runs"], "mean_ms": b["mean_ms"],
                         "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"], "init_ms": b["init_ms"]})
    return rows
