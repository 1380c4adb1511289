"""Object detection as FOMO-style centroids: targets, loss, matching, metrics, parity, figure, decoding card.

Targets
-------
The model sees an ``H x W`` image and answers on a ``gh x gw`` grid (``gh = H // stride``,
``gw = W // stride``) with a softmax over ``K + 1`` channels per cell: channel 0 is background, channel
``c + 1`` object class ``c``. An object with normalised centre ``(cx, cy)`` marks the one cell that holds its
centre, row ``i = floor(cy * gh)`` and column ``j = floor(cx * gw)``, clipped into the grid (a centre at 1.0
or slightly outside still lands in the border cell). Every other cell is background. When several objects
fall in one cell the **larger** one (``w * h``) wins; equal areas go to the **later** row of the list. Rows
with class ``-1`` are padding; rows with a class outside ``0..K-1`` are dropped too (ingest validates
classes, so none should reach here).

Loss
----
Weighted categorical cross-entropy per cell, ``w(y) * -sum_k y_k log p_k``, with ``w = 1`` for a background
cell and ``w = object_weight`` for an object cell, averaged over all cells of the batch. Objects fill a few
cells out of ``gh * gw`` (2 of 144 on a 96x96 input at stride 8), so without the weight the model learns that
"always background" is nearly right; Edge Impulse's FOMO uses 100, which is our default.

Matching and metrics
--------------------
Predicted centres (``pipeline.decoding.centroids``) are matched to true centres greedily: highest score
first, each takes the nearest still-unmatched true object of the same class within ``distance`` pixels
(Euclidean, in input pixels). A match is a true positive; an unmatched prediction a false positive; an
unmatched true object a false negative. Precision ``tp / (tp + fp)``, recall ``tp / (tp + fn)`` and
F1 ``2 tp / (2 tp + fp + fn)`` are computed from these counts (0 when a denominator is 0). They are plain
counts rather than sklearn calls because a false positive has no true label to pair with, nor a false
negative a predicted one: sklearn's paired ``y_true / y_pred`` does not fit. Micro averages sum the counts
over classes; ``macro_f1`` is the mean F1 over classes that have true objects or predictions (a class absent
from both says nothing and is left out).
"""
from __future__ import annotations


import numpy as np

from pipeline import decoding
from pipeline.heads.figures import detections as figure  # noqa: F401  (the task's figure, drawn there)

DEFAULT_OBJECT_WEIGHT = 100.0
_LOSS_CLASS = None


# ---------------------------------------------------------------------------------------------- targets
def encode(objects, image_hw, stride: int, num_classes: int, boxes: bool = False):
    """float32 one-hot targets [B, gh, gw, K+1] from padded objects [B, M, 5] (class, cx, cy, w, h).

    TensorFlow ops only, so it runs inside ``tf.data.Dataset.map``; an unbatched [M, 5] gives [gh, gw, K+1].
    ``boxes`` appends per cell the box of the object that owns it, (ox, oy, w, h): the centre's offset within
    the cell (0..1) and the size as a share of the image; zeros on background cells.
    """
    import tensorflow as tf

    objects = tf.convert_to_tensor(objects, dtype=tf.float32)
    if objects.shape.rank == 2:  # one example, [M, 5]
        return encode(objects[tf.newaxis], image_hw, stride, num_classes, boxes)[0]
    gh, gw = int(image_hw[0]) // int(stride), int(image_hw[1]) // int(stride)
    cls = tf.cast(tf.round(objects[..., 0]), tf.int32)                            # [B, M]
    row = tf.clip_by_value(tf.cast(tf.floor(objects[..., 2] * gh), tf.int32), 0, gh - 1)
    col = tf.clip_by_value(tf.cast(tf.floor(objects[..., 1] * gw), tf.int32), 0, gw - 1)
    valid = (cls >= 0) & (cls < num_classes)
    cell = tf.where(valid, row * gw + col, -1)                                      # [B, M]
    member = tf.equal(cell[..., tf.newaxis], tf.range(gh * gw, dtype=tf.int32))     # [B, M, G]
    area = objects[..., 3] * objects[..., 4]
    area = tf.where(member, area[..., tf.newaxis], -1.0)
    largest = member & tf.equal(area, tf.reduce_max(area, axis=1, keepdims=True))   # the larger object...
    index = tf.range(tf.shape(objects)[1], dtype=tf.int32)[tf.newaxis, :, tf.newaxis]
    winner = tf.reduce_max(tf.where(largest, index, -1), axis=1)                     # ...then the later one
    chosen = tf.equal(index, winner[:, tf.newaxis, :])              # [B, M, G]; no gather, so M = 0 works
    label = tf.reduce_sum(tf.where(chosen, cls[..., tf.newaxis] + 1, 0), axis=1)     # [B, G], 0 = background
    onehot = tf.one_hot(label, num_classes + 1, dtype=tf.float32)
    onehot = tf.reshape(onehot, [-1, gh, gw, num_classes + 1])
    if not boxes:
        return onehot
    values = tf.stack([objects[..., 1] * gw - tf.cast(col, tf.float32),
                       objects[..., 2] * gh - tf.cast(row, tf.float32),
                       objects[..., 3], objects[..., 4]], axis=-1)                   # [B, M, 4]
    values = tf.clip_by_value(values, 0.0, 1.0)
    box = tf.reduce_sum(tf.where(chosen[..., tf.newaxis], values[:, :, tf.newaxis, :], 0.0),
                        axis=1)                                                      # [B, G, 4]
    return tf.concat([onehot, tf.reshape(box, [-1, gh, gw, 4])], axis=-1)


