"""The Fashion-MNIST benchmark's arithmetic: time to a validation accuracy, training rate, targets."""
import pytest

from tasks import bench_fashion

ROWS = [{"epoch": 0, "val_accuracy": 0.85, "epoch_s": 60.0, "time_s": 60.0},
        {"epoch": 1, "val_accuracy": 0.905, "epoch_s": 58.0, "time_s": 118.0},
        {"epoch": 2, "val_accuracy": 0.921, "epoch_s": 62.0, "time_s": 180.0}]


def test_time_to_threshold_is_the_first_epoch_that_reaches_it():
    assert bench_fashion.time_to(ROWS, 0.90) == 118.0
    assert bench_fashion.time_to(ROWS, 0.92) == 180.0
    assert bench_fashion.time_to(ROWS, 0.95) is None
    assert bench_fashion.training_rate(ROWS, 54000) == round(54000 * 3 / 180.0, 1)


def _figures(acc, params, drop, seconds_92, int8_ms, float_ms):
    return {"int8_test_accuracy": acc, "params": params, "int8_bytes": 90_000, "int8_drop_points": drop,
            "seconds_to_92pct_val": seconds_92,
            "latency_ms": {"int8": {"mean_ms": int8_ms}, "float32": {"mean_ms": float_ms}}}


def test_targets_are_judged_on_measured_values():
    results = {"default": _figures(0.941, 80_000, 0.1, 300.0, 0.2, 0.4),
               "baseline": _figures(0.91, 34_826, 0.0, 700.0, 0.1, 0.2)}
    t = bench_fashion.targets(results)
    assert all(v["met"] for v in t.values())
    results["default"] = _figures(0.935, 120_000, 0.5, 400.0, 0.5, 0.4)
    t = bench_fashion.targets(results)
    assert not any(v["met"] for k, v in t.items() if k != "int8_file_at_most_128kb")
    # the baseline never got there: any time of ours is half
    results["baseline"]["seconds_to_92pct_val"] = None
    assert bench_fashion.targets(results)["time_to_92_at_most_half_baseline"]["met"]


def test_table_shows_both_kernel_sets():
    def lat(int8_ms, float_ms):
        return {"int8": {"mean_ms": int8_ms, "p99_ms": 2 * int8_ms},
                "float32": {"mean_ms": float_ms, "p99_ms": 2 * float_ms}}

    results = {"default": _figures(0.93, 80_000, 0.1, 300.0, 0.36, 0.31),
               "baseline": _figures(0.91, 34_826, 0.0, 700.0, 0.12, 0.07)}
    for run, (xnn, builtin) in {"default": ((0.36, 0.31), (0.85, 1.03)),
                                "baseline": ((0.12, 0.07), (0.2, 0.25))}.items():
        results[run]["latency_ms"], results[run]["latency_builtin_ms"] = lat(*xnn), lat(*builtin)
    results["targets"] = bench_fashion.targets(results)
    lines = bench_fashion.table(results).splitlines()
    assert not any(line.startswith("XNNPACK no AMX") for line in lines)  # not timed: no row
    assert [line.split()[-2:] for line in lines if line.startswith("builtin kernels int8 mean_ms")] == \
        [["0.85", "0.2"]]
    results["default"]["latency_no_amx_ms"], results["baseline"]["latency_no_amx_ms"] = lat(0.07, 0.3), \
        lat(0.05, 0.1)
    lines = bench_fashion.table(results).splitlines()
    assert [line.split()[-2:] for line in lines if line.startswith("XNNPACK no AMX int8 mean_ms")] == \
        [["0.07", "0.05"]]
    p99 = [line.split()[-2:] for line in lines if line.startswith("latency float32 p99_ms")]
    assert p99 == [["0.62", "0.14"]]
    assert "target int8_faster_than_float" in lines[-1] and "NOT met ([0.36, 0.31])" in lines[-1]


def test_training_profile_keeps_the_median_of_interleaved_rounds(tmp_path):
    """Each variant runs `cnnpipe bench-data` in its own process with its batch size, arguments and
    environment; the figure kept is the median over rounds, and the ratio is against the default's median."""
    import json

    from tasks import bench_profile

    calls = []

    def fake_cnnpipe(args, cwd, env=None):
        calls.append((args[0], env))
        if args[0] == "bench-data":
            batch = args[args.index("--batch-size") + 1]
            rate = 800.0 + len(calls) + (100.0 if "--jit-compile" in args else 0.0) + batch
            out = args[args.index("--json-out") + 1]
            out.write_text(json.dumps({"training": {"images_per_second": rate}}))
        return 1.0

    repo = bench_profile.Path(__file__).resolve().parents[1]
    result = bench_profile.run(tmp_path, repo, fake_cnnpipe, rounds=3, steps=4)
    n = len(bench_profile.VARIANTS)
    assert [c[0] for c in calls] == ["ingest"] + ["bench-data"] * 3 * n
    assert calls[1 + n - 2][1] == {"TF_ENABLE_ONEDNN_OPTS": "0"}  # the last but one of the first round
    assert result["variants"]["TF backprop kernels"]["args"] == ["--set", "train.conv_backprop=builtin"]
    default = result["variants"]["default"]
    assert default["rounds"] == [800.0 + 2 + 128, 800.0 + 2 + n + 128, 800.0 + 2 + 2 * n + 128]
    assert default["images_per_second"] == 800.0 + 2 + n + 128 and default["vs_default"] == 1.0
    xla = result["variants"]["XLA (jit_compile)"]
    assert xla["images_per_second"] == 800.0 + 10 + n + 100 + 128
    assert xla["vs_default"] == round(xla["images_per_second"] / default["images_per_second"], 2)
    assert result["variants"]["batch 32"]["batch_size"] == 32
    lines = bench_profile.table(result).splitlines()
    assert len(lines) == n + 1 and lines[1].split()[:3] == ["default", f"{800 + 2 + n + 128:,}", "1.00x"]
    assert result["variants"]["default"]["batch_size"] == 128  # configs/fashion_mnist.yaml's train.batch_size


