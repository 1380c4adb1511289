"""Model builders: every preset, Rescaling inside the model, pooling checks, transfer learning."""
import numpy as np
import pytest

from pipeline import config, models
from pipeline.errors import ConfigError, PipelineError


def _cfg(*sets):
    return config.load(None, list(sets)).model


@pytest.mark.parametrize("preset, shape", [
    ("small", (8, 8, 1)), ("lenet5", (28, 28, 1)), ("resnet8", (32, 32, 3)), ("conv1d", (1, 40, 1)),
])
def test_presets_build_and_output_probabilities(preset, shape):
    model = models.build(_cfg(f"model.preset={preset}", "model.filters=[8, 16]"), shape, 5)
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
    conv = model.get_layer("block0_conv")
    assert conv.kernel_size == (5, 5) and conv.strides == (2, 2) and conv.padding == "valid"
    assert conv.output.shape[1:3] == (12, 12)
    assert not any("bn" in layer.name for layer in model.layers)


def test_image_too_small_for_pooling_is_a_config_error():
    with pytest.raises(ConfigError, match="data.image_size: 4x4 is too small for the model's pooling"):
        models.build(_cfg("model.filters=[8, 16, 32]"), (4, 4, 1), 10)
    with pytest.raises(ConfigError, match="8x8 is too small for model.kernel_size 3 / strides 4 with padding valid"):
        models.build(_cfg("model.filters=[8, 8]", "model.strides=4", "model.padding=valid",
                          "model.pool_size=1"), (8, 8, 1), 10)
    with pytest.raises(ConfigError, match="is too small for model.kernel_size 9"):
        models.build(_cfg("model.preset=conv1d", "model.kernel_size=9", "model.padding=valid"), (1, 8, 1), 3)
    with pytest.raises(ConfigError, match="model.base_model: nope.keras: no such file"):
        models.build(_cfg("model.base_model=nope.keras"), (8, 8, 1), 3)
    with pytest.raises(ConfigError, match="lenet5 needs images of at least 12x12"):
        models.build(_cfg("model.preset=lenet5"), (8, 8, 1), 10)


def test_transfer_learning_replaces_final_layer(tmp_path):
    base = models.build(_cfg("model.filters=[4]", "model.dense=[16]"), (8, 8, 1), 10)
    path = tmp_path / "base.keras"
    base.save(path)
    model = models.build(_cfg(f"model.base_model={path}"), (8, 8, 1), 3)
    assert model.output_shape == (None, 3)
    assert model.get_layer("base").trainable is False
    feats = [w for w in model.get_layer("base").get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(feats, base.get_weights()[:len(feats)]))
    with pytest.raises(ConfigError, match="takes input"):
        models.build(_cfg(f"model.base_model={path}"), (16, 16, 1), 3)


def test_load_rejects_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(PipelineError, match="model.keras: not a readable .keras model"):
        models.load(bad)
    with pytest.raises(PipelineError, match="model file not found"):
        models.load(tmp_path / "nope.keras")
