"""audit(): real files of every mode pass; a file that is not what it claims, or holds Flex ops, fails."""
from __future__ import annotations

import pytest

from pipeline.audit import audit
from pipeline.errors import PipelineError


@pytest.fixture(scope="session")
def files(tiny_models):
    return tiny_models["files"]


@pytest.mark.parametrize("mode, fmt, io_dtype, expect", [
    ("float32", "float32", None, {"float32"}),
    ("float16", "float16", None, {"float32", "float16"}),
    ("dynamic", "dynamic", None, {"float32", "int8"}),
    ("int8", "int8", "int8", {"int8", "int32"}),
    ("uint8", "int8", "uint8", {"int8", "int32", "uint8"}),
    ("int16x8", "int16x8", None, {"int16", "int8", "int64"}),
])
def test_real_files_pass(files, mode, fmt, io_dtype, expect):
    report = audit(files[mode], fmt, io_dtype=io_dtype)
    assert expect <= set(report["tensor_dtypes"])
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(report["ops"])
    assert sum(report["op_counts"].values()) >= len(report["ops"])
    assert report["input"]["shape"] == [1, 8, 8, 1]
    if fmt in ("int8", "int16x8"):
        assert "float32" not in report["tensor_dtypes"]
        assert report["input"]["dtype"] == (io_dtype or "int16") and report["input"]["scale"] > 0
    if fmt == "float16":
        assert "DEQUANTIZE" in report["ops"]


def test_float_file_claimed_as_int8_is_an_error(files):
    with pytest.raises(PipelineError, match=r"op #0 CONV_2D input tensor '.*' is float32.*not fully int8"):
        audit(files["float32"], "int8")


def test_int8_with_float_io_is_not_full_int8(files):
    with pytest.raises(PipelineError, match=r"op #0 QUANTIZE input tensor '.*' is float32"):
        audit(files["int8_float_io"], "int8")


@pytest.mark.parametrize("mode, claimed, message", [
    ("int8", "float32", "is int8"),
    ("float32", "float16", "no float16 weights"),
    ("float32", "dynamic", "no int8 weights"),
    ("int8", "int16x8", "is int8"),
    ("int8", "int8", "model input .* is int8, expected uint8"),
])
def test_wrong_mode_is_an_error(files, mode, claimed, message):
    io = "uint8" if mode == claimed == "int8" else None
    with pytest.raises(PipelineError, match=message):
        audit(files[mode], claimed, io_dtype=io)


def _with_custom_op(blob: bytes, custom: str) -> bytes:
    """The same file with its first op code turned into a custom op (what SELECT_TF_OPS conversion emits)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(blob), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = custom
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("custom, message", [("FlexConv2D", "Flex / SELECT_TF_OPS"),
                                             ("MyOp", "custom op MyOp")])
def test_flex_and_custom_ops_are_errors(files, custom, message):
    with pytest.raises(PipelineError, match=message):
        audit(_with_custom_op(files["float32"], custom), "float32")


def test_unfrozen_resource_variables_are_an_error(tiny_models):
    import tensorflow as tf

    model = tiny_models["keras_model"]
    serve = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, 8, 8, 1])])
    blob = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model).convert()
    with pytest.raises(PipelineError, match="resource variables"):
        audit(blob, "float32")


@pytest.mark.parametrize("blob", [b"", b"not a model at all", b"\x00\x00\x00\x00TFL3" + b"\xff" * 40])
def test_not_a_model(blob):
    with pytest.raises(PipelineError, match="model.tflite"):
        audit(blob, "int8", name="model.tflite")


def test_unknown_format(files):
    with pytest.raises(ValueError, match="unknown format"):
        audit(files["float32"], "int4")
