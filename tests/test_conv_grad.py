"""Forward-convolution gradients of stride-1 Conv2D layers (pipeline.conv_grad): the same gradients as
TensorFlow's kernels, installed on training models only, chosen by train.conv_backprop."""
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
    x = tf.constant(rng.normal(size=shape), tf.float32)
    w = tf.constant(rng.normal(size=(*kernel, shape[-1], 5)), tf.float32)
    ref_y = tf.nn.conv2d(x, w, 1, padding.upper())
    dy = tf.constant(rng.normal(size=ref_y.shape), tf.float32)

    def outputs_and_grads(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
        return [y, *tape.gradient(y, [x, w], output_gradients=dy)]

    ref = outputs_and_grads(lambda x, w: tf.nn.conv2d(x, w, 1, padding.upper()))
    ours = outputs_and_grads(lambda x, w: conv_grad.conv2d(x, w, padding))
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), ref, ours):
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


def test_install_touches_only_stride1_conv2d_instances_and_saved_files_stay_plain(tmp_path):
    import keras

    model = _model()
    assert conv_grad.install(model, "forward") == 2  # c1 and the base's: not strided, dilated, depthwise
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
    assert conv_grad.install(model, "builtin") == 2
    assert "convolution_op" not in model.get_layer("c1").__dict__


def test_one_training_step_matches_builtin_kernels():
    import keras

    from pipeline import train

    rng = np.random.default_rng(2)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3)
    weights = {}
    for mode in ("builtin", "forward"):
        keras.utils.set_random_seed(3)
        model = _model()
        tc = config.load(DEFAULT_CONFIG, ["train.conv_backprop=" + mode]).train
        train.compile_model(model, tc, 1)
        assert ("convolution_op" in model.get_layer("c1").__dict__) == (mode == "forward")
        model.train_on_batch(x, y)
        weights[mode] = model.get_weights()
    for a, b in zip(weights["builtin"], weights["forward"]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_auto_is_forward_without_a_gpu():
    cfg = config.load(DEFAULT_CONFIG)
    assert cfg.train.conv_backprop == "auto"
    assert conv_grad.resolve(cfg.train) == "forward"  # the test machines have no GPU


def test_train_manifest_records_the_gradients(tiny_run):
    manifest = json.loads((tiny_run["run"] / "train" / "manifest.json").read_text())
    assert manifest["conv_backprop"] == "forward"


def test_unknown_conv_backprop_is_refused_before_anything_is_written(workdir):
    result = invoke(["run", "--config", DEFAULT_CONFIG, "--run", "bad", "--set", "train.conv_backprop=fast"])
    one_line_error(result, 2, "train.conv_backprop", "forward")
    assert not (workdir / "runs" / "bad").exists()
