"""TFLite metadata inside the .tflite (labels, input normalization, image properties) and the RGB input.

The files must stay what they were for every runtime that ignores metadata: the flatbuffer audit, LiteRT
(bit-identical outputs) and TFLM (the microcontroller bundle gets the file without metadata).
"""
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import file_hashes, invoke
from edge_models import NAMES
from pipeline import artifacts, audit, edge, export, metadata, micro
from pipeline.errors import PipelineError

MODES = {"float32": ("float32", None), "int8": ("int8", "int8"), "uint8": ("int8", "uint8")}


def _metadata_buffer_offsets(blob: bytes) -> dict:
    """{buffer index: start offset of its data in the file} for every buffer holding data."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(blob, 0)
    starts = {}
    for i in range(model.BuffersLength()):
        tab = model.Buffers(i)._tab
        o = tab.Offset(4)
        if o and tab.VectorLen(o):
            starts[i] = tab.Vector(o)
    return starts


@pytest.mark.parametrize("mode", list(MODES))
def test_embedded_metadata_reads_back_and_runtimes_ignore_it(tiny_models, mode):
    plain = tiny_models["files"][mode]
    blob = metadata.embed(plain, NAMES, name="digits", description="8x8 digits")
    fmt, io_dtype = MODES[mode]
    audit.audit(blob, fmt, io_dtype=io_dtype)  # the audit reads the flatbuffer with metadata and zip
    x = tiny_models["x_test"]
    assert np.array_equal(edge.EdgeModel(blob).predict(x), edge.EdgeModel(plain).predict(x))

    found = metadata.read(blob)
    meta = found["metadata"]
    assert meta["name"] == "digits" and meta["min_parser_version"] == "1.0.0"
    image = meta["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["content"]["content_properties"] == (
        "ImageProperties", {"color_space": "GRAYSCALE", "default_size": {"width": 8, "height": 8}})
    assert image["process_units"] == [{"options": ("NormalizationOptions", {"mean": [0.0], "std": [1.0]})}]
    assert image["stats"] == {"max": [255.0], "min": [0.0]}
    out = meta["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert out["associated_files"] == [{"name": "labels.txt", "type": "TENSOR_AXIS_LABELS",
                                        "description": "Class names, one per line, in output order."}]
    assert out["stats"] == {"max": [1.0], "min": [0.0]}
    assert metadata.labels(blob) == NAMES
    assert found["files"] == {"labels.txt": ("\n".join(NAMES) + "\n").encode()}
    # as the populator writes it: an uncompressed zip after the flatbuffer
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert [i.compress_type for i in archive.infolist()] == [zipfile.ZIP_STORED]
    assert metadata.read(plain) is None and metadata.labels(plain) == []
    assert len(blob) - len(plain) < 1200


def test_weights_stay_16_byte_aligned_and_strip_gives_a_file_tflm_runs(tiny_models):
    plain = tiny_models["files"]["int8"]
    blob = metadata.embed(plain, NAMES, name="digits")
    assert all(start % 16 == 0 for start in _metadata_buffer_offsets(blob).values())
    bare = metadata.strip(blob)
    assert metadata.read(bare) is None and not metadata.has_appended_files(bare)
    assert len(bare) < len(blob) and abs(len(bare) - len(plain)) <= 64
    assert all(start % 16 == 0 for start in _metadata_buffer_offsets(bare).values())
    assert metadata.strip(plain) == plain  # nothing to take away
    q = edge.EdgeModel(plain).quantize(tiny_models["x_test"][:6])
    reference = np.stack([edge.EdgeModel(plain, kernels="reference").predict_raw(v)[0] for v in q])
    tflm, arena = micro.run_tflm(bare, q)
    assert np.array_equal(tflm.reshape(reference.shape), reference) and arena > 0
    with_metadata, _ = micro.run_tflm(blob, q)  # TFLM ignores the metadata too
    assert np.array_equal(with_metadata, tflm)


def test_embedding_twice_replaces_the_metadata(tiny_models):
    once = metadata.embed(tiny_models["files"]["int8"], NAMES, name="a")
    twice = metadata.embed(once, [n.upper() for n in NAMES], name="b")
    assert metadata.read(twice)["metadata"]["name"] == "b" and metadata.labels(twice)[0] == "ZERO"
    assert len(twice) == len(once)
    assert len(audit.parse(twice).metadata) == len(audit.parse(once).metadata)


def test_encode_decode_round_trip_of_the_schema_tables():
    meta = {"name": "m", "version": "v1", "author": "me", "license": "Apache-2.0",
            "subgraph_metadata": [{"input_tensor_metadata": [{
                "name": "image", "dimension_names": ["batch", "h", "w", "c"],
                "content": {"content_properties": ("ImageProperties", {
                    "color_space": "RGB", "default_size": {"width": 3, "height": 2}}),
                    "range": {"min": 1, "max": 4}},
                "process_units": [{"options": ("NormalizationOptions", {"mean": [127.5] * 3,
                                                                        "std": [2.0] * 3})}]}],
                "output_tensor_metadata": [{"name": "p", "associated_files": [
                    {"name": "l.txt", "type": "TENSOR_VALUE_LABELS", "locale": "de"}]}]}],
            "min_parser_version": "1.0.0"}
    buf = metadata.encode(meta)
    assert buf[4:8] == b"M001"
    assert metadata.decode(buf) == meta
    with pytest.raises(PipelineError, match="no M001 identifier"):
        metadata.decode(b"\0" * 16)


@pytest.mark.parametrize("names, message", [
    (NAMES[:9], "the output's class axis has 10 scores but 9 class names were given"),
    (NAMES[:9] + ["two\nlines"], "cannot be a line of labels.txt"),
])
def test_bad_labels_are_one_line_errors(tiny_models, names, message):
    with pytest.raises(PipelineError, match=message) as caught:
        metadata.embed(tiny_models["files"]["int8"], names, name="x")
    assert "\n" not in str(caught.value).replace("two\\nlines", "")


def test_not_a_model_or_a_truncated_one_is_a_one_line_error(tiny_models):
    with pytest.raises(PipelineError, match="not a TFLite model"):
        metadata.embed(b"PK\x03\x04 not a model", NAMES, name="x")
    with pytest.raises(PipelineError, match="not a TFLite model"):
        metadata.read(b"hello")
    blob = metadata.embed(tiny_models["files"]["int8"], NAMES, name="x")
    with pytest.raises(PipelineError, match=r"^corrupt TFLite metadata \(.*\)$"):
        metadata.read(blob[:len(blob) // 2])
    with pytest.raises(PipelineError, match="corrupt TFLite flatbuffer"):
        metadata.embed(blob[:len(blob) // 2], NAMES, name="x")


def _tinted(gray: np.ndarray, seed: int = 0) -> np.ndarray:
    """Colour versions of grayscale images: each image times its own random RGB tint."""
    tint = np.random.default_rng(seed).uniform(0.6, 1.0, (len(gray), 1, 1, 3))
    return np.rint(gray.astype(np.float64) * tint).astype(np.uint8)


def test_rgb_input_computes_luminance_inside_a_full_int8_model(tiny_models):
    from pipeline import imaging

    keras_model = tiny_models["keras_model"]
    blob = export.convert(keras_model, "int8", tiny_models["x_train"][:200], "uint8", rgb_input=True)
    check = audit.audit(blob, "int8", io_dtype="uint8")
    model = edge.EdgeModel(blob)
    assert model.input == {"dtype": "uint8", "shape": [1, 8, 8, 3], "scale": 1.0, "zero_point": 0}
    assert set(check["ops"]) <= {"QUANTIZE", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
                                 "SOFTMAX"}
    rgb = _tinted(tiny_models["x_test"])
    keras_pred = keras_model.predict(imaging.to_channels(rgb, 1).astype(np.float32), verbose=0).argmax(1)
    agree = (model.predict(rgb).argmax(1) == keras_pred).mean()
    assert agree >= 0.97, agree

    float_blob = export.convert(keras_model, "float32", rgb_input=True)
    float_probs = edge.EdgeModel(float_blob).predict(rgb)
    luminance = (rgb.astype(np.float32) @ np.array(export.LUMA, np.float32))[..., None]
    keras_probs = keras_model.predict(luminance, verbose=0)
    assert np.abs(float_probs - keras_probs).max() < 1e-4  # the same luminance, unrounded


def test_rgb_input_leaves_an_rgb_model_alone():
    import keras

    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2),
                              keras.layers.Softmax()])
    plain, rgb = export.convert(model, "float32"), export.convert(model, "float32", rgb_input=True)
    assert edge.ops(plain) == edge.ops(rgb) and edge.EdgeModel(rgb).input["shape"] == [1, 6, 6, 3]


def test_export_embeds_metadata_and_rgb_input_in_the_published_files(own_run, tmp_path):
    result = invoke(["export", *own_run, "--set", "export.io_dtype=uint8", "--set", "export.rgb_input=true"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "exported" / "mine"
    card = json.loads((out / "model_card.json").read_text())
    names = card["class_names"]
    assert card["input"]["shape"] == [1, 8, 8, 3] and card["input"]["channels"] == 3
    for fmt, f in card["files"].items():
        blob = (out / f["file"]).read_bytes()
        assert f["metadata"] is True and f["sha256"] == artifacts.sha256_file(out / f["file"])
        assert f["bytes"] == len(blob) and metadata.labels(blob) == names
        image = metadata.read(blob)["metadata"]["subgraph_metadata"][0]["input_tensor_metadata"][0]
        assert image["content"]["content_properties"][1]["color_space"] == "RGB"
        assert f["input"]["shape"] == [1, 8, 8, 3]
    assert card["files"]["int8"]["input"]["dtype"] == "uint8"
    int8 = (out / "model_int8.tflite").read_bytes()
    cc = (out / "micro" / "model_data.cc").read_text()
    assert f"g_model_len = {len(metadata.strip(int8))};" in cc and len(metadata.strip(int8)) < len(int8)
    assert card["micro"]["tflm_matches_litert"] is True
    assert np.load(out / "micro" / "golden_inputs.npy").shape[1:] == (8, 8, 3)

    # a colour image through `cnnpipe predict`: the card says RGB, the file computes the luminance
    x = np.load(out / "micro" / "golden_inputs.npy")
    labels = np.load(out / "micro" / "golden_labels.npy")
    tinted = _tinted(x[:, :, :, :1].repeat(3, axis=-1), seed=1)
    want = edge.EdgeModel(int8).predict(tinted).argmax(1)
    paths = []
    for i, image in enumerate(tinted):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image, "RGB").save(paths[-1])
    result = invoke(["predict", out / "model_int8.tflite", *paths, "--json", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    got = [r["top"][0]["label"] for r in json.loads(result.output)]
    assert got == [names[k] for k in want]
    assert np.mean([g == names[k] for g, k in zip(got, labels)]) >= 0.5  # tiny model, 4 images: above chance


def test_export_without_metadata_writes_plain_files(own_run, tmp_path):
    result = invoke(["export", *own_run, "--set", "export.metadata=false"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "exported" / "mine"
    card = json.loads((out / "model_card.json").read_text())
    assert card["input"]["shape"] == [1, 8, 8, 1]
    for f in card["files"].values():
        assert f["metadata"] is False and metadata.read((out / f["file"]).read_bytes()) is None


@pytest.mark.parametrize("key", ["export.rgb_input", "export.metadata"])
def test_bad_values_exit_2_with_one_line_and_keep_the_bundle(own_run, tmp_path, key):
    before = file_hashes(tmp_path)
    result = invoke(["export", *own_run, "--set", f"{key}=maybe"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0]
    assert file_hashes(tmp_path) == before and not (tmp_path / "exported").exists()


SUPPORT_SCRIPT = r'''
import glob, json, sys
from tflite_support import metadata
from tflite_support.task import vision

model, images = sys.argv[1], sys.argv[2:]
shown = metadata.MetadataDisplayer.with_model_file(model)
classifier = vision.ImageClassifier.create_from_file(model)
tops = [classifier.classify(vision.TensorImage.create_from_file(p)).classifications[0].categories[0]
        for p in images]
print(json.dumps({"metadata": json.loads(shown.get_metadata_json()),
                  "packed": shown.get_packed_associated_file_list(),
                  "labels": shown.get_associated_file_buffer("labels.txt").decode(),
                  "top": [{"index": c.index, "name": c.category_name, "score": c.score} for c in tops]}))
'''
NO_NETWORK = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
              "Name or service not known", "No matching distribution found")


def _support_python():
    """A virtual environment holding tflite-support 0.4.4, made once under .venv-tflite-support/: it pins
    protobuf below 4, which TensorFlow 2.21 cannot use, so it cannot live in the project's environment."""
    import ctypes.util
    import fcntl
    import subprocess
    import sys

    from conftest import REPO

    if not ctypes.util.find_library("usb-1.0"):
        pytest.skip("tflite-support's native library needs libusb-1.0 (Debian package libusb-1.0-0)")
    venv = REPO / ".venv-tflite-support"
    with open(REPO / ".venv-tflite-support.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one creates, the other waits
        if not (venv / ".installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                   "tflite-support==0.4.4"], capture_output=True, text=True, timeout=900)
            if done.returncode != 0 and any(s in done.stderr for s in NO_NETWORK):
                pytest.skip(f"PyPI cannot be reached to install tflite-support: {done.stderr.strip()[-200:]}")
            assert done.returncode == 0, done.stderr[-2000:]
            (venv / ".installed").touch()
    return venv / "bin" / "python"


@pytest.mark.slow  # the first run creates the environment (2 minutes here); later runs take seconds
def test_tflite_support_task_library_reads_the_metadata(tiny_models, tmp_path):
    import subprocess

    python = _support_python()
    model = tmp_path / "digits_rgb_uint8.tflite"
    plain = export.convert(tiny_models["keras_model"], "int8", tiny_models["x_train"][:200], "uint8",
                           rgb_input=True)
    model.write_bytes(metadata.embed(plain, NAMES, name="digits"))
    rgb = _tinted(tiny_models["x_test"][:20], seed=2)
    paths = []
    for i, image in enumerate(rgb):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(image, "RGB").save(paths[-1])
    script = tmp_path / "support.py"
    script.write_text(SUPPORT_SCRIPT)
    done = subprocess.run([str(python), str(script), str(model), *map(str, paths)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    image = found["metadata"]["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["content"]["content_properties"]["color_space"] == "RGB"
    assert image["process_units"][0]["options"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert found["packed"] == ["labels.txt"] and found["labels"].splitlines() == NAMES
    litert = edge.EdgeModel(model.read_bytes()).predict(rgb)
    assert [t["index"] for t in found["top"]] == litert.argmax(1).tolist()
    assert [t["name"] for t in found["top"]] == [NAMES[k] for k in litert.argmax(1)]
