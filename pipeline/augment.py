"""Training-only augmentation, built from the ``augment`` config section.

:func:`build` returns ``None`` when nothing is enabled, else ``fn(images, labels) -> (images, labels)`` for
``tf.data.Dataset.map`` on *batches*: images float32 [B, H, W, C] in [0, 255], labels one-hot float32 [B, K].
Output images keep shape, dtype and range; labels stay rows that sum to 1.

Order: geometric and photometric ops (Keras 3 preprocessing layers, per image, seeded; empty borders filled by
reflection) -> cutout -> mixup / cutmix (with the label mixing they need; when both are on, each image gets
one of the two at random). Each op runs only when its config value is non-zero / true:

=========== ==================================================================================================
hflip       keras.layers.RandomFlip("horizontal")
vflip       keras.layers.RandomFlip("vertical")
rotation    keras.layers.RandomRotation(rotation)            -- fraction of a full turn, both directions
zoom        keras.layers.RandomZoom((-zoom, zoom))           -- zoom in and out, aspect kept
translate   keras.layers.RandomTranslation(translate, translate)
contrast    keras.layers.RandomContrast(contrast, value_range=(0, 255))
brightness  keras.layers.RandomBrightness(brightness, value_range=(0, 255))
cutout      one square of side ``cutout`` x min(H, W) per image, at a random centre (it may stick out of the
            image), filled with the image's mean colour (DeVries & Taylor 2017)
mixup       x = l x_i + (1 - l) x_j, y likewise, l ~ Beta(mixup, mixup) per image (Zhang et al. 2018)
cutmix      a box of area (1 - l) from x_j pasted into x_i, l ~ Beta(cutmix, cutmix) per image and then set
            to the kept area; y = l y_i + (1 - l) y_j (Yun et al. 2019)
=========== ==================================================================================================

Spectrograms (``audio:`` sources: rows are frames, columns mel bands, pixels dB on the fixed scale of
:mod:`pipeline.audio`) have four more, run after the Keras layers and before cutout:

=========== ==================================================================================================
time_shift  shift each clip by up to ``time_shift`` x frames, earlier or later; silence (0) fills the gap
noise       with probability ``noise`` per clip, add background noise power: a level of -80..-30 dB, a random
            spectral tilt and exponentially distributed power per cell, summed with the clip's power
            (pixel' = log-sum of both on the dB scale), as recording in a noisy room would
time_mask   SpecAugment (Park et al. 2019): up to ``time_mask`` consecutive frames set to the clip's mean
freq_mask   SpecAugment: up to ``freq_mask`` consecutive mel bands set to the clip's mean
=========== ==================================================================================================

The partner ``j`` is a random permutation of the batch. Random numbers come from the layers' seeds and one
``tf.random.Generator`` seeded with ``seed``, so a fresh ``build`` with the same seed gives the same sequence.
"""
from __future__ import annotations

OPS = ("hflip", "vflip", "rotation", "zoom", "translate", "contrast", "brightness",
       "time_shift", "noise", "time_mask", "freq_mask", "cutout", "mixup", "cutmix")


def enabled(aug_cfg) -> list:
    """Names of the ops the config turns on, in the order they run."""
    return [name for name in OPS if getattr(aug_cfg, name)]


def _keras_layers(aug_cfg, seed: int) -> list:
    import keras

    L = keras.layers
    layers = []
    flip = {(True, False): "horizontal", (False, True): "vertical", (True, True): "horizontal_and_vertical"}
    mode = flip.get((bool(aug_cfg.hflip), bool(aug_cfg.vflip)))
    if mode:
        layers.append(L.RandomFlip(mode, seed=seed))
    if aug_cfg.rotation:
        layers.append(L.RandomRotation(aug_cfg.rotation, seed=seed + 1))
    if aug_cfg.zoom:
        layers.append(L.RandomZoom((-aug_cfg.zoom, aug_cfg.zoom), seed=seed + 2))
    if aug_cfg.translate:
        layers.append(L.RandomTranslation(aug_cfg.translate, aug_cfg.translate, seed=seed + 3))
    if aug_cfg.contrast:
        layers.append(L.RandomContrast(aug_cfg.contrast, value_range=(0, 255), seed=seed + 4))
    if aug_cfg.brightness:
        layers.append(L.RandomBrightness(aug_cfg.brightness, value_range=(0, 255), seed=seed + 5))
    return layers


