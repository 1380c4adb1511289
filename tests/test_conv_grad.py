"""Forward-convolution gradients of stride-1 Conv2D and Conv1D layers (pipeline.conv_grad): the same gradients
as TensorFlow's kernels, installed on training models only, chosen by train.conv_backprop."""
import json

import numpy as np
import pytest

from conftest import DEFAULT_CONFIG, invoke, one_line_error
from pipeline import config, conv_grad


@pytest.mark.parametrize("kernel, padding, shape", [
    ((3, 3), "same", (3, 9, 10, 4)),
    ((5, 5), "valid", (2, 11, 12, 3)),
    ((2, 2), "same", (2, 7, 8, 2)),   # even kernel: TensorFlow pads the odd pixel after
    ((1, 3), "same", (2, 6, 5, 3)),
    ((4, 1), "valid", (2, 8, 7, 2)),
    ((3, 3), "same", (4, 28, 28, 1)),  # a one-channel stem
])
def test_gradients_match_tensorflows(kernel, padding, shape):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    _assert_same_outputs_and_gradients(lambda x, w: tf.nn.conv2d(x, w, 1, padding.upper()),
                                       lambda x, w: conv_grad.conv2d(x, w, padding),
                                       rng.normal(size=shape), rng.normal(size=(*kernel, shape[-1], 5)))


@pytest.mark.parametrize("kernel, padding, shape", [
    (8, "same", (3, 30, 1)),    # the FCN's first layer on a one-channel series
    (5, "same", (2, 25, 6)),
    (4, "same", (2, 17, 3)),    # even kernel
    (3, "valid", (2, 20, 4)),
    (3, "causal", (2, 20, 4)),  # k - 1 zeros before the sequence
    (1, "same", (2, 9, 3)),
])
def test_conv1d_gradients_match_tensorflows(kernel, padding, shape):
    import tensorflow as tf

    def reference(x, w):
        if padding == "causal":
            return tf.nn.conv1d(tf.pad(x, [[0, 0], [kernel - 1, 0], [0, 0]]), w, 1, "VALID")
        return tf.nn.conv1d(x, w, 1, padding.upper())

    rng = np.random.default_rng(4)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(kernel, shape[-1], 5)).astype(np.float32)
    _assert_same_outputs_and_gradients(reference, lambda x, w: conv_grad.conv1d(x, w, padding), x, w)
    # what fastest times as TensorFlow's side is the same convolution
    np.testing.assert_allclose(conv_grad._builtin(tf.constant(x), tf.constant(w), padding), reference(x, w),
                               rtol=1e-5, atol=1e-5)


def _assert_same_outputs_and_gradients(reference, ours, x, w):
    """``ours(x, w)`` and its input and kernel gradients equal ``reference``'s within float32 rounding."""
    import tensorflow as tf

    x, w = tf.constant(x, tf.float32), tf.constant(w, tf.float32)
    dy = None

    def outputs_and_grads(conv):
        nonlocal dy
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
        if dy is None:
            dy = tf.constant(np.random.default_rng(5).normal(size=y.shape), tf.float32)
        return [y, *tape.gradient(y, [x, w], output_gradients=dy)]

    ref = outputs_and_grads(reference)
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), ref, outputs_and_grads(ours)):
        assert a.shape == b.shape, name
        err = float(np.abs(a - b).max() / np.abs(a).max())
        assert err < 1e-5, f"{name}: relative error {err}"


def _model():
    import keras

    conv = keras.layers.Conv2D(4, 3, padding="same", name="inner")
    inner = keras.Sequential([keras.Input((8, 8, 4)), conv], name="base")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = inner(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="strided")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="dilated")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _model_1d():
    import keras

    inputs = keras.Input((24, 2))
    x = keras.layers.Conv1D(4, 5, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv1D(4, 3, padding="causal", name="causal")(x)
    x = keras.layers.Conv1D(6, 3, strides=2, padding="same", name="strided")(x)
    x = keras.layers.Conv1D(6, 3, padding="same", dilation_rate=2, name="dilated")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_install_touches_only_stride1_conv1d_and_keeps_their_outputs(tmp_path):
    import keras

    model = _model_1d()
    x = np.random.default_rng(6).normal(size=(3, 24, 2)).astype(np.float32)
    before = np.asarray(model(x, training=False))
    # c1 and causal: not strided, not dilated
    assert conv_grad.install(model, "forward") == {"forward": ["c1", "causal"], "builtin": []}
    assert {name for name in ("c1", "causal", "strided", "dilated")
            if "call" in model.get_layer(name).__dict__} == {"c1", "causal"}
    after = np.asarray(model(x, training=False))  # through BaseConv.call: bias, relu and causal padding kept
    np.testing.assert_allclose(after, before, atol=1e-6)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("causal")) is keras.layers.Conv1D
    assert not {"call", "convolution_op"} & set(loaded.get_layer("causal").__dict__)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, atol=1e-6)
    assert conv_grad.install(model, "builtin") == {"forward": [], "builtin": ["c1", "causal"]}
    assert not {"call", "convolution_op"} & set(model.get_layer("c1").__dict__)


def test_install_touches_only_stride1_conv2d_instances_and_saved_files_stay_plain(tmp_path):
    import keras

    model = _model()
    # c1 and the base's: not strided, dilated, depthwise
    assert conv_grad.install(model, "forward") == {"forward": ["c1", "inner"], "builtin": []}
    patched = {layer.name for layer in [model.get_layer("c1"), model.get_layer("base").get_layer("inner")]
               if "convolution_op" in layer.__dict__}
    assert patched == {"c1", "inner"}
    assert "convolution_op" not in model.get_layer("strided").__dict__
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # plain Keras classes: no custom object needed
    assert type(loaded.get_layer("c1")) is keras.layers.Conv2D
    assert "convolution_op" not in loaded.get_layer("c1").__dict__
    x = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert conv_grad.install(model, "builtin") == {"forward": [], "builtin": ["c1", "inner"]}
    assert "convolution_op" not in model.get_layer("c1").__dict__


