"""The build summary: parameters equal Keras' own count, MACs and receptive fields as computed by hand, the
table and summary.json of `cnnpipe build`, the device budget at build (exit 2, the largest layer named,
nothing written) and at export (measured figures against the budget)."""
import json

import pytest

from conftest import DEFAULT_CONFIG, invoke
from pipeline import config, models
from pipeline.models import presets, summary


def _model(layers):
    m = config.load(None, []).model
    m.layers = layers
    return m


@pytest.mark.parametrize("preset", ["small", "lenet5", "resnet8", "ds_cnn", "mobilenet", "conv1d"])
def test_params_per_layer_equal_keras(preset):
    m = config.load(None, [f"model.preset={preset}", "model.width=0.5"]).model
    shape = presets.USUAL_INPUT[preset]
    ops = models.plan(m, shape, 7)
    keras_model = models.build(m, shape, 7)
    for op in ops:
        layer = keras_model.get_layer(op.name)
        assert layer.count_params() == op.params, op.name
        assert tuple(layer.output.shape[1:]) == op.out_shape, op.name
    assert summary.estimate(ops)["params"] == keras_model.count_params()


def test_macs_and_receptive_field_by_hand():
    layers = [{"conv": {"filters": 8, "kernel": 3}},                                   # 10x10x3 -> 10x10x8
              {"conv": {"filters": 4, "kernel": 3, "stride": 2, "padding": "valid"}},  # -> 4x4x4
              {"pool": {"size": 2}},                                                   # -> 2x2x4
              {"separable_conv": {"filters": 6, "kernel": 2, "padding": "valid"}},     # -> 1x1x6
              {"flatten": {}}, {"dense": {"units": 5}}]
    ops = {op.name: op for op in models.plan(_model(layers), (10, 10, 3), 2)}
    assert ops["b0_conv"].macs == 10 * 10 * 8 * (3 * 3 * 3) == 21600
    assert ops["b0_conv"].params == 3 * 3 * 3 * 8 + 8
    assert ops["b1_conv"].out_shape == (4, 4, 4) and ops["b1_conv"].macs == 4 * 4 * 4 * (3 * 3 * 8)
    assert ops["b3_separable_conv"].macs == 1 * 1 * 4 * (2 * 2) + 1 * 1 * 4 * 6
    assert ops["b3_separable_conv"].params == 2 * 2 * 4 + 4 * 6 + 6
    assert ops["b5_dense"].macs == 6 * 5 and ops["logits"].macs == 5 * 2
    # receptive field: 3, then 3 + 2*1 = 5 (jump 2), pool 5 + 1*2 = 7 (jump 4), separable 7 + 1*4 = 11
    assert [ops[n].rf for n in ("b0_conv", "b1_conv", "b2_pool", "b3_separable_conv")] == \
        [(3, 3), (5, 5), (7, 7), (11, 11)]
    totals = summary.estimate(list(ops.values()))
    assert totals["macs"] == sum(op.macs for op in ops.values())
    assert totals["largest_layer"] == "b1_conv"  # 3*3*8*4 + 4 = 292 parameters
    # peak activation in int8: the 10x10x3 input and the 10x10x8 output of the first convolution
    assert totals["peak_activation_bytes"] == 300 + 800 and totals["peak_activation_layer"] == "b0_conv"


def test_residual_keeps_its_input_alive():
    layers = [{"conv": {"filters": 8}},
              {"residual": [{"conv": {"filters": 8}}, {"bn": {}}, {"relu": {}}, {"conv": {"filters": 8}}]}]
    totals = summary.estimate(models.plan(_model(layers), (16, 16, 1), 2))
    # inside the branch: the skip input (16x16x8) is held while a 16x16x8 -> 16x16x8 convolution runs
    assert totals["peak_activation_bytes"] == 3 * 16 * 16 * 8


