"""``make benchmark``: which entries run, the config entries' figures read from a real run's outputs, and the
refusals that leave the user's files alone."""
import json
import shutil

from click.testing import CliRunner

from tasks import bench_tasks, benchmark


def test_default_entries_leave_out_the_slow_ones_and_full_runs_all():
    default = ["digits", "fashion", "sequences", "tasks", "transfer"]
    assert benchmark.chosen_entries((), (), full=False) == default
    assert benchmark.chosen_entries((), (), full=True) == list(benchmark.ENTRIES)
    # --only keeps the benchmark's own order, --skip removes from either
    assert benchmark.chosen_entries(("tasks", "digits"), (), full=False) == ["digits", "tasks"]
    assert benchmark.chosen_entries(("profile",), (), full=False) == ["profile"]
    assert benchmark.chosen_entries((), ("fashion", "transfer"), full=True) == [
        "digits", "sequences", "tasks", "profile", "large-folder"]
    assert bench_tasks.SEQUENCES == ("mnist1d",)
    assert set(bench_tasks.SEQUENCES_FULL) == {"mnist1d", "gunpoint", "arrowhead", "keywords"}
    for name in (*bench_tasks.TASKS, *bench_tasks.SEQUENCES_FULL):
        assert (benchmark.REPO / "configs" / bench_tasks.CONFIGS[name]).is_file()


def test_cpu_info_names_the_model_and_the_int8_features(tmp_path):
    x86 = tmp_path / "x86"
    core = "model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n"
    x86.write_text(f"processor\t: 0\n{core}\nprocessor\t: 1\n{core}")
    assert benchmark.cpu_info(x86) == {"model": "AMD EPYC",
                                       "features": ["avx2", "fma", "avx512f", "avx512_vnni"]}
    arm = tmp_path / "arm"                                    # a Raspberry Pi 5: no model name, Features
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd aes crc32 asimddp\n")
    assert benchmark.cpu_info(arm)["features"] == ["asimddp"]
    assert benchmark.cpu_info(tmp_path / "missing")["features"] is None


