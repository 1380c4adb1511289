"""Training-only augmentation for detection and segmentation: the ops that move pixels move the targets too.

:func:`build` returns ``None`` when nothing is enabled, else ``fn(images, targets) -> (images, targets)`` for
``tf.data.Dataset.map`` on batches: images float32 [B, H, W, C] in [0, 255]; targets are the objects of
detection (float32 [B, M, 5] rows (class, cx, cy, w, h) normalized, class -1 on padding rows) or the masks of
segmentation (uint8 [B, H, W]).

Geometry is one affine map per image, drawn from the ``augment`` keys and applied in a single resampling:
``hflip`` / ``vflip`` (mirror), ``zoom`` (scale s in [1 - zoom, 1 + zoom] about the centre), ``translate``
(shift up to ``translate`` x the size) and ``rotation`` (up to ``rotation`` x a full turn). Pixels are
resampled bilinearly, masks by nearest neighbour, both through ``ImageProjectiveTransformV3``; what comes in
from outside the image is black pixels and background (class 0) in masks, never a reflection (a mirrored
object would carry no label). Object centres go through the same map; an object whose centre leaves the image
is dropped (class -1), its width and height are those of its rotated and scaled box's bounding box.

``contrast`` and ``brightness`` change pixels only (Keras layers, seeded). Cutout, mixup, cutmix and the
spectrogram ops have no meaning for targets and are a config error for these tasks.
"""
from __future__ import annotations

import math

from pipeline.errors import ConfigError

GEOMETRY = ("hflip", "vflip", "zoom", "translate", "rotation")
PHOTOMETRIC = ("contrast", "brightness")
UNSUPPORTED = ("cutout", "mixup", "cutmix", "time_shift", "noise", "time_mask", "freq_mask")


def check(aug_cfg, task: str) -> None:
    """Refuse the augmentations a detection or segmentation target cannot follow."""
    bad = [name for name in UNSUPPORTED if getattr(aug_cfg, name)]
    if bad:
        raise ConfigError(f"augment.{bad[0]}: not available for model.task {task} (it would blend or erase "
                          f"objects without moving their targets); use {', '.join(GEOMETRY + PHOTOMETRIC)}")


def _affine(aug_cfg, gen, b, h, w):
    """Per image: the output->input transform rows for ImageProjectiveTransformV3 [B, 8] and the forward map
    of normalized points (a 2x2 matrix [B, 2, 2] and an offset [B, 2]) in pixel units."""
    import tensorflow as tf

    one = tf.ones([b])
    sx = sy = one
    if aug_cfg.hflip:
        sx = tf.where(gen.uniform([b]) < 0.5, -one, one)
    if aug_cfg.vflip:
        sy = tf.where(gen.uniform([b]) < 0.5, -one, one)
    scale = gen.uniform([b], 1.0 - aug_cfg.zoom, 1.0 + aug_cfg.zoom) if aug_cfg.zoom else one
    angle = gen.uniform([b], -1.0, 1.0) * (2 * math.pi * aug_cfg.rotation) if aug_cfg.rotation else 0 * one
    t = aug_cfg.translate
    dx = gen.uniform([b], -t, t) * w if t else 0 * one
    dy = gen.uniform([b], -t, t) * h if t else 0 * one
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # forward, about the image centre (pixel units): p' = R S F (p - c) + c + d
    a = tf.stack([tf.stack([cos * sx, -sin * sy], -1), tf.stack([sin * sx, cos * sy], -1)], -2)  # [B, 2, 2]
    d = tf.stack([dx, dy], -1)
    inv = tf.linalg.inv(a)
    c = tf.constant([(w - 1) / 2.0, (h - 1) / 2.0])                   # pixel centres sit on integers here
    off = c - tf.linalg.matvec(inv, c + d)                            # p = inv p' + off
    rows = tf.concat([inv[:, 0, :], off[:, :1], inv[:, 1, :], off[:, 1:], tf.zeros([b, 2])], axis=1)
    return rows, a, d


def _warp(images, rows, interpolation: str):
    import tensorflow as tf

    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=rows, output_shape=shape[1:3], fill_value=0.0,
        interpolation=interpolation, fill_mode="CONSTANT")


def _move_objects(objects, a, d, h: int, w: int):
    """Objects through the forward map: centres moved, boxes replaced by the moved box's bounding box,
    objects whose centre leaves the image dropped (class -1)."""
    import tensorflow as tf

    size = tf.constant([w, h], tf.float32)
    centre = objects[..., 1:3] * size - 0.5                             # pixel units, centres on integers
    c = tf.constant([(w - 1) / 2.0, (h - 1) / 2.0])
    moved = tf.einsum("bij,bmj->bmi", a, centre - c) + c + d[:, None, :]
    half = objects[..., 3:5] * size / 2.0
    abs_a = tf.abs(a)
    half = tf.einsum("bij,bmj->bmi", abs_a, half)
    cxcy = (moved + 0.5) / size
    wh = 2.0 * half / size
    inside = tf.reduce_all((cxcy >= 0.0) & (cxcy < 1.0), axis=-1) & (objects[..., 0] >= 0)
    cls = tf.where(inside, objects[..., 0], -tf.ones_like(objects[..., 0]))
    box = tf.where(inside[..., None], tf.concat([cxcy, tf.minimum(wh, 1.0)], -1),
                   tf.zeros_like(objects[..., 1:]))
    return tf.concat([cls[..., None], box], -1)


def build(aug_cfg, task: str, seed: int):
    """The batch augmentation function for a detection or segmentation pipeline, or ``None``."""
    check(aug_cfg, task)
    geometry = [name for name in GEOMETRY if getattr(aug_cfg, name)]
    photometric = [name for name in PHOTOMETRIC if getattr(aug_cfg, name)]
    if not geometry and not photometric:
        return None
    import keras
    import tensorflow as tf

    layers = []
    if aug_cfg.contrast:
        layers.append(keras.layers.RandomContrast(aug_cfg.contrast, value_range=(0, 255), seed=seed + 4))
    if aug_cfg.brightness:
        layers.append(keras.layers.RandomBrightness(aug_cfg.brightness, value_range=(0, 255), seed=seed + 5))
    gen = tf.random.Generator.from_seed(seed)

    def fn(images, targets):
        x = tf.cast(images, tf.float32)
        h, w = int(images.shape[1]), int(images.shape[2])
        if geometry:
            rows, a, d = _affine(aug_cfg, gen, tf.shape(x)[0], h, w)
            x = _warp(x, rows, "BILINEAR")
            if task == "segment":
                masks = tf.cast(targets, tf.float32)[..., None]
                targets = tf.cast(tf.round(_warp(masks, rows, "NEAREST")[..., 0]), tf.uint8)
            else:
                targets = _move_objects(targets, a, d, h, w)
        for layer in layers:
            x = tf.cast(layer(x, training=True), tf.float32)
        return tf.ensure_shape(tf.clip_by_value(x, 0.0, 255.0), images.shape), targets

    fn.ops = geometry + photometric
    fn.generator = gen
    return fn