def test_build_prints_table_and_writes_summary_json(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "s"]
    assert invoke(["ingest", *args]).exit_code == 0
    result = invoke(["build", *args])
    assert result.exit_code == 0, result.output
    assert ("b4_conv                conv                    4x4x64     18,432      294,912      8x8"
            in result.output)
    assert "parameters 53,290   MACs per inference 347,392 (347.4 K)" in result.output
    assert "largest layer: b10_dense (32,896 parameters)" in result.output
    saved = json.loads((workdir / "runs/s/model/summary.json").read_text())
    assert saved["totals"]["params"] == 53290 and saved["input_shape"] == [8, 8, 1]
    assert [r["name"] for r in saved["layers"]][:3] == ["rescale", "b0_conv", "b1_bn"]
    assert saved["layers"][1]["macs"] == 8 * 8 * 32 * 9 and saved["layers"][1]["receptive_field"] == [3, 3]


@pytest.mark.parametrize("budget, message", [
    ("{flash_kb: 20}", r"^error: model.budget.flash_kb: the int8 file is estimated at [\d.]+ KB, over the "
                       r"budget of 20 KB; the largest layer is b10_dense \(32,896 parameters\)$"),
    ("{ram_kb: 2}", r"^error: model.budget.ram_kb: the tensor arena is estimated at [\d.]+ KB, over the "
                    r"budget of 2 KB; the largest activations are at b3_pool \([\d,]+ B live\)$"),
])
def test_over_budget_stops_build_and_writes_nothing(workdir, budget, message):
    import re

    args = ["--config", DEFAULT_CONFIG, "--run", "b"]
    assert invoke(["ingest", *args]).exit_code == 0
    result = invoke(["build", *args, "--set", f"model.budget={budget}"])
    assert result.exit_code == 2
    assert re.match(message, result.output.strip().splitlines()[-1]), result.output
    assert not (workdir / "runs/b/model").exists()
    ok = invoke(["build", *args, "--set", "model.budget={flash_kb: 200, ram_kb: 64}"])
    assert ok.exit_code == 0 and (workdir / "runs/b/model/summary.json").is_file()


def test_bad_budget_keys_and_huge_model_from_the_command_line(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "h"]
    result = invoke(["build", *args, "--set", "model.budget={flash: 20}"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == \
        "error: model.budget.flash: unknown key (known: flash_kb, ram_kb)"
    result = invoke(["build", *args, "--set", "model.budget={ram_kb: -1}"])
    assert result.output.strip().splitlines()[-1] == \
        "error: model.budget.ram_kb: expected a positive number of KB, got -1"
    assert invoke(["ingest", *args]).exit_code == 0
    result = invoke(["build", *args, "--set", "model.filters=[100000, 100000]"])
    assert result.exit_code == 2
    assert "model.preset small: the model cannot be built on this machine: 90.1 G parameters" in result.output
    assert not (workdir / "runs/h/model").exists()


def test_device_check_compares_measured_with_estimates_and_budget(tmp_path):
    est = {"params": 1000, "macs": 5000, "int8_bytes_estimate": 10000, "peak_activation_bytes": 300,
           "arena_bytes_estimate": 2000}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"totals": est}))
    files = {"float32": {"file": "model_float32.tflite", "bytes": 40000},
             "int8": {"file": "model_int8.tflite", "bytes": 11000}}
    device, failures = summary.device_check({"flash_kb": 10, "ram_kb": 4}, path, files, arena_bytes=2500)
    assert device["estimated"]["int8_bytes_estimate"] == 10000
    assert device["measured"] == {"int8_bytes": 11000, "arena_bytes": 2500, "int8_bytes_vs_estimate": 1.1,
                                  "arena_bytes_vs_estimate": 1.25}
    assert failures == ["model_int8.tflite is 10.7 KB, over model.budget.flash_kb = 10"]
    assert device["passed"] is False
    device, failures = summary.device_check({"ram_kb": 2}, path, files, arena_bytes=2500)
    assert failures == ["model_int8.tflite needs a TFLM arena of 2.4 KB, over model.budget.ram_kb = 2"]
    device, failures = summary.device_check({}, None, files, arena_bytes=2500)
    assert failures == [] and device["passed"] and device["measured"]["arena_bytes"] == 2500