def _box_mask(shape, centre_y, centre_x, half_h, half_w):
    """Boolean [B, H, W, 1]: inside the box of each image (centre and half sides are [B] tensors)."""
    import tensorflow as tf

    h, w = shape[1], shape[2]
    ys = tf.range(h, dtype=tf.float32)[None, :, None]
    xs = tf.range(w, dtype=tf.float32)[None, None, :]
    cy, cx = centre_y[:, None, None], centre_x[:, None, None]
    hh, hw = half_h[:, None, None], half_w[:, None, None]
    # half-open pixel ranges [y0, y0 + side): exactly round(side) rows and columns, odd or even
    y0, x0 = tf.floor(cy - hh), tf.floor(cx - hw)
    inside = (ys >= y0) & (ys < y0 + tf.round(2 * hh)) & (xs >= x0) & (xs < x0 + tf.round(2 * hw))
    return inside[..., None]


def _cutout(images, fraction: float, gen):
    import tensorflow as tf

    shape = tf.shape(images)
    b, h, w = shape[0], tf.cast(shape[1], tf.float32), shape[2]
    w = tf.cast(w, tf.float32)
    half = tf.fill([b], fraction * tf.minimum(h, w) / 2.0)
    cy = gen.uniform([b], 0.0, h)
    cx = gen.uniform([b], 0.0, w)
    mask = _box_mask(shape, tf.floor(cy) + 0.5, tf.floor(cx) + 0.5, half, half)
    fill = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(mask, fill, images)


def _time_shift(images, fraction: float, gen):
    """Shift rows (frames) by a random whole number in [-fraction H, fraction H]; zeros come in."""
    import tensorflow as tf

    shape = tf.shape(images)
    b, h = shape[0], shape[1]
    most = tf.cast(tf.round(fraction * tf.cast(h, tf.float32)), tf.int32)
    shift = tf.cast(tf.floor(gen.uniform([b], 0.0, 1.0) * tf.cast(2 * most + 1, tf.float32)), tf.int32) - most
    src = tf.range(h)[None, :] - shift[:, None]                       # [B, H]: the row each output row reads
    valid = (src >= 0) & (src < h)
    moved = tf.gather(images, tf.clip_by_value(src, 0, h - 1), axis=1, batch_dims=1)
    return tf.where(valid[:, :, None, None], moved, tf.zeros_like(moved))


def _noise(images, share: float, gen):
    """Mix background noise power into dB-scaled pixels (see the module doc)."""
    import math

    import tensorflow as tf

    from pipeline.audio import DB_RANGE

    shape = tf.shape(images)
    b, w = shape[0], shape[2]
    per_decade = 255.0 * 10.0 / (DB_RANGE[1] - DB_RANGE[0])           # pixels per factor 10 of power
    level_db = gen.uniform([b], -80.0, -30.0)
    tilt_db = gen.uniform([b], -20.0, 10.0)                            # from the lowest band to the highest
    band = tf.cast(tf.range(w), tf.float32) / tf.maximum(tf.cast(w - 1, tf.float32), 1.0)
    cell_db = 10.0 * tf.math.log(-tf.math.log(gen.uniform(shape, 1e-6, 1.0))) / math.log(10.0)
    noise_db = (level_db[:, None, None, None] + tilt_db[:, None, None, None] * band[None, None, :, None]
                + cell_db)
    noise_px = (noise_db - DB_RANGE[0]) * (255.0 / (DB_RANGE[1] - DB_RANGE[0]))
    k = math.log(10.0) / per_decade
    mixed = tf.reduce_logsumexp(tf.stack([images * k, noise_px * k]), axis=0) / k
    pick = gen.uniform([b]) < share
    return tf.where(pick[:, None, None, None], tf.clip_by_value(mixed, 0.0, 255.0), images)


def _band_mask(images, most: int, axis: int, gen):
    """SpecAugment: a run of 0..most rows (axis 1) or columns (axis 2) per image set to its mean."""
    import tensorflow as tf

    shape = tf.shape(images)
    b, size = shape[0], tf.cast(shape[axis], tf.float32)
    width = tf.floor(gen.uniform([b], 0.0, float(most) + 1.0))
    width = tf.minimum(width, size)
    start = tf.floor(gen.uniform([b], 0.0, 1.0) * (size - width + 1.0))
    pos = tf.cast(tf.range(shape[axis]), tf.float32)[None, :]
    inside = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # [B, size]
    inside = inside[:, :, None, None] if axis == 1 else inside[:, None, :, None]
    fill = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(inside, fill, images)


