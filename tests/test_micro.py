"""The microcontroller bundle: TFLM reproduces LiteRT on golden vectors, and the C files compile with g++."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from pipeline import micro
from pipeline.errors import PipelineError

from edge_models import NAMES


@pytest.fixture(scope="session")
def micro_bundle(tiny_models, tmp_path_factory):
    dest = tmp_path_factory.mktemp("micro")
    result = micro.write_bundle(tiny_models["files"]["int8"], tiny_models["x_test"], tiny_models["y_test"],
                                NAMES, dest, 8)
    return dest, result


# ---- must-show 2: TFLM equals LiteRT on the golden vectors; arena bytes reported --------------------------
def test_tflm_matches_litert_on_golden_vectors(tiny_models, micro_bundle):
    dest, result = micro_bundle
    assert result["tflm_matches_litert"] is True and result["max_abs_diff_lsb"] <= 1
    assert result["arena_bytes"] > 0 and result["arena_bytes"] % 16 == 0
    assert result["ops"] == ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE", "SOFTMAX"]
    inputs, outputs = np.load(dest / "golden_inputs.npy"), np.load(dest / "golden_outputs.npy")
    assert inputs.dtype == np.int8 and inputs.shape == (8, 8, 8, 1) and outputs.shape == (8, 10)
    expected = (tiny_models["x_test"][:8].astype(np.int16) - 128).astype(np.int8)
    np.testing.assert_array_equal(inputs, expected)
    np.testing.assert_array_equal(np.load(dest / "golden_labels.npy"), tiny_models["y_test"][:8])
    # independently, straight from the .npy files
    tflm, arena = micro.run_tflm(tiny_models["files"]["int8"], inputs)
    assert arena == result["arena_bytes"]
    assert np.abs(tflm.astype(int) - outputs.astype(int)).max() <= 1
    with np.load(dest / "golden.npz") as npz:
        assert list(npz["class_names"]) == NAMES and float(npz["input_scale"]) == 1.0


def test_uint8_model_runs_in_tflm(tiny_models, tmp_path):
    result = micro.write_bundle(tiny_models["files"]["uint8"], tiny_models["x_test"], tiny_models["y_test"],
                                NAMES, tmp_path, 4)
    assert result["max_abs_diff_lsb"] <= 1 and "QUANTIZE" in result["ops"]
    assert "static const uint8_t g_golden_inputs[4][64]" in (tmp_path / "golden_vectors.h").read_text()


def test_tflm_disagreement_fails_and_writes_nothing(tiny_models, tmp_path, monkeypatch):
    real = micro.run_tflm

    def off_by_two(model_bytes, inputs_q):
        outputs, arena = real(model_bytes, inputs_q)
        return np.clip(outputs.astype(int) + 2, -128, 127).astype(np.int8), arena

    monkeypatch.setattr(micro, "run_tflm", off_by_two)
    with pytest.raises(PipelineError, match="differs from LiteRT by 2 LSB"):
        micro.write_bundle(tiny_models["files"]["int8"], tiny_models["x_test"], tiny_models["y_test"],
                           NAMES, tmp_path / "m", 4)
    assert not (tmp_path / "m").exists()


def test_golden_vectors_need_a_quantized_model(tiny_models):
    with pytest.raises(PipelineError, match="quantized model"):
        micro.golden_vectors(tiny_models["files"]["float32"], tiny_models["x_test"], tiny_models["y_test"], 4)


def test_c_array_holds_the_exact_bytes_aligned(tiny_models):
    blob = tiny_models["files"]["int8"]
    cc, h = micro.c_array(blob, arena_bytes=4096)
    assert "alignas(16) const unsigned char g_model[] = {" in cc
    assert f"const unsigned int g_model_len = {len(blob)};" in cc
    body = cc[cc.index("{") + 1:cc.index("};")]
    assert bytes(int(v, 16) for v in re.findall(r"0x[0-9a-f]{2}", body)) == blob
    assert "MicroMutableOpResolver<5> resolver;" in h and "resolver.AddConv2D();" in h
    assert "resolver.AddMaxPool2D();" in h and "g_model_arena_bytes = 4096" in h
    with pytest.raises(ValueError, match="C identifier"):
        micro.c_array(blob, name="1bad-name")


@pytest.mark.parametrize("op, method", [
    ("CONV_2D", "AddConv2D"), ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"), ("MAX_POOL_2D", "AddMaxPool2D"),
    ("FULLY_CONNECTED", "AddFullyConnected"), ("SPACE_TO_BATCH_ND", "AddSpaceToBatchNd"),
    ("L2_NORMALIZATION", "AddL2Normalization"), ("RELU6", "AddRelu6"), ("BATCH_MATMUL", "AddBatchMatMul"),
    ("PADV2", "AddPadV2"), ("HARD_SWISH", "AddHardSwish"),
])
def test_resolver_method_names(op, method):
    assert micro.resolver_method(op) == method


# ---- must-show 4: the C files compile (and the array is really 16-byte aligned) --------------------------
MAIN_CC = """
#include <cstdint>
#include <cstdio>
#include "model_data.h"
#include "golden_vectors.h"
int main() {
  if (reinterpret_cast<uintptr_t>(g_model) % 16 != 0) return 1;
  if (g_model_len != MODEL_LEN) return 2;
  if (g_model[4] != 'T' || g_model[7] != '3') return 3;
  static_assert(g_golden_count == 8 && g_golden_input_size == 64 && g_golden_output_size == 10, "sizes");
  if (g_golden_outputs[0][g_golden_labels[0]] < -128 || g_golden_inputs[0][0] < -128) return 4;
  std::printf("%s %u\\n", g_golden_class_names[g_golden_labels[0]], g_model_arena_bytes);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_model_data_compiles_with_gxx(tiny_models, micro_bundle):
    dest, result = micro_bundle

    def run(*cmd):
        return subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=120)

    out = run("g++", "-std=c++17", "-Wall", "-Werror", "-c", "model_data.cc", "-o", "model_data.o")
    assert out.returncode == 0, out.stderr
    (dest / "main.cc").write_text(MAIN_CC.replace("MODEL_LEN", str(len(tiny_models["files"]["int8"]))))
    out = run("g++", "-std=c++17", "-Wall", "-Werror", "main.cc", "model_data.o", "-o", "check")
    assert out.returncode == 0, out.stderr
    out = run(str(dest / "check"))
    assert out.returncode == 0, out
    assert out.stdout.split() == [NAMES[tiny_models["y_test"][0]], str(result["arena_bytes"])]


