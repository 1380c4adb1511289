"""The published uint8 model in the runtime apps already use: MediaPipe Tasks' ImageClassifier.

`cnnpipe export` with export.io_dtype=uint8 and export.rgb_input=true; MediaPipe reads the class names from
the file's own metadata (no labels passed), classifies colour PNG files as an app would, and agrees with
LiteRT. MediaPipe runs in a child process with nothing of TensorFlow loaded, as on a phone.
mediapipe 1.2.2 needs no protobuf, so it installs beside TensorFlow 2.21 (the `test` extra).
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import DEFAULT_CONFIG, TINY, invoke
from pipeline import data, edge, metadata

CLASSIFY = r'''
import json, sys
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision

images, out = [mp.Image.create_from_file(path) for path in sys.argv[2:]], {}
for model in sys.argv[1].split(","):
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        tops = [classifier.classify(image).classifications[0].categories[0] for image in images]
    out[model] = [{"index": c.index, "name": c.category_name, "score": c.score} for c in tops]
print(json.dumps(out))
'''


def _classify(models, paths, tmp_path) -> dict:
    """{model path: [{"index", "name", "score"} of the top class of each image]} from MediaPipe."""
    script = tmp_path / "classify.py"
    script.write_text(CLASSIFY)
    done = subprocess.run([sys.executable, str(script), ",".join(map(str, models)), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "No module named 'mediapipe'" in done.stderr:
        pytest.fail("mediapipe is not installed: it is a test dependency (pip install -e '.[test]')")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def published(tiny_run, tmp_path, monkeypatch):
    """The tiny run exported with a uint8 RGB input, and colour PNGs of its first 40 test images."""
    shutil.copytree(tiny_run["run"], tmp_path / "runs" / "app")
    monkeypatch.chdir(tmp_path)
    result = invoke(["export", "--config", DEFAULT_CONFIG, "--run", "app", *TINY,
                     "--set", "export.io_dtype=uint8", "--set", "export.rgb_input=true"])
    assert result.exit_code == 0, result.output
    gray, labels = data.load_split(tmp_path / "runs" / "app" / "data", "test")
    tint = np.random.default_rng(3).uniform(0.7, 1.0, (40, 1, 1, 3))
    rgb = np.rint(gray[:40].astype(np.float64) * tint).astype(np.uint8)
    paths = []
    for i, image in enumerate(rgb):
        paths.append(tmp_path / "images" / f"{i:02d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image, "RGB").save(paths[-1])
    return {"dir": tmp_path / "exported" / "app", "paths": paths, "rgb": rgb, "labels": labels[:40]}


def test_mediapipe_image_classifier_names_classes_from_the_file_metadata(published, tmp_path):
    model = published["dir"] / "model_int8.tflite"
    card = json.loads((published["dir"] / "model_card.json").read_text())
    names = card["class_names"]
    assert card["files"]["int8"]["input"] == {"dtype": "uint8", "shape": [1, 8, 8, 3], "scale": 1.0,
                                              "zero_point": 0}
    assert metadata.labels(model.read_bytes()) == names  # the only place MediaPipe can find them

    bare = tmp_path / "bare.tflite"  # the same model without metadata: MediaPipe has no names to give
    bare.write_bytes(metadata.strip(model.read_bytes()))
    float_model = published["dir"] / "model_float32.tflite"  # float input: MediaPipe uses the normalization
    found = _classify([model, bare, float_model], published["paths"], tmp_path)
    rows = found[str(model)]
    litert = edge.EdgeModel(model).predict(published["rgb"])
    assert [r["name"] for r in rows] == [names[r["index"]] for r in rows]  # names, not bare indices
    assert [r["index"] for r in rows] == litert.argmax(1).tolist()
    scores = np.array([r["score"] for r in rows])
    assert np.abs(scores - litert.max(1)).max() < 1e-6
    accuracy = np.mean([r["name"] == names[k] for r, k in zip(rows, published["labels"])])
    assert accuracy >= 0.8, accuracy  # 10 classes: chance is 0.1; the tiny model reaches about 0.89
    assert {r["name"] for r in found[str(bare)]} == {None}
    assert [r["index"] for r in found[str(bare)]] == [r["index"] for r in rows]
    float_rows = found[str(float_model)]
    float_litert = edge.EdgeModel(float_model).predict(published["rgb"])
    assert [r["index"] for r in float_rows] == float_litert.argmax(1).tolist()
    assert np.abs(np.array([r["score"] for r in float_rows]) - float_litert.max(1)).max() < 1e-5
    assert [r["name"] for r in float_rows] == [names[r["index"]] for r in float_rows]
