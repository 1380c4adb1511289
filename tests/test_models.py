"""Model builders: every preset, Rescaling inside the model, the model.* keys of small, size checks,
the memory refusal, loading."""
import numpy as np
import pytest

from pipeline import config, models
from pipeline.errors import ConfigError, PipelineError


def _cfg(*sets):
    return config.load(None, list(sets)).model


@pytest.mark.parametrize("preset, shape", [
    ("small", (8, 8, 1)), ("lenet5", (28, 28, 1)), ("resnet8", (32, 32, 3)), ("conv1d", (1, 40, 1)),
    ("ds_cnn", (49, 10, 1)), ("mobilenet", (96, 96, 3)),
])
def test_presets_build_and_output_probabilities(preset, shape):
    model = models.build(_cfg(f"model.preset={preset}", "model.filters=[8, 16]", "model.width=0.25"),
                         shape, 5)
    assert model.output_shape == (None, 5)
    x = np.random.default_rng(0).integers(0, 256, (3, *shape)).astype("float32")
    probs = model.predict(x, verbose=0)
    assert probs.shape == (3, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)


def test_small_uses_configured_kernel_stride_padding():
    model = models.build(_cfg("model.filters=[4]", "model.kernel_size=5", "model.strides=2",
                              "model.padding=valid", "model.pool_size=1", "model.batch_norm=false"),
                         (28, 28, 1), 3)
    conv = model.get_layer("b0_conv")
    assert conv.kernel_size == (5, 5) and conv.strides == (2, 2) and conv.padding == "valid"
    assert conv.use_bias  # no batch norm after it: the convolution keeps its bias
    assert conv.output.shape[1:3] == (12, 12)
    assert not any(layer.name.endswith("_bn") for layer in model.layers)


def test_small_pools_globally_above_8x8_and_flattens_below():
    digits = models.build(_cfg(), (8, 8, 1), 10)  # 8 -> 4 -> 2: flatten keeps the 2x2 positions
    assert digits.get_layer("b8_flatten").output.shape[1:] == (256,)
    assert digits.count_params() == 53290
    big = models.build(_cfg(), (224, 224, 3), 10)  # 224 -> 56: global pooling, not a 200,704-input dense
    assert big.get_layer("b8_global_pool").output.shape[1:] == (64,)
    assert big.count_params() == 864 + 128 + 18432 + 256 + (64 * 128 + 128) + 1290
    flat = models.build(_cfg("model.filters=[8, 16, 16]"), (64, 64, 1), 10)  # 64 -> 8: still flatten
    assert flat.get_layer("b12_flatten").output.shape[1:] == (8 * 8 * 16,)


def test_too_small_images_and_missing_base_are_config_errors():
    with pytest.raises(ConfigError, match=r"data.image_size: 4x4 is too small for the model's pooling and "
                                          r"kernels \(model.preset small: layer\[4\] \(conv\): kernel 3x3 is "
                                          r"larger"):
        models.build(_cfg("model.filters=[8, 16, 32]"), (4, 4, 1), 10)
    with pytest.raises(ConfigError, match=r"8x8 is too small .* kernel 3x3 is larger than its input 2x2x8 "
                                          r"\(the spatial size would reach zero\)"):
        models.build(_cfg("model.filters=[8, 8]", "model.strides=4", "model.padding=valid",
                          "model.pool_size=1"), (8, 8, 1), 10)
    with pytest.raises(ConfigError, match=r"kernel 9 is larger than its input 8x1"):
        models.build(_cfg("model.preset=conv1d", "model.kernel_size=9", "model.padding=valid"), (1, 8, 1), 3)
    with pytest.raises(ConfigError, match="model.base_model: nope.keras: no such file"):
        models.build(_cfg("model.base_model=nope.keras"), (8, 8, 1), 3)
    with pytest.raises(ConfigError, match=r"model.preset lenet5: layer\[3\] \(conv\): kernel 5x5 is larger"):
        models.build(_cfg("model.preset=lenet5"), (8, 8, 1), 10)


def test_model_too_large_for_memory_is_refused_before_keras():
    with pytest.raises(ConfigError, match=r"^model.preset small: the model cannot be built on this machine: "
                                          r"90.1 G parameters \(1.4 TB to train in float32\) and 107.2 MB of "
                                          r"activations per image, [\d.]+ [KMGT]?B of memory available; "
                                          r"use a smaller data.image_size or fewer filters$"):
        models.build(_cfg("model.filters=[100000, 100000]"), (8, 8, 1), 10)
    totals = models.summary.estimate(models.plan(_cfg(), (8, 8, 1), 10))
    models.summary.check_memory(totals, "model", available=16 * 53290 + 4 * totals["activation_elements"])
    with pytest.raises(ConfigError, match="53.3 K parameters"):
        models.summary.check_memory(totals, "model", available=16 * 53290)


def test_load_rejects_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(PipelineError, match="model.keras: not a readable .keras model"):
        models.load(bad)
    with pytest.raises(PipelineError, match="model file not found"):
        models.load(tmp_path / "nope.keras")


def test_a_model_is_named_by_what_it_is_written_in():
    """A preset by its name; a layer spec as `layers`, whatever model.preset still says (the build summary,
    `cnnpipe bench-data` and the Keras model's name use it)."""
    from pathlib import Path

    fashion = config.load(Path(__file__).parents[1] / "configs" / "fashion_mnist.yaml").model
    assert (models.spec_name(_cfg("model.preset=lenet5")), models.spec_key(_cfg("model.preset=lenet5"))) == \
        ("lenet5", "model.preset lenet5")
    assert (models.spec_name(fashion), models.spec_key(fashion)) == ("layers", "model.layers")
    assert models.build(fashion, (28, 28, 1), 10).name == "cnnpipe_layers"
