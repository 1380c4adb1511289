"""The TensorFlow-free runtime: EdgeModel, predict_files, bench, the bundle's predict.py, cnnpipe predict.

``tiny_models`` (shared with test_audit.py and test_micro.py) trains a 4-layer CNN on sklearn's 8x8 digits
for 3 epochs and converts it, at a fixed batch of 1, to every mode (about 12 s with the TensorFlow import).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tensorflow_free_env
from pipeline import bundle as bundle_mod
from pipeline import bundle_cli
from pipeline import edge
from pipeline.errors import PipelineError

from edge_models import NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bundle(tiny_models, tmp_path_factory):
    """A bundle like a published one: predict.py, requirements, two models, card, labels; labelled PNGs."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bundle")
    bundle_mod.write_runtime(folder)
    files = {"int8": "model_int8.tflite", "float32": "model_float32.tflite"}
    for fmt, name in files.items():
        (folder / name).write_bytes(tiny_models["files"][fmt])
    card = {"class_names": NAMES, "input": {"shape": [1, 8, 8, 1], "channels": 1, "image_size": [8, 8],
                                            "resize": "resize", "range": [0, 255]},
            "files": {fmt: {"file": name} for fmt, name in files.items()}}
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "labels.txt").write_text("\n".join(NAMES) + "\n")
    x, y = tiny_models["x_test"], tiny_models["y_test"]
    pred = edge.EdgeModel(tiny_models["files"]["int8"]).predict(x).argmax(1)
    right = [i for i in np.flatnonzero(pred == y) if y[i] in (0, 3, 7, 9)][:4]
    images = folder / "images"
    images.mkdir()
    paths = []
    for n, i in enumerate(right):  # one saved as RGB: the loader must convert it exactly as training did
        pil = Image.fromarray(x[i, :, :, 0])
        path = images / f"test{i}.png"
        (pil.convert("RGB") if n == 0 else pil).save(path)
        paths.append(path)
    return {"dir": folder, "images": paths, "labels": [NAMES[y[i]] for i in right]}


