"""End to end through the CLI as a user calls it, and through the stage functions of the library."""
import json

import numpy as np
import pytest

from conftest import DEFAULT_CONFIG, TINY, invoke
from pipeline import artifacts, config, data, evaluate, stages

INT_TYPES = {np.int8, np.int32}


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _op_tensor_dtypes(it):
    """dtype of every tensor an op reads or writes, per op."""
    details = {d["index"]: d for d in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():
        idx = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        out.append((op["op_name"], {details[i]["dtype"] for i in idx}))
    return out


def test_every_stage_writes_its_files_and_manifest(tiny_run):
    run = tiny_run["run"]
    expected = {"data": ["classes.json", "preflight.json"], "model": ["model.keras", "summary.txt"],
                "train": ["model.keras", "history.csv"], "eval": ["metrics.json", "confusion_matrix.png"],
                "export": ["model_card.json", "report.md"]}
    for stage, files in expected.items():
        for name in files + ["manifest.json"]:
            assert (run / stage / name).is_file(), f"{stage}/{name}"
        m = artifacts.read_json(run / stage / "manifest.json")
        assert len(m["fingerprint"]) == 64 and m["versions"]["tensorflow"].startswith("2.21")
        assert m["wall_time_s"] >= 0 and m["outputs"]
        for entry in m["inputs"]:
            assert entry["sha256"] == artifacts.sha256_file(run / entry["path"])
    assert artifacts.read_json(run / "train" / "manifest.json")["config"]["train"]["epochs"] == 4
    meta = artifacts.read_json(run / "data" / "classes.json")
    assert meta["image_shape"] == [8, 8, 1] and meta["class_names"] == [str(i) for i in range(10)]
    assert sum(meta["counts"].values()) == 1797
    history = (run / "train" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 1 + 4
    assert (run / "train" / "tensorboard").is_dir()


def test_published_bundle_and_model_card(tiny_run):
    out = tiny_run["exported"]
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    card = json.loads((out / "model_card.json").read_text())
    assert card["input"]["shape"] == [1, 8, 8, 1] and card["input"]["range"] == [0, 255]
    assert card["class_names"] == [str(i) for i in range(10)]
    assert card["keras"]["params"] > 1000
    for fmt in ("float32", "int8"):
        f = card["files"][fmt]
        path = out / f["file"]
        assert f["bytes"] == path.stat().st_size and f["sha256"] == artifacts.sha256_file(path)
        assert 0.5 < f["parity"]["accuracy"] <= 1.0
    q = card["files"]["int8"]
    assert q["input"]["dtype"] == "int8" and q["output"]["dtype"] == "int8"
    assert q["input"]["scale"] == pytest.approx(1.0, rel=0.01) and q["input"]["zero_point"] == -128
    assert q["output"]["scale"] == pytest.approx(1 / 256) and q["output"]["zero_point"] == -128
    assert card["files"]["float32"]["parity"]["top1_changed"] == 0.0
    assert "| model_int8.tflite | int8 |" in (out / "report.md").read_text()


def test_int8_file_computes_every_op_in_int8(tiny_run):
    it = _interpreter(tiny_run["exported"] / "model_int8.tflite")
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    for op, dtypes in _op_tensor_dtypes(it):
        assert dtypes <= INT_TYPES, f"{op} touches {dtypes}"


def test_float32_tflite_matches_keras(tiny_run):
    from pipeline import models

    run = tiny_run["run"]
    x, _ = data.load_split(run / "data", "test")
    keras_probs = models.load(run / "train" / "model.keras").predict(x[:64].astype("float32"), verbose=0)
    it = _interpreter(tiny_run["exported"] / "model_float32.tflite")
    inp, outp = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    for image, expected in zip(x[:64], keras_probs):
        it.set_tensor(inp, image[None].astype(np.float32))
        it.invoke()
        np.testing.assert_allclose(it.get_tensor(outp)[0], expected, atol=1e-5)


def test_rerun_skips_and_export_key_reruns_export_only(tiny_run, monkeypatch):
    monkeypatch.chdir(tiny_run["root"])
    again = invoke(["run", "--config", DEFAULT_CONFIG, "--run", "tiny", *TINY])
    assert again.exit_code == 0, again.output
    assert again.output.count("up to date") == 5
    changed = invoke(["run", "--config", DEFAULT_CONFIG, "--run", "tiny", *TINY,
                      "--set", "export.io_dtype=uint8"])
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("up to date") == 4
    assert "[export]" in changed.output and "published" in changed.output
    it = _interpreter(tiny_run["exported"] / "model_int8.tflite")
    assert it.get_input_details()[0]["dtype"] == np.uint8
    assert it.get_input_details()[0]["quantization"][1] == 0
    for op, dtypes in _op_tensor_dtypes(it):
        assert dtypes <= INT_TYPES | {np.uint8}, f"{op} touches {dtypes}"
        if op not in ("QUANTIZE",):
            assert np.uint8 not in dtypes, f"{op} computes in uint8"
    # restore the shared run's int8 I/O for other tests
    invoke(["export", "--config", DEFAULT_CONFIG, "--run", "tiny", *TINY])


def test_stage_functions_as_a_library(tmp_path):
    cfg = config.load(DEFAULT_CONFIG, [s for s in TINY if s != "--set"] +
                      ["train.epochs=2", "export.max_accuracy_drop=100",
                       f"export.dest={tmp_path / 'exported'}"])
    run_dir = tmp_path / "runs" / "lib"
    results = [stages.STAGES[name](cfg, run_dir) for name in stages.ORDER]
    assert [r.skipped for r in results] == [False] * 5
    assert results[3].summary["n_test"] == 359
    assert (tmp_path / "exported" / "lib" / "model_int8.tflite").is_file()
    assert stages.evaluate(cfg, run_dir).skipped


def test_stage_out_of_order_is_a_usage_error(workdir):
    result = invoke(["export", "--config", DEFAULT_CONFIG, "--run", "fresh"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: runs/fresh/data/manifest.json: not found; run `cnnpipe ingest` before "
                      "`cnnpipe export`"]
    assert not (workdir / "exported").exists()


def test_metrics_exact_values():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = evaluate.metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["support"] == 2
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_default_config_reaches_97_percent_and_int8_within_one_point(workdir):
    """What `make train` + `make export-tflite` promise, on the real default config."""
    result = invoke(["run", "--config", DEFAULT_CONFIG, "--set", "train.verbose=0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "runs/default/eval/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.97
    card = json.loads((workdir / "exported/default/model_card.json").read_text())
    int8 = card["files"]["int8"]["parity"]
    assert int8["accuracy"] >= 0.97
    assert int8["accuracy_drop_points"] <= 1.0


def test_stages_need_a_committed_ingest(workdir):
    args = ["--config", DEFAULT_CONFIG, "--run", "half"]
    assert invoke(["ingest", *args]).exit_code == 0
    (workdir / "runs/half/data/manifest.json").unlink()  # as if ingest was killed before committing
    result = invoke(["build", *args])
    assert result.exit_code == 2
    assert ("runs/half/data/manifest.json: not found; run `cnnpipe ingest` before `cnnpipe build`"
            in result.output)
    assert not (workdir / "runs/half/model/model.keras").exists()


def test_make_splits_pools_a_source_without_train_split():
    cfg = config.load(None).data
    x = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1)
    y = np.repeat(np.arange(4), 50)
    splits = data.make_splits({"test": (x, y)}, cfg)
    assert sum(len(v[1]) for v in splits.values()) == 200
    assert all(set(np.unique(v[1])) == {0, 1, 2, 3} for v in splits.values())
    assert not np.array_equal(splits["train"][1], np.sort(splits["train"][1]))  # not in class order


def test_sgd_optimizer_trains_the_digits_above_chance(tmp_path):
    """train.optimizer=sgd: Nesterov momentum and decoupled weight decay as configured, and it learns."""
    from pipeline import train

    cfg = config.load(DEFAULT_CONFIG, [s for s in TINY if s != "--set"] +
                      ["train.optimizer=sgd", "train.learning_rate=0.05", "train.momentum=0.8",
                       "train.weight_decay=0.0005"])
    opt = train.optimizer(cfg.train, steps_per_epoch=10)
    assert type(opt).__name__ == "SGD" and opt.nesterov
    assert opt.momentum == pytest.approx(0.8) and opt.weight_decay == pytest.approx(0.0005)
    assert type(train.optimizer(config.load(DEFAULT_CONFIG, []).train, 10)).__name__ == "Adam"
    run_dir = tmp_path / "runs" / "sgd"
    for name in stages.ORDER[:4]:
        stages.STAGES[name](cfg, run_dir)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