# ---------------------------------------------------------------------------------------------- loss
def loss_class():
    """The registered Keras loss class ``cnnpipe>DetectionLoss``, built (and registered) on first use so that
    importing this module does not import Keras. Call it (or ``custom_objects``) before loading a model
    compiled with it."""
    global _LOSS_CLASS
    if _LOSS_CLASS is None:
        _LOSS_CLASS = _define_loss()
    return _LOSS_CLASS


def _define_loss():
    import keras

    @keras.saving.register_keras_serializable(package="cnnpipe", name="DetectionLoss")
    class DetectionLoss(keras.losses.Loss):
        """Cell-wise categorical cross-entropy, object cells weighted ``object_weight``, mean over cells."""

        def __init__(self, num_classes: int, object_weight: float = DEFAULT_OBJECT_WEIGHT,
                     boxes: bool = False, name: str = "fomo_loss", reduction="sum_over_batch_size",
                     dtype=None):
            super().__init__(name=name, reduction=reduction, dtype=dtype)
            self.num_classes = int(num_classes)
            self.object_weight = float(object_weight)
            self.boxes = bool(boxes)

        def call(self, y_true, y_pred):
            ops = keras.ops
            y_pred = ops.convert_to_tensor(y_pred)
            y_true = ops.cast(y_true, y_pred.dtype)
            k = self.num_classes + 1
            weights = ops.convert_to_tensor([1.0] + [self.object_weight] * self.num_classes,
                                            dtype=y_pred.dtype)
            eps = keras.config.epsilon()
            p, t = y_pred[..., :k], y_true[..., :k]
            cross_entropy = -ops.sum(t * ops.log(ops.clip(p, eps, 1.0 - eps)), axis=-1)
            out = cross_entropy * ops.sum(t * weights, axis=-1)
            if self.boxes:  # L1 of the box channels on object cells, weighted like their classes
                error = ops.sum(ops.abs(y_true[..., k:] - y_pred[..., k:]), axis=-1)
                out = out + self.object_weight * (1.0 - t[..., 0]) * error
            return out

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes,
                    "object_weight": self.object_weight, "boxes": self.boxes}

    return DetectionLoss


def loss(num_classes: int, object_weight: float = DEFAULT_OBJECT_WEIGHT, boxes: bool = False):
    """A ``DetectionLoss`` instance for ``model.compile(loss=...)`` (``boxes``: also the L1 box term)."""
    return loss_class()(num_classes=num_classes, object_weight=object_weight, boxes=boxes)


def box_iou(truth: list, outputs: np.ndarray, image_hw) -> dict:
    """How well the box channels fit: for every true object, the IoU of its true box with the box decoded
    at the cell holding its centre (whatever that cell's class scores say). ``{"mean_box_iou", "boxes"}``."""
    gh, gw = outputs.shape[1:3]
    ious = []
    for rows, out in zip(truth, outputs):
        for _, cx, cy, w, h in np.asarray(rows, np.float64).reshape(-1, 5):
            i, j = min(gh - 1, int(cy * gh)), min(gw - 1, int(cx * gw))
            ox, oy, pw, ph = (float(v) for v in out[i, j, -decoding.BOX_CHANNELS:])
            px, py = (j + ox) / gw, (i + oy) / gh
            ix = max(0.0, min(cx + w / 2, px + pw / 2) - max(cx - w / 2, px - pw / 2))
            iy = max(0.0, min(cy + h / 2, py + ph / 2) - max(cy - h / 2, py - ph / 2))
            union = w * h + pw * ph - ix * iy
            ious.append(ix * iy / union if union > 0 else 0.0)
    return {"mean_box_iou": round(float(np.mean(ious)), 6) if ious else None, "boxes": len(ious)}