def _run(args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


# ---- must-show 1: predict and bench where importing tensorflow fails ------------------------------------
def test_bundle_predict_and_bench_without_tensorflow(bundle, tmp_path):
    env = tensorflow_free_env(tmp_path, block_pipeline=True)
    probe = _run(["-c", "import tensorflow"], env, bundle["dir"])
    assert probe.returncode != 0 and "blocked" in probe.stderr
    images = [str(p) for p in bundle["images"]]
    out = _run(["predict.py", "--json", *images], env, bundle["dir"])  # default model: the int8 file
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert [r["top"][0]["label"] for r in json.loads(out.stdout)] == bundle["labels"]
    args = ["predict.py", "--model", "model_float32.tflite", "--top-k", "2", images[0]]
    out = _run(args, env, bundle["dir"])
    assert out.returncode == 0 and out.stdout.split(": ")[1].startswith(bundle["labels"][0]), out.stderr
    out = _run(["predict.py", "bench", "--runs", "5", "--warmup", "1", "--json"], env, bundle["dir"])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["model"].endswith("model_int8.tflite") and result["runs"] == 5 and result["p99_ms"] > 0
    out = _run(["predict.py", "bench", "--runs", "5", "--kernels", "builtin"], env, bundle["dir"])
    assert out.returncode == 0 and out.stdout.rstrip().endswith("(builtin kernels)"), out.stderr
    out = _run(["predict.py", "bench", "--runs", "5", "--no-amx", "--json"], env, bundle["dir"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["no_amx"] is True and json.loads(out.stdout)["runs"] == 5


def test_cnnpipe_predict_and_bench_without_tensorflow(bundle, tmp_path):
    env = tensorflow_free_env(tmp_path, block_pipeline=False)
    model = str(bundle["dir"] / "model_int8.tflite")
    code = ("import sys; from tasks.cli import main; sys.argv = ['cnnpipe'] + sys.argv[1:]; main()")
    out = _run(["-c", code, "predict", "--json", model, *map(str, bundle["images"])], env, tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr  # no "INFO: Created ... XNNPACK delegate"
    assert [r["top"][0]["label"] for r in json.loads(out.stdout)] == bundle["labels"]
    report = tmp_path / "bench.json"
    out = _run(["-c", code, "bench", model, "--runs", "5", "--json-out", str(report)], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert {"init_ms", "first_ms", "mean_ms", "p50_ms", "p99_ms"} <= set(json.loads(report.read_text()))
    out = _run(["-c", "import pipeline.edge, pipeline.audit, pipeline.micro, tasks.predict, sys; "
                      "assert 'tensorflow' not in sys.modules"], env, tmp_path)
    assert out.returncode == 0, out.stderr


# ---- must-show (e): a .tflite that is not a model ----------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", bytes(range(256)) * 4],
                         ids=["empty", "text", "random"])
def test_not_a_model_is_one_line_error(tmp_path, bundle, content):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(content)
    with pytest.raises(PipelineError) as err:
        edge.EdgeModel(bad)
    assert "broken.tflite" in str(err.value) and "\n" not in str(err.value)
    from tasks.cli import cli

    result = CliRunner().invoke(cli, ["predict", str(bad), str(bundle["images"][0])])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "broken.tflite" in lines[0]


def test_float_model_matches_keras_and_int8_stays_close(tiny_models):
    x, y = tiny_models["x_test"], tiny_models["y_test"]
    keras_acc = (tiny_models["keras_probs"].argmax(1) == y).mean()
    assert keras_acc > 0.5  # trained: far above chance (0.1)
    f32 = edge.EdgeModel(tiny_models["files"]["float32"]).predict(x)
    np.testing.assert_allclose(f32, tiny_models["keras_probs"], atol=1e-4)
    for mode in ("int8", "uint8", "int16x8", "float16", "dynamic"):
        scores = edge.EdgeModel(tiny_models["files"][mode]).predict(x)
        assert scores.dtype == np.float32 and scores.shape == (len(x), 10)
        assert abs((scores.argmax(1) == y).mean() - keras_acc) < 0.03, mode


def test_quantization_uses_the_files_own_scale_and_zero_point(tiny_models):
    x = tiny_models["x_test"][:16]
    int8, uint8 = edge.EdgeModel(tiny_models["files"]["int8"]), edge.EdgeModel(tiny_models["files"]["uint8"])
    assert int8.input["dtype"] == "int8" and uint8.input["dtype"] == "uint8"
    assert (int8.input["scale"], int8.input["zero_point"]) == (1.0, -128)  # Rescaling(1/255) in the model
    np.testing.assert_array_equal(int8.quantize(x), (x.astype(np.int16) - 128).astype(np.int8))
    np.testing.assert_array_equal(uint8.quantize(x), x)
    i16 = edge.EdgeModel(tiny_models["files"]["int16x8"])
    expected = np.clip(np.rint(x / np.float32(i16.input["scale"])), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(i16.quantize(x), expected)
    np.testing.assert_allclose(int8.predict(x), uint8.predict(x), atol=1 / 256 + 1e-6)
    raw = int8.predict_raw(int8.quantize(x[:1]))
    assert raw.dtype == np.int8
    np.testing.assert_allclose(int8.dequantize(raw).reshape(-1), int8.predict(x[:1])[0])
    with pytest.raises(PipelineError, match="predict_raw needs int8"):
        int8.predict_raw(x[:1])  # uint8 pixels, not the quantized bytes
    with pytest.raises(PipelineError, match="expects images of shape"):
        int8.predict(np.zeros((1, 9, 9, 1), np.uint8))


def test_ops_and_tensor_details_show_every_op(tiny_models):
    assert edge.ops(tiny_models["files"]["int8"]) == ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
                                                      "SOFTMAX"]
    dtypes = {t["dtype"] for t in edge.tensor_details(tiny_models["files"]["int8"])}
    assert "float32" not in dtypes and "int8" in dtypes


def test_card_and_labels_are_checked(tiny_models, bundle, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_models["files"]["int8"])
    image = bundle["images"][1]
    digits = [str(i) for i in range(10)]  # no card, no labels.txt: the class indices
    assert edge.predict_files(model, [image], top_k=2)[0][0][0] in digits
    (tmp_path / "labels.txt").write_text("\n".join(NAMES) + "\n")
    top = edge.predict_files(model, [image], top_k=3)[0]
    assert len(top) == 3 and top[0][0] == bundle["labels"][1] and top[0][1] >= top[1][1] >= top[2][1]
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(PipelineError, match="lists 2 classes"):
        edge.predict_files(model, [image])
    card = {"input": {"channels": 1, "image_size": [16, 16]}}
    with pytest.raises(PipelineError, match="model card says"):
        edge.predict_files(model, [image], card=card)
    stale = {"file": "m.tflite", "input": {"scale": 0.5, "zero_point": 0}}
    card = {"class_names": NAMES, "files": {"int8": stale}}
    with pytest.raises(PipelineError, match="quantization"):
        edge.predict_files(model, [image], card=card)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    with pytest.raises(PipelineError, match="corrupt.png: cannot read image"):
        edge.predict_files(model, [corrupt], card={"class_names": NAMES})


def test_default_model_and_runtime_files(bundle, tmp_path):
    assert bundle_cli.default_model(bundle["dir"]).name == "model_int8.tflite"
    assert "ai-edge-litert" in (bundle["dir"] / "requirements.txt").read_text()
    with pytest.raises(PipelineError, match="no .tflite model"):
        bundle_cli.default_model(tmp_path)
    bundle_mod.check_self_contained(bundle_mod.runtime_source())
    for bad in ("import tensorflow as tf", "from pipeline.errors import PipelineError", "import sklearn"):
        with pytest.raises(PipelineError, match="would import"):
            bundle_mod.check_self_contained(bad)


def test_bench_reports_latency(bundle):
    result = edge.bench(bundle["dir"] / "model_float32.tflite", runs=10, warmup=2, num_threads=1)
    assert result["runs"] == 10 and result["threads"] == 1 and result["kernels"] == "default"
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] and result["init_ms"] > 0


def test_bench_with_each_kernel_set(bundle):
    """The same int8 file on LiteRT's builtin kernels and on its reference kernels: same outputs, and the
    reference kernels (plain loops, no SIMD) slower."""
    model = bundle["dir"] / "model_int8.tflite"
    times = {k: edge.bench(model, runs=30, warmup=3, num_threads=1, kernels=k)
             for k in ("builtin", "reference")}
    assert [times[k]["kernels"] for k in times] == ["builtin", "reference"]
    assert times["reference"]["p50_ms"] > times["builtin"]["p50_ms"]
    image = edge.EdgeModel(model).quantize(np.full((1, 8, 8, 1), 128, np.uint8))
    outputs = [edge.EdgeModel(model, kernels=k).predict_raw(image) for k in edge.KERNELS]
    assert all(np.abs(o.astype(int) - outputs[0].astype(int)).max() <= 1 for o in outputs)
    with pytest.raises(PipelineError, match="kernels: 'gpu' is not one of default, builtin, reference"):
        edge.EdgeModel(model, kernels="gpu")
    from tasks.cli import cli

    result = CliRunner().invoke(cli, ["bench", str(model), "--runs", "3", "--kernels", "builtin"])
    assert result.exit_code == 0 and "builtin kernels" in result.output.splitlines()[0]
    result = CliRunner().invoke(cli, ["bench", str(model), "--kernels", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of 'default', 'builtin', 'reference'" in result.output


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_help(command):
    from tasks.cli import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "MODEL" in result.output and "--threads" in result.output


# ---- hostile images: decompression bombs and one bad file among good ones ----------------------------------
def _declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height grayscale pixels and whose pixel data holds 64 zero bytes:
    enough for a tiny image, far too few for a large one (decoding it would fail as truncated, so only a check
    of the declared size, made before decoding, gives the decompression-bomb reason)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height, needle", [
    (100_000, 100_000, "declared 10,000,000,000 pixels is above the limit of 89,478,485"),  # Pillow's error
    (10_000, 10_000, "declared 10000x10000 = 100,000,000 pixels is above the limit of 89,478,485"),  # warns
])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, width, height, needle):
    import warnings

    from pipeline import imaging

    bomb = _declared_png(tmp_path / "bomb.png", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(ValueError, match="decompression bomb") as err:
            imaging.decode_file(bomb, 1)
    assert needle in str(err.value) and "\n" not in str(err.value)
    small = _declared_png(tmp_path / "small.png", 4, 4)  # the same file layout at a sane size decodes
    np.testing.assert_array_equal(imaging.decode_file(small, 1), np.zeros((4, 4, 1), np.uint8))


def _hostile_images(tmp_path: Path, bundle) -> list[str]:
    good = [str(p) for p in bundle["images"][:2]]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    bomb = _declared_png(tmp_path / "bomb.png", 100_000, 100_000)
    return [good[0], str(bomb), str(corrupt), str(tmp_path / "missing.png"), good[1]]


def test_cnnpipe_predict_reports_each_bad_image_and_classifies_the_rest(bundle, tmp_path):
    from tasks.cli import cli

    images = _hostile_images(tmp_path, bundle)
    model = str(bundle["dir"] / "model_int8.tflite")
    result = CliRunner().invoke(cli, ["predict", model, *images, "--top-k", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = result.stdout.splitlines()
    assert [r.split()[0] for r in rows] == [images[0], images[4]]
    assert [r.split()[1] for r in rows] == bundle["labels"][:2]
    errors = result.stderr.splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
    assert errors[0].startswith(f"error: {images[1]}: cannot read image (declared 10,000,000,000 pixels")
    assert errors[1].startswith(f"error: {images[2]}: cannot read image (")
    assert errors[2] == f"error: {images[3]}: cannot read image (No such file or directory)"
    result = CliRunner().invoke(cli, ["predict", model, *images, "--json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["image"] for r in rows] == images and [("top" in r) for r in rows] == [1, 0, 0, 0, 1]
    assert [r["top"][0]["label"] for r in (rows[0], rows[4])] == bundle["labels"][:2]
    assert "decompression bomb" in rows[1]["error"] and len(result.stderr.splitlines()) == 3


def test_bundle_predict_reports_each_bad_image_and_classifies_the_rest(bundle, tmp_path):
    env = tensorflow_free_env(tmp_path, block_pipeline=True)
    images = _hostile_images(tmp_path, bundle)
    out = _run(["predict.py", *images], env, bundle["dir"])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    rows = out.stdout.splitlines()
    assert [r.split(": ")[0] for r in rows] == [images[0], images[4]]
    assert [r.split(": ")[1].split(" (")[0] for r in rows] == bundle["labels"][:2]
    errors = out.stderr.splitlines()
    assert [e.split(": ")[1] for e in errors] == images[1:4] and all(e.startswith("error: ") for e in errors)
    assert "decompression bomb" in errors[0] and "No such file or directory" in errors[2]
    out = _run(["predict.py", "--json", images[1], images[0]], env, bundle["dir"])
    assert out.returncode == 1
    rows = json.loads(out.stdout)
    assert "decompression bomb" in rows[0]["error"] and rows[1]["top"][0]["label"] == bundle["labels"][0]


def test_bundle_predict_with_a_closed_stdout_ends_quietly(bundle, tmp_path):
    env = tensorflow_free_env(tmp_path, block_pipeline=True)
    images = [str(p) for p in bundle["images"]] * 50
    proc = subprocess.Popen([sys.executable, "predict.py", *images], cwd=bundle["dir"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head` after the reader has gone
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and stderr == "", stderr