def _beta(gen, n, alpha: float):
    """n samples of Beta(alpha, alpha) from two stateless gamma draws."""
    import tensorflow as tf

    seeds = gen.make_seeds(2)
    g1 = tf.random.stateless_gamma([n], seed=seeds[:, 0], alpha=alpha)
    g2 = tf.random.stateless_gamma([n], seed=seeds[:, 1], alpha=alpha)
    return g1 / tf.maximum(g1 + g2, 1e-12)


def _mixup(images, labels, partner_x, partner_y, alpha: float, gen):
    lam = _beta(gen, _batch(images), alpha)
    x = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * partner_x
    y = lam[:, None] * labels + (1.0 - lam[:, None]) * partner_y
    return x, y


def _cutmix(images, labels, partner_x, partner_y, alpha: float, gen):
    import tensorflow as tf

    shape = tf.shape(images)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    ratio = tf.sqrt(1.0 - _beta(gen, b, alpha))
    cy, cx = tf.floor(gen.uniform([b], 0.0, h)) + 0.5, tf.floor(gen.uniform([b], 0.0, w)) + 0.5
    mask = _box_mask(shape, cy, cx, tf.round(ratio * h) / 2.0, tf.round(ratio * w) / 2.0)
    x = tf.where(mask, partner_x, images)
    lam = 1.0 - tf.reduce_mean(tf.cast(mask, tf.float32), axis=[1, 2, 3])  # share of the image kept
    y = lam[:, None] * labels + (1.0 - lam[:, None]) * partner_y
    return x, y


def _batch(images):
    import tensorflow as tf
    return tf.shape(images)[0]


def _mix(images, labels, aug_cfg, gen):
    """Mixup and/or cutmix against a random permutation of the batch."""
    import tensorflow as tf

    perm = tf.argsort(gen.uniform([_batch(images)]))
    px, py = tf.gather(images, perm), tf.gather(labels, perm)
    if aug_cfg.mixup and not aug_cfg.cutmix:
        return _mixup(images, labels, px, py, aug_cfg.mixup, gen)
    if aug_cfg.cutmix and not aug_cfg.mixup:
        return _cutmix(images, labels, px, py, aug_cfg.cutmix, gen)
    mx, my = _mixup(images, labels, px, py, aug_cfg.mixup, gen)
    cx, cy = _cutmix(images, labels, px, py, aug_cfg.cutmix, gen)
    pick = gen.uniform([_batch(images)]) < 0.5
    return (tf.where(pick[:, None, None, None], mx, cx), tf.where(pick[:, None], my, cy))


def build(aug_cfg, num_classes: int, seed: int):
    """The batch augmentation function for ``tf.data.Dataset.map``, or ``None`` when every op is off."""
    names = enabled(aug_cfg)
    if not names:
        return None
    import tensorflow as tf

    layers = _keras_layers(aug_cfg, seed)
    gen = tf.random.Generator.from_seed(seed)

    def fn(images, labels):
        x = tf.cast(images, tf.float32)
        labels = tf.ensure_shape(tf.cast(labels, tf.float32), [None, num_classes])
        for layer in layers:
            x = tf.cast(layer(x, training=True), tf.float32)
        if aug_cfg.time_shift:
            x = _time_shift(x, aug_cfg.time_shift, gen)
        if aug_cfg.noise:
            x = _noise(x, aug_cfg.noise, gen)
        if aug_cfg.time_mask:
            x = _band_mask(x, aug_cfg.time_mask, 1, gen)
        if aug_cfg.freq_mask:
            x = _band_mask(x, aug_cfg.freq_mask, 2, gen)
        if aug_cfg.cutout:
            x = _cutout(x, aug_cfg.cutout, gen)
        if aug_cfg.mixup or aug_cfg.cutmix:
            x, labels = _mix(x, labels, aug_cfg, gen)
        x = tf.ensure_shape(tf.clip_by_value(x, 0.0, 255.0), images.shape)
        return x, labels

    fn.ops = names
    fn.generator = gen  # kept alive with the function (tf.data captures its state)
    return fn
