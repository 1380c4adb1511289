"""The layer spec: every bad block is a one-line config error naming the block index and the shapes; a valid
spec builds exactly the Keras graph it describes; --show-spec prints YAML that builds the same model."""
import numpy as np
import pytest
import yaml

from conftest import DEFAULT_CONFIG, invoke
from pipeline import config, models
from pipeline.errors import ConfigError


def _model(layers, *sets):
    cfg = config.load(None, list(sets))
    cfg.model.layers = layers
    return cfg.model


def _layers_arg(layers) -> str:
    return "model.layers=" + yaml.safe_dump(layers, default_flow_style=True).strip()


@pytest.mark.parametrize("layers, message", [
    ([{"convv": {"filters": 8}}], r"model.layers\[0\]: unknown block 'convv' \(known: conv, depthwise_conv"),
    ([{"relu": {}}, {"conv": {"filters": 8, "size": 3}}],
     r"model.layers\[1\] \(conv\): unknown key 'size' \(known: filters, kernel, stride, padding, bias\)"),
    ([{"conv": {"filters": -4}}], r"model.layers\[0\] \(conv\): filters must be a positive integer, got -4"),
    ([{"conv": {"kernel": 3}}], r"model.layers\[0\] \(conv\): missing key 'filters'"),
    ([{"conv": {"filters": 8, "padding": "full"}}], r"padding must be one of same, valid, got 'full'"),
    ([{"dropout": 1.5}], r"model.layers\[0\] \(dropout\): rate must be a number in \[0, 1\), got 1.5"),
    ([{"dense": {"units": 8, "activation": "gelu2"}}], r"activation 'gelu2' is not one of relu"),
    ([{"residual": [{"conv": {"filters": 4}}, {"bnn": {}}]}], r"model.layers\[0\]\[1\]: unknown block 'bnn'"),
    ([{"conv": {"filters": 4}, "bn": {}}], r"model.layers\[0\]: a block is a mapping with one key"),
])
def test_malformed_blocks_fail_at_config_load(layers, message):
    with pytest.raises(ConfigError, match=message):
        config.load(None, [_layers_arg(layers)])


@pytest.mark.parametrize("layers, shape, message", [
    ([{"conv": {"filters": 4, "kernel": 5}}], (4, 4, 1),
     r"^model.layers\[0\] \(conv\): kernel 5x5 is larger than its input 4x4x1$"),
    ([{"conv": {"filters": 4, "kernel": 3}}, {"conv": {"filters": 4, "kernel": 5, "padding": "valid"}}],
     (4, 4, 1),
     r"^model.layers\[1\] \(conv\): kernel 5x5 is larger than its input 4x4x4 \(the spatial size would reach"
     r" zero\)$"),
    ([{"pool": {}}, {"pool": {}}, {"pool": {}}, {"pool": {}}], (8, 8, 1),
     r"^model.layers\[3\] \(pool\): pool size 2x2 is larger than its input 1x1x1 \(the spatial size would "
     r"reach zero\)$"),
    ([{"residual": [{"conv": {"filters": 8, "kernel": 3, "padding": "valid"}}]}], (8, 8, 1),
     r"^model.layers\[0\] \(residual\): cannot join the skip connection: input 8x8x1, branch output 6x6x8"),
    ([{"residual": [{"conv": {"filters": 8}}, {"global_pool": {}}]}], (8, 8, 1),
     r"^model.layers\[0\] \(residual\): cannot join the skip connection: input 8x8x1, branch output 8 "),
    ([{"conv": {"filters": 4}}, {"dense": {"units": 8}}], (8, 8, 1),
     r"^model.layers\[1\] \(dense\): dense needs a flat input \(put flatten or global_pool before it\), "
     r"got 8x8x4$"),
    ([{"flatten": {}}, {"conv": {"filters": 4}}], (8, 8, 1),
     r"^model.layers\[1\] \(conv\): needs an image \[height, width, channels\], got 64$"),
    ([{"conv1d": {"filters": 4}}], (8, 8, 1),
     r"^model.layers\[0\] \(conv1d\): conv1d needs a sequence or a one-row image \[1, length\], got 8x8x1$"),
])
def test_shape_errors_name_block_and_shapes(layers, shape, message):
    with pytest.raises(ConfigError, match=message):
        models.build(_model(layers), shape, 3)


