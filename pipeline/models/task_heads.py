"""The output ends of detection and segmentation models, planned on the backbone of the layer spec.

- ``detect`` (FOMO-style centroids): the backbone is cut after its last layer at output stride
  ``detect.stride`` (8: a 96x96 image gives a 12x12 grid); a 1x1 convolution gives per cell K + 1 scores
  (background first, then the classes) and a softmax over them. With ``detect.boxes`` a second 1x1
  convolution gives 4 sigmoid box channels (centre offset in the cell, width and height as shares of the
  image), concatenated after the scores. Nothing but builtin int8 ops.
- ``segment`` (a tiny U-Net): the layer spec is the encoder; at every resolution it went through, the last
  layer there is kept as a skip. From the deepest layer back up, each step is a transpose convolution to the
  next skip's size, a concatenation with the skip and a 3x3 convolution, batch norm and ReLU (filters: the
  skip's channels, at least 8); at the input's resolution the skip is the rescaled image itself. A 1x1
  convolution and a per-pixel softmax over the K classes end it.

A preset (written for classification) loses its head (global pooling, flatten, dropout, dense) here; a user's
``model.layers`` must not have one: that is a config error naming the block.
"""
from __future__ import annotations

import math

from pipeline.errors import ConfigError
from pipeline.models.spec import Op

SPATIAL_END = ("global_pool", "flatten", "dense")


def _spatial(op: Op) -> bool:
    return len(op.out_shape) == 3


def trunk(p, from_preset: bool, where: str) -> list:
    """The ops up to the last one with a spatial output (a preset's classification head dropped)."""
    ops = p.ops
    end = next((i for i, op in enumerate(ops) if op.kind in SPATIAL_END or not _spatial(op)), len(ops))
    if end < len(ops) and not from_preset:
        op = ops[end]
        raise ConfigError(f"{op.block}: a {op.kind} block flattens the feature map; a detection or "
                          f"segmentation model is convolutional to its end (the task adds its own head): "
                          f"remove it")
    if end <= 1:
        raise ConfigError(f"{where}: no convolutional layer to build on")
    p.ops = ops[:end]
    return p.ops


def _pending(ops: list, skips: list) -> None:
    """Mark every op between a skip and its concatenation as holding the skip's elements alive."""
    for skip, concat in skips:
        size = math.prod(skip.out_shape)
        start, stop = ops.index(skip), ops.index(concat)
        for op in ops[start + 1:stop]:
            op.held += size


def detect(p, stride: int, num_classes: int, from_preset: bool, where: str, boxes: bool = False) -> None:
    """Cut the trunk at output stride ``stride``; add the 1x1 class-score layer and the softmax (``boxes``:
    beside it a 1x1 layer of 4 sigmoid box channels, concatenated after the scores)."""
    ops = trunk(p, from_preset, where)
    at = [i for i, op in enumerate(ops) if op.jump and all(j == stride for j in op.jump)]
    if not at:
        reached = sorted({op.jump[0] for op in ops if op.jump})
        raise ConfigError(f"{where}: model.task detect cuts the backbone at stride {stride} (detect.stride), "
                          f"but its layers reach strides {reached}; add pooling or strided convolutions")
    cut = ops[at[-1]]
    h, w = ops[0].in_shape[:2]
    if h % stride or w % stride:
        raise ConfigError(f"data.image_size: {h}x{w} is not a multiple of detect.stride {stride}; "
                          f"the grid cells must tile the image")
    p.ops = ops[:at[-1] + 1]
    scores = p.block("conv", {"filters": num_classes + 1, "kernel": (1, 1), "stride": (1, 1),
                              "padding": "same", "bias": True}, cut, "detection head", "cell_scores", 0)
    probs = p.add(Op("probs", "softmax", "detection head", {}, [scores.name], scores.out_shape,
                     scores.out_shape, rf=scores.rf, jump=scores.jump))
    if not boxes:
        return
    box = p.block("conv", {"filters": 4, "kernel": (1, 1), "stride": (1, 1), "padding": "same", "bias": True},
                  cut, "detection head", "box", 0)
    box = p.block("activation", {"name": "sigmoid"}, box, "detection head", "box_sigmoid", 0)
    shape = (*scores.out_shape[:2], num_classes + 1 + 4)
    p.add(Op("outputs", "concat", "detection head", {}, [probs.name, box.name], probs.out_shape, shape,
             rf=scores.rf, jump=scores.jump, held=math.prod(probs.out_shape)))


def _levels(ops: list) -> list:
    """The last op at each output stride, from the input's resolution down (the skips of the U-Net)."""
    last = {}
    for op in ops:
        if _spatial(op) and op.jump:
            last[op.jump] = op
    return [last[j] for j in sorted(last, key=lambda j: j[0])]


def segment(p, num_classes: int, from_preset: bool, where: str) -> None:
    """The U-Net decoder over the trunk's resolutions and the per-pixel softmax."""
    ops = trunk(p, from_preset, where)
    levels = _levels(ops)
    prev, skips = ops[-1], []
    for k, skip in enumerate(reversed(levels[:-1])):
        ratio = tuple(a // b for a, b in zip(prev.jump, skip.jump))
        filters = max(8, skip.out_shape[-1]) if skip.kind != "rescale" else 8
        name = f"up{k}"
        up = p.add(Op(f"{name}_transpose", "transpose_conv", "segmentation decoder",
                      {"filters": filters, "kernel": tuple(max(2, r) for r in ratio), "stride": ratio},
                      [prev.name], prev.out_shape, (*skip.out_shape[:2], filters),
                      params=math.prod(max(2, r) for r in ratio) * prev.out_shape[-1] * filters + filters,
                      macs=math.prod(prev.out_shape[:2]) * math.prod(max(2, r) for r in ratio)
                      * prev.out_shape[-1] * filters, rf=prev.rf, jump=skip.jump))
        c = filters + skip.out_shape[-1]
        cat = p.add(Op(f"{name}_concat", "concat", "segmentation decoder", {}, [up.name, skip.name],
                       up.out_shape, (*skip.out_shape[:2], c), rf=up.rf, jump=skip.jump))
        skips.append((skip, cat))
        conv = p.block("conv", {"filters": filters, "kernel": (3, 3), "stride": (1, 1), "padding": "same",
                                "bias": False}, cat, "segmentation decoder", f"{name}_conv", 0)
        bn = p.block("bn", {"momentum": 0.99}, conv, "segmentation decoder", f"{name}_bn", 0)
        prev = p.block("relu", {}, bn, "segmentation decoder", f"{name}_relu", 0)
    scores = p.block("conv", {"filters": num_classes, "kernel": (1, 1), "stride": (1, 1), "padding": "same",
                              "bias": True}, prev, "segmentation head", "pixel_scores", 0)
    p.add(Op("probs", "softmax", "segmentation head", {}, [scores.name], scores.out_shape, scores.out_shape,
             rf=scores.rf, jump=scores.jump))
    _pending(p.ops, skips)
