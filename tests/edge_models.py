"""A tiny digits CNN converted to every TFLite mode, trained once per test session (about 12 s with the
TensorFlow import) and shared by the edge, audit and micro tests through the ``tiny_models`` fixture."""
from __future__ import annotations

import functools
import os

import numpy as np

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _convert(model, mode: str, rep: np.ndarray) -> bytes:
    """TFLite bytes at a fixed batch of 1. Modes: float32 float16 dynamic int8 uint8 int8_float_io int16x8."""
    from pipeline import export

    fmt, io = {"uint8": ("int8", "uint8"), "int8_float_io": ("int8", "float32")}.get(mode, (mode, "int8"))
    return export.convert(model, fmt, rep, io)


@functools.cache
def build_tiny_models() -> dict:
    """Train once per process; the ``tiny_models`` fixture of conftest.py returns this dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(10), keras.layers.Softmax()])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x[:1400].astype(np.float32), y[:1400], epochs=3, batch_size=32, verbose=0)
    rep = x[:200]
    modes = ("float32", "float16", "dynamic", "int8", "uint8", "int8_float_io", "int16x8")
    return dict(x_train=x[:1400], y_train=y[:1400], x_test=x[1400:], y_test=y[1400:],
                keras_probs=model.predict(x[1400:].astype(np.float32), verbose=0),
                files={m: _convert(model, m, rep) for m in modes}, keras_model=model)
