"""Sequences (time series, sensor signals) as one-row uint8 images, with numpy only.

Every stage of the pipeline stores uint8 "pixels" and every model starts with ``Rescaling(1/255)``. A float
sequence ``x`` of shape ``[length, channels]`` is therefore stored as the one-row image ``[1, length,
channels]`` of ``q = clip(round((x - offset) / scale), 0, 255)``, with one ``offset`` and ``scale`` per
channel
chosen from the training split (its minimum and its range / 255). The map is recorded in ``classes.json`` and
in the model card (``input.encoding``); the edge runtime (``cnnpipe predict``, the bundle's ``predict.py``)
encodes a ``.npy`` sequence with :func:`encode` exactly as ingest did.

The model does not undo the map: the network learns on ``q / 255`` in [0, 1], a fixed per-channel affine
image of the signal (batch normalization and the first layer's weights absorb it), and the int8 file's input
has 8 bits however the float signal is scaled, so nothing is lost that the device could have kept.

Sequences of another length are brought to ``length`` by :func:`fit_length`: ``pad`` (zeros after the end,
a longer one cut at ``length``) or ``resample`` (linear interpolation over the whole sequence).
"""
from __future__ import annotations

import numpy as np

LEVELS = 255
FITS = ("pad", "resample")


def as_2d(x: np.ndarray, where: str) -> np.ndarray:
    """One sequence as float64 [length, channels]: [length] is one channel; [1, length, channels] too."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: expected numbers, got {x.dtype}")
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{where}: expected [length] or [length, channels], got shape {list(x.shape)}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: holds NaN or infinite values")
    return x


def fit_length(x: np.ndarray, length: int, fit: str = "pad") -> np.ndarray:
    """[n, channels] -> [length, channels]: ``pad`` (zeros after the end; cut when longer) or ``resample``
    (linear interpolation, first and last samples kept)."""
    n = x.shape[0]
    if n == length:
        return x
    if fit == "resample":
        if n == 1:
            return np.repeat(x, length, axis=0)
        at = np.linspace(0.0, n - 1, length)
        return np.stack([np.interp(at, np.arange(n), x[:, c]) for c in range(x.shape[1])], axis=1)
    if fit != "pad":
        raise ValueError(f"unknown fit {fit!r} (use {' or '.join(FITS)})")
    if n > length:
        return x[:length]
    return np.concatenate([x, np.zeros((length - n, x.shape[1]), x.dtype)], axis=0)


def fit_encoding(train: np.ndarray) -> dict:
    """Per-channel ``offset`` (minimum) and ``scale`` (range / 255) of float ``train``
    [n, length, channels]."""
    lo = train.min(axis=(0, 1)).astype(np.float64)
    hi = train.max(axis=(0, 1)).astype(np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    return {"kind": "sequence", "offset": [float(v) for v in lo], "scale": [float(v) for v in span / LEVELS],
            "formula": "q = clip(round((x - offset) / scale), 0, 255) per channel"}


def encode(x: np.ndarray, encoding: dict) -> np.ndarray:
    """Float [..., length, channels] -> uint8 with the recorded per-channel offset and scale."""
    offset = np.asarray(encoding["offset"], np.float64)
    scale = np.asarray(encoding["scale"], np.float64)
    q = np.rint((np.asarray(x, np.float64) - offset) / scale)
    return np.clip(q, 0, LEVELS).astype(np.uint8)


def decode(q: np.ndarray, encoding: dict) -> np.ndarray:
    """uint8 back to signal units (to within scale / 2)."""
    return (np.asarray(q, np.float64) * np.asarray(encoding["scale"]) + np.asarray(encoding["offset"]))


def to_image(x: np.ndarray, encoding: dict) -> np.ndarray:
    """One float sequence [length, channels] -> the uint8 one-row image [1, length, channels]."""
    return encode(x, encoding)[None]


def load_npy(path, length: int, channels: int, encoding: dict) -> np.ndarray:
    """A ``.npy`` sequence file -> the uint8 image [1, length, channels] the model takes (the edge runtime's
    reader). The array is [length] or [length, channels] in the signal's own units."""
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"not a numeric .npy array ({str(exc).splitlines()[0]})") from None
    x = as_2d(x, "the array")
    if x.shape[1] != channels:
        raise ValueError(f"has {x.shape[1]} channel(s); the model takes {channels}")
    return to_image(fit_length(x, length, encoding.get("fit", "pad")), encoding)