@pytest.mark.parametrize("build, shape", [(_model, (8, 8, 1)), (_model_1d, (24, 2))])
def test_one_training_step_matches_builtin_kernels(build, shape):
    import keras

    from pipeline import train

    rng = np.random.default_rng(2)
    x = rng.random((16, *shape), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    weights = {}
    for mode in ("builtin", "forward"):
        keras.utils.set_random_seed(3)
        model = build()
        tc = config.load(DEFAULT_CONFIG, ["train.conv_backprop=" + mode]).train
        train.compile_model(model, tc, 1)
        assert ("convolution_op" in model.get_layer("c1").__dict__) == (mode == "forward")
        model.train_on_batch(x, y)
        weights[mode] = model.get_weights()
    for a, b in zip(weights["builtin"], weights["forward"]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_auto_times_each_layer_without_a_gpu_and_keeps_tensorflows_kernels_when_deterministic():
    cfg = config.load(DEFAULT_CONFIG)
    assert cfg.train.conv_backprop == "auto"
    assert conv_grad.resolve(cfg.train) == "fastest"  # the test machines have no GPU
    assert conv_grad.resolve(config.load(DEFAULT_CONFIG, ["train.deterministic=true"]).train) == "builtin"
    assert conv_grad.resolve(config.load(DEFAULT_CONFIG, ["train.conv_backprop=forward"]).train) == "forward"


def _slowed(conv):
    """``conv`` on 64 copies of the batch: the same result, 64 times the work (far more than op overheads)."""
    import tensorflow as tf

    return lambda x, k, padding: conv(tf.tile(x, [64] + [1] * (x.shape.rank - 1)), k, padding)[:x.shape[0]]


@pytest.mark.parametrize("slow, min_saving_s, expected", [
    ("_builtin", conv_grad.MIN_SAVING_S, "forward"),
    ("conv2d", conv_grad.MIN_SAVING_S, "builtin"),
    ("_builtin", 10.0, "builtin"),  # faster, but by less than the floor: TensorFlow's kernels stay
])
def test_fastest_picks_the_faster_gradients_and_times_a_shape_once(monkeypatch, slow, min_saving_s, expected):
    monkeypatch.setattr(conv_grad, "_FASTEST", {})
    monkeypatch.setattr(conv_grad, "MIN_SAVING_S", min_saving_s)
    monkeypatch.setattr(conv_grad, slow, _slowed(getattr(conv_grad, slow)))
    timed = []
    real = conv_grad._timed
    monkeypatch.setattr(conv_grad, "_timed", lambda *a, **k: timed.append(a) or real(*a, **k))
    model = _model()
    got = conv_grad.install(model, "fastest", batch_size=128)
    assert got == {expected: ["c1", "inner"], ("builtin" if expected == "forward" else "forward"): []}
    assert ("convolution_op" in model.get_layer("c1").__dict__) == (expected == "forward")
    assert timed == [((8, 8, 1), (3, 3, 1, 4), "same", 128, "float32"),
                     ((8, 8, 4), (3, 3, 4, 4), "same", 128, "float32")]
    assert conv_grad.install(_model(), "fastest", batch_size=128) == got  # same shapes: not timed again
    assert len(timed) == 2
    assert conv_grad.installed(model) == got


def test_fastest_times_a_mixed_bfloat16_layer_in_bfloat16(monkeypatch):
    import keras

    monkeypatch.setattr(conv_grad, "_FASTEST", {})
    timed = []
    real = conv_grad._timed
    monkeypatch.setattr(conv_grad, "_timed", lambda *a, **k: timed.append(a) or real(*a, **k))
    conv_grad.install(_model(), "fastest", batch_size=16)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _model()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    got = conv_grad.install(model, "fastest", batch_size=16)  # the same shapes, another dtype: timed again
    assert sorted(got["forward"] + got["builtin"]) == ["c1", "inner"]
    assert [key[4] for key in timed] == ["float32", "float32", "bfloat16", "bfloat16"]
    assert model(np.ones((2, 8, 8, 1), "float32")).shape == (2, 3)


def test_fastest_keeps_tensorflows_kernels_on_frozen_layers_untimed(monkeypatch):
    monkeypatch.setattr(conv_grad, "_FASTEST", {})
    monkeypatch.setattr(conv_grad, "_timed", lambda *a, **k: pytest.fail("a frozen layer was timed"))
    model = _model()
    for layer in (model.get_layer("c1"), model.get_layer("base")):
        layer.trainable = False
    assert conv_grad.install(model, "fastest") == {"forward": [], "builtin": ["c1", "inner"]}


def test_train_manifest_records_the_gradients(tiny_run):
    manifest = json.loads((tiny_run["run"] / "train" / "manifest.json").read_text())
    got = manifest["conv_backprop"]
    assert got["setting"] == "auto"
    import keras

    model = keras.models.load_model(tiny_run["run"] / "train" / "model.keras")
    names = sorted(layer.name for layer in model.layers if conv_grad.eligible(layer))
    assert names and sorted(got["forward"] + got["builtin"]) == names  # each timed, each recorded


def test_unknown_conv_backprop_is_refused_before_anything_is_written(workdir):
    result = invoke(["run", "--config", DEFAULT_CONFIG, "--run", "bad", "--set", "train.conv_backprop=fast"])
    one_line_error(result, 2, "train.conv_backprop", "forward")
    assert not (workdir / "runs" / "bad").exists()