def test_config_entry_runs_each_stage_and_reads_the_run(tiny_run, tmp_path):
    """The entry runs the five stages of its config under its own run name, then reads parameters, accuracy,
    file sizes and the TFLM arena from what the run wrote (a real tiny run stands in for MNIST-1D)."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run["run"], work / "runs" / "bench_mnist1d")
    shutil.copytree(tiny_run["exported"], work / "exported" / "bench_mnist1d")
    calls, timed = [], []

    def fake_cnnpipe(args, cwd, env=None):
        calls.append([str(a) for a in args])
        assert cwd == work
        return 2.5

    def fake_bench(path, cwd, kernels="default"):
        timed.append(path.name)
        return {"mean_ms": 0.5, "p99_ms": 0.7}

    out = bench_tasks.one("mnist1d", work, benchmark.REPO, fake_cnnpipe, fake_bench)
    assert [c[0] for c in calls] == ["ingest", "build", "train", "evaluate", "export"]
    for c in calls:
        assert c[1:5] == ["--config", str(benchmark.REPO / "configs" / "mnist1d.yaml"), "--run",
                          "bench_mnist1d"]
    card = json.loads((tiny_run["exported"] / "model_card.json").read_text())
    summary = json.loads((tiny_run["run"] / "model" / "summary.json").read_text())["totals"]
    assert out["metric"] == "accuracy"
    assert out["params"] == summary["params"] and out["macs"] == summary["macs"] > 0
    assert out["keras_accuracy"] == round(card["keras"]["accuracy"], 4)
    int8 = card["files"]["int8"]
    assert out["int8_accuracy"] == round(int8["parity"]["accuracy"], 4)
    assert out["int8_bytes"] == int8["bytes"] == (tiny_run["exported"] / "model_int8.tflite").stat().st_size
    assert out["int8_drop_points"] == int8["parity"]["accuracy_drop_points"]
    assert out["int8_target"] == 0.94
    assert out["int8_meets_target"] == (out["int8_accuracy"] >= 0.94 and out["int8_drop_points"] <= 2.0)
    assert out["tflm_arena_bytes"] == card["micro"]["arena_bytes"] > 0
    assert out["train_seconds"] == 2.5 and out["pipeline_seconds"] == 12.5
    assert timed == ["model_float32.tflite", "model_int8.tflite"]
    assert out["litert_int8_ms"] == {"mean_ms": 0.5, "p99_ms": 0.7}
    assert "94%" in out["published"]


def test_detection_card_figures_use_the_task_metric(tmp_path):
    card = {"run": "bench_detect", "metric": "f1", "keras": {"f1": 0.95123, "n_test": 240},
            "files": {"float32": {"bytes": 1000, "parity": {"value": 0.95123, "drop_points": 0.0}},
                      "int8": {"bytes": 300, "parity": {"value": 0.88, "drop_points": 7.1}}},
            "micro": {"arena_bytes": 4096, "max_abs_diff_lsb": 0}}
    out = bench_tasks.figures("detect", card, {"params": 10, "macs": 20}, {"epochs_run": 3},
                              {"train": 1.0, "ingest": 1.0}, tmp_path, tmp_path, None)
    assert (out["keras_f1"], out["float32_f1"], out["int8_f1"]) == (0.9512, 0.9512, 0.88)
    assert out["int8_drop_points"] == 7.1 and out["int8_target"] == 0.90
    assert out["int8_meets_target"] is False
    assert "litert_int8_ms" not in out  # no file to time
    assert "published" not in out


def test_keywords_entry_without_clips_names_the_make_target(tmp_path):
    calls = []
    try:
        bench_tasks.one("keywords", tmp_path, tmp_path, lambda *a, **k: calls.append(a), None)
    except Exception as exc:  # click.ClickException: a one-line error, not a traceback
        assert "make keywords-data" in exc.format_message() and "benchmarks/data/keywords" in str(exc)
    else:
        raise AssertionError("no error without keyword clips")
    assert calls == []  # nothing ran, nothing was written
    assert list(tmp_path.iterdir()) == []


def test_benchmark_refuses_a_foreign_work_folder_and_writes_nothing(tmp_path):
    work, out = tmp_path / "mine", tmp_path / "results"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(benchmark.main, ["--work", str(work), "--out", str(out), "--only", "digits"])
    assert result.exit_code == 2
    assert "not a benchmark scratch folder" in result.output
    assert (work / "notes.txt").read_text() == "keep me"
    assert not out.exists()
    result = CliRunner().invoke(benchmark.main, ["--work", str(tmp_path / "w2"), "--out", str(out),
                                                 "--only", "tasks", "--skip", "tasks"])
    assert result.exit_code == 2 and "leave no entry to run" in result.output
    assert not out.exists() and not (tmp_path / "w2").exists()
    result = CliRunner().invoke(benchmark.main, ["--only", "nosuch"])
    assert result.exit_code == 2 and "nosuch" in result.output


def test_missing_data_is_refused_before_the_scratch_folder_is_emptied(tmp_path, monkeypatch):
    """A benchmark scratch folder from an earlier run stays as it was when an entry's data is missing."""
    work, out = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    (work / ".cnnpipe-benchmark").touch()
    (work / "earlier.json").write_text("{}")
    monkeypatch.setattr(benchmark, "FASHION_DIR", tmp_path / "no-fashion")
    args = ["--work", str(work), "--out", str(out)]
    result = CliRunner().invoke(benchmark.main, [*args, "--only", "transfer"])
    assert result.exit_code == 1 and "no-fashion: missing" in result.output
    monkeypatch.setattr(benchmark, "REPO", tmp_path)  # a checkout without spoken keyword clips
    result = CliRunner().invoke(benchmark.main, [*args, "--full", "--only", "sequences"])
    assert result.exit_code == 1 and "make keywords-data" in result.output
    assert sorted(p.name for p in work.iterdir()) == [".cnnpipe-benchmark", "earlier.json"]
    assert not out.exists()
