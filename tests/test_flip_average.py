"""Test-time flip averaging (export.flip_average): each file runs the model on the image and on its mirror
image and returns the mean of the two outputs; the Keras reference of the parity figures does the same."""
import json

import numpy as np
import pytest

from conftest import file_hashes, invoke, one_line_error
from pipeline import artifacts, edge, export
from pipeline.models import summary


def test_flip_average_probs_is_the_mean_over_the_image_and_its_mirror(tiny_models):
    model, x = tiny_models["keras_model"], tiny_models["x_test"][:64].astype(np.float32)
    got = export.flip_average_probs(model, x)
    want = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    assert got.shape == (64, 10) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-6
    assert np.abs(got - export.flip_average_probs(model, x[:, :, ::-1])).max() < 1e-6  # mirror-invariant
    assert np.abs(got - model.predict(x, verbose=0)).max() > 1e-3  # digits are not symmetric: it changes


@pytest.mark.parametrize("fmt", ["float32", "int8"])
def test_converted_file_averages_inside_and_shares_the_weights(tiny_models, fmt):
    model, x = tiny_models["keras_model"], tiny_models["x_test"]
    rep = tiny_models["x_train"][:200]
    plain = export.convert(model, fmt, rep)
    blob = export.convert(model, fmt, rep, flip_average=True)
    ops = edge.ops(blob)
    assert "REVERSE_V2" in ops and ops.count("CONV_2D") == 2 * edge.ops(plain).count("CONV_2D")
    # one copy of the weights: the tiny model's 5,770 parameters are 23 KB in float32, 5.8 KB in int8
    assert len(blob) - len(plain) < {"float32": 4_000, "int8": 3_000}[fmt], (len(blob), len(plain))
    runner = edge.EdgeModel(blob)
    assert runner.input["shape"] == [1, 8, 8, 1] and runner.output["shape"] == [1, 10]
    probs, ref = runner.predict(x), export.flip_average_probs(model, x)
    if fmt == "float32":
        assert np.abs(probs - ref).max() < 1e-5
    else:
        assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.97
        assert np.abs(probs - ref).max() < 0.1
        assert summary.measure_arena(blob, x) > 0  # TFLM runs REVERSE_V2


def test_export_with_flip_average_publishes_mirror_invariant_files(own_run, tmp_path):
    result = invoke(["export", *own_run, "--set", "export.flip_average=true"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "exported" / "mine"
    card = json.loads((out / "model_card.json").read_text())
    assert card["flip_average"] is True
    from pipeline import data, models

    run = tmp_path / "runs" / "mine"
    x, y = data.load_split(run / "data", "test", data.read_meta(run / "data"))
    keras_model = models.load(run / "train" / "model.keras", compile=False)
    ref = export.flip_average_probs(keras_model, x)
    assert card["keras"]["accuracy"] == pytest.approx(float((ref.argmax(1) == y).mean()), abs=1e-6)
    assert card["keras"]["accuracy"] > 0.5  # ten digits: chance is 0.1
    for fmt in ("float32", "int8"):
        f = card["files"][fmt]
        assert "REVERSE_V2" in f["ops"]
        assert f["parity"]["keras_accuracy"] == pytest.approx(card["keras"]["accuracy"], abs=1e-6)
        assert f["parity"]["accuracy_drop_points"] <= 1.0
        runner = edge.EdgeModel(out / f["file"])
        probs = runner.predict(x[:50])
        assert (probs.argmax(1) == runner.predict(x[:50, :, ::-1]).argmax(1)).all()  # mirror in, same out
    float_probs = edge.EdgeModel(out / "model_float32.tflite").predict(x)
    assert np.abs(float_probs - ref).max() < 1e-5
    assert card["micro"]["tflm_matches_litert"] is True
    assert "mirror image (export.flip_average)" in (out / "report.md").read_text()
    # the run report shows the evaluate stage's plain Keras accuracy and the flip-averaged one beside it
    html = (out / "report.html").read_text()
    plain = artifacts.read_json(run / "eval" / "metrics.json")["accuracy"]
    assert f"<dt>Keras accuracy</dt><dd><strong>{100 * plain:.2f}%</strong>" in html
    assert f"<dt>Keras, flip-averaged</dt><dd>{100 * card['keras']['accuracy']:.2f}%: the mean" in html
    # the labels the int8 file changes are counted against the Keras model averaged as the file averages
    from pipeline.report import looks

    meta = data.read_meta(run / "data")
    int8_pred = edge.EdgeModel(out / "model_int8.tflite").predict(x).argmax(1)
    passed = looks.test_pass(keras_model, run / "data", meta, out / "model_int8.tflite", flip_average=True)
    assert passed["n_changed"] == int((int8_pred != ref.argmax(1)).sum())
    assert passed["n_changed"] / len(y) == pytest.approx(card["files"]["int8"]["parity"]["top1_changed"],
                                                         abs=1e-6)
    assert passed["wrong"] == int((keras_model.predict(x, verbose=0).argmax(1) != y).sum())  # plain Keras


def test_export_without_flip_average_says_so_and_has_no_mirror(own_run, tmp_path):
    result = invoke(["export", *own_run])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "exported" / "mine" / "model_card.json").read_text())
    assert card["flip_average"] is False
    assert all("REVERSE_V2" not in f["ops"] for f in card["files"].values())
    assert "flip-averaged" not in (tmp_path / "exported" / "mine" / "report.html").read_text()


def _tree(root):
    """Every file's hash, less the run lock (it records the last command's process)."""
    return file_hashes(root, skip=(".lock",))


@pytest.mark.parametrize("setting, code, needle", [
    ("export.flip_average=maybe", 2, "export.flip_average: expected true or false"),
    ("model.task=detect", 2, "export.flip_average: only for model.task: classify"),
])
def test_bad_flip_average_settings_write_nothing(own_run, tmp_path, setting, code, needle):
    before = _tree(tmp_path)
    args = ["--set", "export.flip_average=true"] if "task" in setting else []
    result = invoke(["export", *own_run, *args, "--set", setting])
    one_line_error(result, code, needle)
    assert _tree(tmp_path) == before and not (tmp_path / "exported").exists()


def test_flip_average_of_a_sequence_run_is_refused_and_keeps_the_bundle(workdir):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 32)
    x = np.stack([np.stack([np.sin(2 * np.pi * (k + 1) * t + rng.uniform(0, 6)), rng.normal(0, 0.1, 32)], -1)
                  for k in np.repeat(np.arange(2), 30)]).astype(np.float32)
    y = np.repeat(np.arange(2), 30)
    np.savez(workdir / "w.npz", x=x, y=y)
    seq = ["--set", "data.source=npz:w.npz", "--set", "model.preset=conv1d", "--set", "model.filters=[4]",
           "--set", "model.dense=[]", "--set", "train.epochs=1", "--set", "train.verbose=0",
           "--set", "export.micro=false"]
    assert invoke(["run", "--run", "w", "--until", "train", *seq]).exit_code == 0
    before = _tree(workdir)
    result = invoke(["export", "--run", "w", *seq, "--set", "export.flip_average=true"])
    one_line_error(result, 1, "export.flip_average: only for classifiers of images", "sequence",
                   "nothing exported")
    assert _tree(workdir) == before and not (workdir / "exported").exists()