# ---- class names that are legal must compile: C string literals and comments escaped ---------------------
ODD_NAMES = ["😀 smile", 'say "hi"', "back\\slash", "ends with \\", "close */ and /* open", "what??= ??/ ??(",
             "naïve Ωμέγα 日本語", "%s %n 100%", "7", "👩‍🔬 \u00a0nbsp"]

ODD_MAIN_CC = """
#include <cstdio>
#include "model_data.h"
#include "golden_vectors.h"
COMMENTS
int main() {
  static_assert(g_golden_class_count == 10, "class count");
  for (int i = 0; i < g_golden_class_count; ++i) std::printf("%s\\n", g_golden_class_names[i]);
  return g_model_arena_bytes == 4096 ? 0 : 1;
}
"""


def test_c_string_escapes_every_byte_that_matters():
    assert micro.c_string('a"b\\c?d') == '"a\\"b\\\\c\\?d"'
    assert micro.c_string("é1") == '"\\303\\2511"'  # octal escapes: a following digit is not swallowed
    assert micro.c_string("??=") == '"\\?\\?="'
    for name in ODD_NAMES:
        comment = micro.c_comment(name)
        assert comment.isascii() and "\\" not in comment and "??" not in comment
        assert "*/" not in comment and "/*" not in comment and "\n" not in comment


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_odd_class_names_compile_and_print_back_exactly(tiny_models, tmp_path):
    blob = tiny_models["files"]["int8"]
    vectors = micro.golden_vectors(blob, tiny_models["x_test"], tiny_models["y_test"], 2)
    micro.write_golden(vectors, ODD_NAMES, tmp_path)
    cc, h = micro.c_array(blob, arena_bytes=4096)
    (tmp_path / "model_data.cc").write_text(cc)
    (tmp_path / "model_data.h").write_text(h)
    comments = "\n".join(f"// {micro.c_comment(n)}\n/* {micro.c_comment(n)} */" for n in ODD_NAMES)
    (tmp_path / "main.cc").write_text(ODD_MAIN_CC.replace("COMMENTS", comments), encoding="utf-8")
    for std in ("c++17", "c++11"):
        out = subprocess.run(["g++", f"-std={std}", "-Wall", "-Wextra", "-Werror", "main.cc", "model_data.cc",
                              "-o", "check"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        run = subprocess.run([str(tmp_path / "check")], capture_output=True, timeout=30)
        assert run.returncode == 0 and run.stdout.decode("utf-8").split("\n")[:-1] == ODD_NAMES
    with np.load(tmp_path / "golden.npz") as npz:
        assert list(npz["class_names"]) == ODD_NAMES


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_odd_class_folder_names_work_end_to_end(workdir):
    """Folder classes named with an emoji, quotes, a backslash, `??=` and non-ASCII letters: ingest to the
    published bundle; the micro headers compile and print the names back, predict.py prints them (~45 s)."""
    import json
    import sys

    from PIL import Image

    from conftest import DEFAULT_CONFIG, invoke

    names = ["😀 smile", 'say "hi" *', "back\\slash ??= naïve"]
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):  # class k: a bright band in its own place
        (workdir / "data" / name).mkdir(parents=True)
        for i in range(40):
            img = rng.integers(0, 40, (8, 8), dtype=np.uint8)
            band = [(slice(None), slice(0, 3)), (slice(0, 3), slice(None)), (slice(5, 8), slice(5, 8))][k]
            img[band] += 200
            Image.fromarray(img).save(workdir / "data" / name / f"{i}.png")
    result = invoke(["run", "--config", DEFAULT_CONFIG, "--run", "odd", "--set", "data.source=folder:data",
                     "--set", "data.test_fraction=0.25", "--set", "model.filters=[8]",
                     "--set", "model.dense=[16]",
                     "--set", "train.epochs=3", "--set", "train.warmup_epochs=0", "--set", "train.verbose=0",
                     "--set", "export.representative_samples=50", "--set", "export.golden_vectors=4"])
    assert result.exit_code == 0, result.output
    assert json.loads((workdir / "runs/odd/eval/metrics.json").read_text())["accuracy"] > 0.9  # chance: 1/3
    bundle = workdir / "exported" / "odd"
    assert (bundle / "labels.txt").read_text(encoding="utf-8").splitlines() == sorted(names)
    micro_dir = bundle / "micro"
    (micro_dir / "main.cc").write_text(ODD_MAIN_CC.replace("COMMENTS", "").replace("== 10", "== 3")
                                       .replace("g_model_arena_bytes == 4096", "g_model_arena_bytes > 0"))
    out = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "main.cc", "model_data.cc",
                          "-o", "check"], cwd=micro_dir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run = subprocess.run([str(micro_dir / "check")], capture_output=True, timeout=30)
    assert run.returncode == 0 and run.stdout.decode("utf-8").splitlines() == sorted(names)
    image = workdir / "data" / names[0] / "0.png"
    out = subprocess.run([sys.executable, "predict.py", "--json", str(image)], cwd=bundle,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["top"][0]["label"] == names[0]