@pytest.mark.parametrize("amx", [False, True])
def test_compare_trains_each_config_under_its_own_run_name(tmp_path, monkeypatch, amx):
    """The two configs run as fashion_default and fashion_baseline, never as `default` (the digits entry's
    run in the same scratch folder), each with the training budget (which plans the default's schedule up to
    100 epochs; the baseline's runs until it), and both kernel sets are timed; on a CPU with AMX XNNPACK is
    timed without it too."""
    calls, timed, latency = [], [], {}

    def fake_cnnpipe(args, cwd):
        calls.append([str(a) for a in args])

    def fake_bench(path, cwd, kernels, no_amx):
        timed.append((path.parent.name, path.name, kernels, no_amx))
        return {"mean_ms": 0.3}

    made = {"fashion_default": _figures(0.93, 80_000, 0.1, 500.0, 0.35, 0.3),
            "fashion_baseline": _figures(0.915, 34_826, 0.1, None, 0.1, 0.07)}
    monkeypatch.setattr(bench_fashion, "figures",
                        lambda work, run, lat: latency.setdefault(run, lat) and dict(made[run]))
    results = bench_fashion.compare(tmp_path, bench_fashion.Path("/repo"), 300.0, fake_cnnpipe, fake_bench,
                                    amx)
    assert [c[c.index("--run") + 1] for c in calls] == ["fashion_default", "fashion_baseline"]
    assert all("train.time_budget_s=300.0" in c for c in calls)
    assert "train.epochs=100" in calls[0] and not any(a.startswith("train.epochs") for a in calls[1])
    assert calls[0][2].endswith("configs/fashion_mnist.yaml")
    assert calls[1][2].endswith("configs/fashion_baseline.yaml")
    kinds = {("default", False), ("builtin", False)} | ({("default", True)} if amx else set())
    assert len(timed) == 4 * len(kinds) and {(k, n) for _, _, k, n in timed} == kinds
    assert sorted(latency["fashion_default"]) == sorted(["latency_ms", "latency_builtin_ms"]
                                                        + (["latency_no_amx_ms"] if amx else []))
    assert latency["fashion_default"]["latency_ms"] == {"float32": {"mean_ms": 0.3}, "int8": {"mean_ms": 0.3}}
    assert results["default"]["params"] == 80_000 and results["baseline"]["params"] == 34_826
    assert results["targets"]["time_to_92_at_most_half_baseline"]["met"]
    assert not results["targets"]["int8_accuracy_at_least_94"]["met"]


@pytest.mark.parametrize("flip", [False, True])
def test_figures_count_both_passes_of_a_flip_averaged_file(tmp_path, flip):
    """A file with export.flip_average runs the model twice per image: its MACs per image are twice the
    model's, and the table says so."""
    from pipeline import artifacts

    run = tmp_path / "runs" / "r"
    (run / "train").mkdir(parents=True)
    (run / "train" / "history.csv").write_text(
        "epoch,epoch_s,time_s,val_accuracy\n" + "".join(f"{r['epoch']},{r['epoch_s']},{r['time_s']},"
                                                        f"{r['val_accuracy']}\n" for r in ROWS))
    artifacts.write_json(run / "data" / "classes.json", {"counts": {"train": 54000}})
    artifacts.write_json(run / "model" / "summary.json", {"totals": {"params": 78138, "macs": 9345920}})
    parity = {"accuracy": 0.9401, "accuracy_drop_points": 0.05}
    artifacts.write_json(tmp_path / "exported" / "r" / "model_card.json", {
        "flip_average": flip, "keras": {"accuracy": 0.9406},
        "files": {"int8": {"bytes": 99000, "parity": parity}}, "micro": {"arena_bytes": 45000}})
    got = bench_fashion.figures(tmp_path, "r", {})
    assert got["flip_average"] is flip and got["macs_per_image"] == 9345920 * (2 if flip else 1)
    assert got["params"] == 78138 and got["epochs"] == 3 and got["seconds_to_92pct_val"] == 180.0
    assert got["int8_test_accuracy"] == 0.9401 and got["tflm_arena_bytes"] == 45000
    results = {"default": got, "baseline": dict(got, flip_average=False),
               "targets": {}}
    row = next(line for line in bench_fashion.table(results).splitlines() if line.startswith("flip_average"))
    assert row.split()[1:] == ["yes" if flip else "no", "no"]