def custom_objects() -> dict:
    """``{"cnnpipe>DetectionLoss": class}`` for ``keras.models.load_model(..., custom_objects=...)``."""
    return {"cnnpipe>DetectionLoss": loss_class()}


def __getattr__(name):  # ``detect.Loss`` builds the class lazily
    if name == "Loss":
        return loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- matching
def true_centres(truth, image_hw) -> tuple[np.ndarray, np.ndarray]:
    """(classes int [n], centres [n, 2] as (x, y) input pixels) of one image's truth rows
    (class, cx, cy, w, h); padding rows (class < 0) are dropped."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 5)
    truth = truth[truth[:, 0] >= 0]
    centres = np.stack([truth[:, 1] * float(image_hw[1]), truth[:, 2] * float(image_hw[0])], axis=1)
    return np.rint(truth[:, 0]).astype(int), centres


def match(truth, found: list[dict], image_hw, distance: float, num_classes: int | None = None):
    """Greedy matching of one image: (tp, fp, fn), int arrays [K] indexed by class.

    ``num_classes`` defaults to one more than the largest class seen in ``truth`` or ``found``.
    """
    classes, centres = true_centres(truth, image_hw)
    if num_classes is None:
        num_classes = 1 + max([-1] + classes.tolist() + [int(o["class"]) for o in found])
    tp, fp, fn = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
    taken = np.zeros(len(classes), dtype=bool)
    for obj in sorted(found, key=lambda o: -float(o["score"])):
        c = int(obj["class"])
        gap = np.hypot(centres[:, 0] - float(obj["x"]), centres[:, 1] - float(obj["y"]))
        gap[(classes != c) | taken | (gap > distance)] = np.inf
        if len(gap) and np.isfinite(gap.min()):
            taken[int(gap.argmin())] = True
            tp[c] += 1
        else:
            fp[c] += 1
    np.add.at(fn, classes[~taken], 1)
    return tp, fp, fn


def _ratio(num, den) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def scores(tp, fp, fn) -> dict:
    """precision, recall, f1 (arrays, or floats for scalar counts) from counts; 0 where undefined."""
    precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1}


class Accumulator:
    """Streaming detection counts: ``add`` batch after batch, then ``result`` - the test split need not be
    held in memory."""

    def __init__(self, num_classes: int, image_hw, threshold: float = 0.5, distance: float = 8.0):
        self.num_classes, self.image_hw = int(num_classes), tuple(image_hw)
        self.threshold, self.distance = float(threshold), float(distance)
        self.tp, self.fp, self.fn = (np.zeros(self.num_classes, dtype=np.int64) for _ in range(3))
        self.n_test = self.n_objects = self.background_only = 0

    def add(self, truth_batch, probs_batch) -> None:
        """``truth_batch``: a list (or padded array) of [n, 5] rows per image;
        ``probs_batch`` [B, gh, gw, K+1]."""
        probs_batch = np.asarray(probs_batch)
        if len(truth_batch) != len(probs_batch):
            raise ValueError(f"{len(truth_batch)} truth entries for {len(probs_batch)} outputs")
        for truth, probs in zip(truth_batch, probs_batch):
            found = decoding.centroids(probs, self.image_hw, self.threshold)
            tp, fp, fn = match(truth, found, self.image_hw, self.distance, self.num_classes)
            self.tp += tp
            self.fp += fp
            self.fn += fn
            support = int((tp + fn).sum())
            self.n_objects += support
            self.background_only += support == 0
            self.n_test += 1

    def result(self, class_names) -> dict:
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        per = scores(self.tp, self.fp, self.fn)
        micro = scores(self.tp.sum(), self.fp.sum(), self.fn.sum())
        seen = (self.tp + self.fp + self.fn) > 0
        per_class = {name: {"precision": round(float(per["precision"][k]), 6),
                            "recall": round(float(per["recall"][k]), 6),
                            "f1": round(float(per["f1"][k]), 6),
                            "support": int(self.tp[k] + self.fn[k]),
                            "predicted": int(self.tp[k] + self.fp[k])}
                     for k, name in enumerate(class_names)}
        return {
            "task": "detect",
            "f1": round(float(micro["f1"]), 6),
            "precision": round(float(micro["precision"]), 6),
            "recall": round(float(micro["recall"]), 6),
            "macro_f1": round(float(per["f1"][seen].mean()) if seen.any() else 0.0, 6),
            "per_class": per_class,
            "n_test": int(self.n_test),
            "n_objects": int(self.n_objects),
            "background_only_images": int(self.background_only),
            "threshold": self.threshold,
            "match_distance_px": self.distance,
            "class_names": list(class_names),
        }


def metrics(truth, probs, class_names, image_hw, threshold: float = 0.5, distance: float = 8.0) -> dict:
    """JSON-ready test metrics of detection outputs ``probs`` [N, gh, gw, K+1] against ``truth`` (N arrays
    [n, 5]); see the module docstring for the rules."""
    acc = Accumulator(len(class_names), image_hw, threshold, distance)
    acc.add(truth, probs)
    return acc.result(class_names)


# ---------------------------------------------------------------------------------------------- parity
def parity(ref_probs, probs, truth, class_names, image_hw, threshold: float = 0.5,
           distance: float = 8.0) -> dict:
    """F1 of a converted file's outputs ``probs`` against the Keras outputs ``ref_probs`` on the same images.

    ``drop_points`` = 100 * (Keras F1 - file F1): positive when the file is worse. ``per_class`` (classes with
    true objects): the file's F1 and ``delta_points`` = 100 * (file - Keras), negative when worse.
    ``changed``: share of cells whose decoded class (``decoding.object_cells``, background = -1) differs.
    """
    ref_probs, probs = np.asarray(ref_probs, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if ref_probs.shape != probs.shape:
        raise ValueError(f"outputs differ in shape: {ref_probs.shape} vs {probs.shape}")
    ours = metrics(truth, probs, class_names, image_hw, threshold, distance)
    ref = metrics(truth, ref_probs, class_names, image_hw, threshold, distance)
    per_class = {}
    for name in class_names:
        if ours["per_class"][name]["support"]:
            value, keras_value = ours["per_class"][name]["f1"], ref["per_class"][name]["f1"]
            per_class[name] = {"value": value, "delta_points": round(100 * (value - keras_value), 4)}
    changed = [(decoding.object_cells(a, threshold) != decoding.object_cells(b, threshold)).mean()
               for a, b in zip(ref_probs, probs)]
    from pipeline.heads import parity_record

    return parity_record("f1", ours["f1"], ref["f1"], per_class, probs, ref_probs,
                         float(np.mean(changed)) if changed else 0.0)


# ---------------------------------------------------------------------------------------------- model card
def decoding_params(image_hw, stride: int, threshold: float, class_names, connectivity: int = 4,
                    boxes: bool = False) -> dict:
    """What a device needs to turn the output tensor into objects (``pipeline.decoding.centroids``; with
    ``boxes``, ``pipeline.decoding.with_boxes``)."""
    height, width = int(image_hw[0]), int(image_hw[1])
    gh, gw = height // int(stride), width // int(stride)
    out = _centroid_params(height, width, gh, gw, stride, threshold, class_names, connectivity)
    if boxes:
        k = len(class_names) + 1
        out.update(method="fomo_centroids_boxes", boxes=True,
                   output_shape=[1, gh, gw, k + decoding.BOX_CHANNELS],
                   box_channels={"ox": k, "oy": k + 1, "w": k + 2, "h": k + 3},
                   box=f"from the cell (i, j) holding the object's centre: centre ((j + ox) * {width} / "
                       f"{gw}, (i + oy) * {height} / {gh}), size (w * {width}, h * {height}); sigmoid "
                       f"outputs 0..1")
    return out


def _centroid_params(height, width, gh, gw, stride, threshold, class_names, connectivity) -> dict:
    return {
        "task": "detect",
        "method": "fomo_centroids",
        "input_hw": [height, width],
        "output_shape": [1, gh, gw, len(class_names) + 1],
        "grid_hw": [gh, gw],
        "stride": int(stride),
        "background_channel": 0,
        "class_channels": {name: k + 1 for k, name in enumerate(class_names)},
        "class_names": list(class_names),
        "threshold": float(threshold),
        "connectivity": int(connectivity),
        "dequantize": "int8/uint8 output: p = scale * (q - zero_point) with the output tensor's quantization",
        "object_cell": "argmax over channels is c+1 (c >= 0) and that probability >= threshold; "
                       "ties go to the lower channel",
        "grouping": f"{connectivity}-connected object cells of the same class form one object",
        "x": f"probability-weighted mean over the group's cells of (j + 0.5) * {width} / {gw} (column j)",
        "y": f"probability-weighted mean over the group's cells of (i + 0.5) * {height} / {gh} (row i)",
        "score": "largest class probability in the group",
    }