def test_preset_shape_errors_name_the_image_size_and_the_layer():
    with pytest.raises(ConfigError, match=r"^data.image_size: 8x8 is too small for the model's pooling and "
                                          r"kernels \(model.preset lenet5: layer\[3\] \(conv\): kernel 5x5 "
                                          r"is larger than its input 4x4x6 \(the spatial size would reach "
                                          r"zero\)\); use larger images or fewer blocks$"):
        models.build(config.load(None, ["model.preset=lenet5"]).model, (8, 8, 1), 10)
    # 8x8 -> 4x4 -> 2x2: a 3x3 kernel on a 2x2 map only sees padding
    with pytest.raises(ConfigError, match=r"model.preset small: layer\[8\] \(conv\): kernel 3x3 is larger "
                                          r"than its input 2x2x16"):
        models.build(config.load(None, ["model.filters=[8, 16, 32]"]).model, (8, 8, 1), 10)


def test_spec_builds_the_described_graph():
    layers = [{"conv": {"filters": 16, "kernel": 3, "stride": 2, "padding": "same"}}, {"bn": {}},
              {"relu": {}},
              {"separable_conv": {"filters": 32, "kernel": 3}},
              {"pool": {"type": "max", "size": 2}},
              {"residual": [{"conv": {"filters": 32, "kernel": 3}}, {"bn": {}}, {"relu": {}},
                            {"conv": {"filters": 48, "kernel": 3, "stride": 2}}, {"bn": {}}]},
              {"relu6": {}}, {"global_pool": {"type": "avg"}}, {"dropout": 0.2},
              {"dense": {"units": 64, "activation": "relu"}}]
    model = models.build(_model(layers, "model.l2=0.0001", "model.initializer=he_normal"), (32, 32, 3), 5)
    assert model.output_shape == (None, 5)
    assert model.get_layer("b0_conv").output.shape[1:] == (16, 16, 16)
    assert model.get_layer("b3_separable_conv").output.shape[1:] == (16, 16, 32)
    assert model.get_layer("b4_pool").output.shape[1:] == (8, 8, 32)
    proj = model.get_layer("b5_proj")  # 8x8x32 -> 4x4x48: a strided 1x1 projection joins the skip
    assert proj.kernel_size == (1, 1) and proj.strides == (2, 2) and proj.output.shape[1:] == (4, 4, 48)
    assert model.get_layer("b5_add").output.shape[1:] == (4, 4, 48)
    assert model.get_layer("b6_relu6").max_value == 6.0
    assert model.get_layer("b9_dense").output.shape[1:] == (64,)
    assert len(model.losses) > 0  # model.l2 regularizes the kernels
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_identity_residual_and_conv1d_sequence():
    model = models.build(_model([{"conv": {"filters": 8}},
                                 {"residual": [{"conv": {"filters": 8}}, {"relu": {}}]}]),
                         (8, 8, 1), 3)
    assert "b1_proj" not in [layer.name for layer in model.layers]  # same shape: the skip is the identity
    seq = models.build(_model([{"conv1d": {"filters": 4, "kernel": 5, "stride": 2}}, {"pool": {"size": 2}},
                               {"global_pool": {"type": "max"}}]), (1, 40, 2), 3)
    assert seq.get_layer("b0_conv1d_to_sequence").output.shape[1:] == (40, 2)
    assert seq.get_layer("b0_conv1d").output.shape[1:] == (20, 4)
    assert seq.get_layer("b1_pool").output.shape[1:] == (10, 4)


def test_show_spec_prints_yaml_that_builds_the_same_model(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "s", "--set", "data.image_size=[64, 64]",
            "--set", "model.filters=[8, 16]"]
    result = invoke(["build", "--show-spec", *args])
    assert result.exit_code == 0, result.output
    text = result.output[result.output.index("model:"):]
    layers = yaml.safe_load(text)["model"]["layers"]
    assert layers[-4:] == [{"global_pool": {"type": "avg"}}, {"dropout": {"rate": 0.25}},
                           {"dense": {"units": 128, "activation": "relu"}}, {"dropout": {"rate": 0.25}}]
    preset = models.build(config.load(None, ["model.filters=[8, 16]"]).model, (64, 64, 1), 10)
    pasted = models.build(_model(layers), (64, 64, 1), 10)
    # 16x16 after two pools is larger than 8x8: global pooling, so the dense layer sees 16 features
    assert pasted.count_params() == preset.count_params() == 72 + 32 + 1152 + 64 + (16 * 128 + 128) + 1290
    assert not (workdir / "runs" / "s" / "model").exists()


def test_bad_spec_from_the_command_line_writes_nothing(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "bad"]
    assert invoke(["ingest", *args]).exit_code == 0
    result = invoke(["build", *args, "--set", "model.layers=[{conv: {filters: 8, kernel: 9}}]"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == \
        "error: model.layers[0] (conv): kernel 9x9 is larger than its input 8x8x1"
    assert not (workdir / "runs" / "bad" / "model").exists()
