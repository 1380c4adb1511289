"""Resume after a kill: SIGKILL a training run after its first checkpoint, run it again, and it continues
from the last completed epoch (weights, optimizer and schedule, early stopping, history), not from epoch 1."""
from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pytest

from conftest import DEFAULT_CONFIG
from pipeline import artifacts, config, resume
from train_utils import cli_args, copy_prepared, history, prepared_run, run, sets, start

EPOCHS = 6


@pytest.fixture
def prepared(tmp_path_factory):
    return prepared_run(tmp_path_factory)


def _cfg(*extra):
    return config.load(DEFAULT_CONFIG, [s for s in sets(*extra) if s != "--set"])


def _wait_for(path, proc, timeout=180):
    end = time.time() + timeout
    while not path.is_file():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.time() < end, f"no {path} after {timeout} s"
        time.sleep(0.02)


def test_sigkill_after_first_checkpoint_then_rerun_resumes(prepared, tmp_path):
    run_dir = copy_prepared(prepared, tmp_path / "runs")
    extra = (f"train.epochs={EPOCHS}", "train.patience=100")  # early stopping must not end it sooner
    args = cli_args("train", tmp_path / "runs", *extra)
    state_file = run_dir / "train" / "checkpoint" / "state.json"

    proc = start(args, tmp_path, tmp_path / "first.log")
    try:
        _wait_for(state_file, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = artifacts.read_json(state_file)
    done = killed["epoch"]
    assert 1 <= done < EPOCHS, "the kill must land mid-training"
    assert not (run_dir / "train" / "manifest.json").exists()
    assert len(killed["history"]) == done

    output = run(args, tmp_path, tmp_path / "second.log")
    assert f"Epoch {done + 1}/{EPOCHS}" in output and "Epoch 1/" not in output
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))  # each epoch exactly once, in order
    for before, after in zip(killed["history"], rows):  # the epochs before the kill are kept as they were
        assert float(after["val_loss"]) == before["val_loss"]
    manifest = artifacts.read_json(run_dir / "train" / "manifest.json")
    assert manifest["summary"]["epochs_run"] == EPOCHS
    assert manifest["summary"]["resumed_from_epoch"] == manifest["resumed_from_epoch"] == done
    assert not (run_dir / "train" / "checkpoint").exists()  # a finished run leaves no resume state
    assert not list((run_dir / "train").glob(".*.tmp*"))
    _check_schedule_continued(rows, _cfg(*extra), run_dir)


def _check_schedule_continued(rows, cfg, run_dir, first_epoch=0):
    """The learning rate after each epoch is the schedule at (epoch + 1) * steps: the optimizer's iteration
    count was restored, not reset to zero at the resume."""
    from pipeline import data, train

    steps = math.ceil(data.read_meta(run_dir / "data")["counts"]["train"] / cfg.train.batch_size)
    schedule = train.learning_rate(cfg.train, steps)
    expected = [float(schedule((e + 1) * steps)) for e in range(first_epoch, first_epoch + len(rows))]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected, rtol=1e-5)


def test_finished_but_killed_before_the_manifest_does_not_train_again(prepared, tmp_path):
    """A kill after the last epoch, before the manifest: the rerun re-saves the model from the checkpoint."""
    from pipeline import train

    run_dir = copy_prepared(prepared, tmp_path / "runs")
    cfg = _cfg("train.epochs=2", "train.verbose=0")
    out = run_dir / "train"
    first = train.fit(run_dir / "model" / "model.keras", run_dir / "data", cfg, out)
    assert (out / "checkpoint" / "state.json").is_file()  # the stage removes it after the manifest
    csv_before = (out / "history.csv").read_bytes()
    (out / "model.keras").unlink()
    again = train.fit(run_dir / "model" / "model.keras", run_dir / "data", cfg, out)
    assert again["resumed_from_epoch"] == 2 and again["epochs_run"] == first["epochs_run"] == 2
    assert (out / "history.csv").read_bytes() == csv_before
    assert (out / "model.keras").is_file()


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    ckpt_dir = tmp_path / "checkpoint"
    ckpt_dir.mkdir()
    (ckpt_dir / "epoch-00003.weights.h5").write_bytes(b"x")
    artifacts.write_json(ckpt_dir / resume.STATE,
                         {"key": "old", "epoch": 3, "weights": "epoch-00003.weights.h5"})
    assert resume.Checkpoint(ckpt_dir, "new").load() is None
    assert resume.Checkpoint(ckpt_dir, "old").load().epoch == 3
    (ckpt_dir / "epoch-00003.weights.h5").unlink()
    assert resume.Checkpoint(ckpt_dir, "old").load() is None  # a state naming a missing file is not used


def _tiny_model():
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.01, 100)), "mse")
    return model


def test_checkpoint_round_trip_restores_weights_optimizer_and_early_stopping(tmp_path):
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model = _tiny_model()
    model.fit(x, y, epochs=2, verbose=0)
    ckpt = resume.Checkpoint(tmp_path / "checkpoint", "k")
    stray = tmp_path / "checkpoint" / ".epoch-00001.weights.h5.abc.tmp.weights.h5"
    stray.parent.mkdir()
    stray.write_bytes(b"half a file from a killed write")
    state = resume.State("k", epoch=2, history=[{"epoch": 0, "val_loss": 1.0}, {"epoch": 1, "val_loss": 0.5}],
                         early_stopping={"wait": 3, "best": 0.25, "best_epoch": 1, "stopped_epoch": 0})
    best = [w * 0 + 7 for w in model.get_weights()]
    ckpt.save(model, state, best)
    assert sorted(p.name for p in ckpt.write_dir.iterdir()) == [
        "best-00002.npz", "epoch-00002.weights.h5", "state.json"]  # the stray temp file is pruned

    restored = _tiny_model()
    loaded = ckpt.load()
    ckpt.restore(restored, loaded)
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 2
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    stopper, saver = resume.callbacks(ckpt, loaded, tmp_path / "history.csv", _cfg().train,
                                      ckpt.best_weights(loaded))
    stopper.set_model(restored)
    stopper.on_train_begin()
    assert (stopper.wait, stopper.best, stopper.best_epoch) == (3, 0.25, 1)
    assert all((w == 7).all() for w in stopper.best_weights)
    assert resume.history_csv(loaded.history).splitlines() == ["epoch,val_loss", "0,1.0", "1,0.5"]


@pytest.mark.slow
def test_multiworker_job_killed_then_restarted_resumes_from_the_chiefs_checkpoint(prepared, tmp_path):
    """Both workers SIGKILLed after the first checkpoint; restarted, both continue from it (shared runs/)."""
    from train_utils import cluster, free_ports, wait_all

    run_dir = copy_prepared(prepared, tmp_path / "runs")
    args = cli_args("train", tmp_path / "runs", f"train.epochs={EPOCHS}", "train.patience=100")
    state_file = run_dir / "train" / "checkpoint" / "state.json"
    for attempt in ("killed", "again"):
        ports = free_ports(2)
        logs = [tmp_path / f"{attempt}{i}.log" for i in range(2)]
        procs = [start(args, tmp_path, log, tf_config=cluster(ports, i)) for i, log in enumerate(logs)]
        if attempt == "killed":
            try:
                _wait_for(state_file, procs[0], timeout=240)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait(timeout=60)
            done = artifacts.read_json(state_file)["epoch"]
            assert 1 <= done < EPOCHS
        else:
            wait_all(procs, logs, timeout=300)
    for log in logs:
        assert f"resumed_from_epoch: {done}" in log.read_text()
    assert [int(r["epoch"]) for r in history(run_dir)] == list(range(EPOCHS))


def _kill_after_first_checkpoint(args, tmp_path, run_dir) -> int:
    proc = start(args, tmp_path, tmp_path / "killed.log")
    try:
        _wait_for(run_dir / "train" / "checkpoint" / "state.json", proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done = artifacts.read_json(run_dir / "train" / "checkpoint" / "state.json")["epoch"]
    assert 1 <= done < 4, "the kill must land mid-training"
    return done


def test_presentation_keys_and_more_epochs_keep_the_checkpoint(prepared, tmp_path):
    """train.verbose, data.shard_size and a larger train.epochs continue the checkpoint,
    schedule stretched."""
    run_dir = copy_prepared(prepared, tmp_path / "runs")
    done = _kill_after_first_checkpoint(cli_args("train", tmp_path / "runs", "train.epochs=4",
                                                 "train.patience=100"), tmp_path, run_dir)
    more = ("train.epochs=6", "train.patience=100", "train.verbose=1", "data.shard_size=500")
    output = run(cli_args("run", tmp_path / "runs", *more) + ["--until", "train"], tmp_path,
                 tmp_path / "more.log")
    assert f"resuming from epoch {done}" in output and "starts fresh" not in output
    assert "train-00000-of-00003.tfrecord" in output  # ingest really ran again with the new shard size
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    _check_schedule_continued(rows[done:], _cfg(*more), run_dir, first_epoch=done)


def test_a_changed_training_key_starts_fresh_and_says_so(prepared, tmp_path):
    run_dir = copy_prepared(prepared, tmp_path / "runs")
    _kill_after_first_checkpoint(cli_args("train", tmp_path / "runs", "train.epochs=4", "train.patience=100"),
                                 tmp_path, run_dir)
    output = run(cli_args("train", tmp_path / "runs", "train.epochs=4", "train.patience=100",
                          "train.learning_rate=0.002"), tmp_path, tmp_path / "fresh.log")
    line = next(x for x in output.splitlines() if "starts fresh" in x)
    assert "train.learning_rate" in line and "resuming" not in output
    assert "Epoch 1/4" in output and [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2, 3]


def test_a_disk_that_fills_during_training_is_one_line_and_keeps_the_last_checkpoint(prepared, tmp_path,
                                                                                     monkeypatch):
    import shutil as real_shutil

    from conftest import invoke

    run_dir = copy_prepared(prepared, tmp_path / "runs")
    saves = []
    usage = real_shutil.disk_usage

    def filling_disk(path):
        saves.append(path)
        total, used, free = usage(path)
        return type("Usage", (), {"total": total, "used": used, "free": free if len(saves) < 2 else 4096})()

    monkeypatch.setattr(resume.shutil, "disk_usage", filling_disk)
    args = ["train", "--config", DEFAULT_CONFIG, "--run", "r", "--runs-dir", tmp_path / "runs",
            *sets("train.epochs=3", "train.patience=100", "train.verbose=0")]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "not enough free disk space for the checkpoint" in errors[0], result.output
    assert "4 KiB free" in errors[0] or "4096 B free" in errors[0] or "4.0 KiB free" in errors[0]
    state = artifacts.read_json(run_dir / "train" / "checkpoint" / "state.json")
    assert state["epoch"] == 1 and (run_dir / "train" / "checkpoint" / state["weights"]).is_file()
    assert not (run_dir / "train" / "manifest.json").exists()
    monkeypatch.setattr(resume.shutil, "disk_usage", usage)  # space freed: the same command continues
    again = invoke(args)
    assert again.exit_code == 0, again.output
    assert "resuming from epoch 1" in again.output
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]


def test_time_budget_stops_after_the_epoch_that_spends_it_and_history_records_wall_time(prepared, tmp_path):
    from pipeline import train

    run_dir = copy_prepared(prepared, tmp_path / "runs")
    cfg = _cfg("train.epochs=5", "train.verbose=0", "train.time_budget_s=0.001", "train.patience=100")
    summary = train.fit(run_dir / "model" / "model.keras", run_dir / "data", cfg, run_dir / "train")
    assert summary["epochs_run"] == 1
    rows = history(run_dir)
    assert (len(rows) == 1 and float(rows[0]["epoch_s"]) > 0
            and float(rows[0]["time_s"]) == float(rows[0]["epoch_s"]))
    state = artifacts.read_json(run_dir / "train" / "checkpoint" / "state.json")
    assert state["early_stopping"]["stopped_by"] == "train.time_budget_s"
    again = train.fit(run_dir / "model" / "model.keras", run_dir / "data", cfg, run_dir / "train")
    assert again["epochs_run"] == 1 and again["resumed_from_epoch"] == 1  # a spent budget stays spent


def test_time_budget_cosine_ends_at_its_low_rate_within_the_budget_and_a_resume_keeps_the_plan(
        prepared, tmp_path, monkeypatch):
    """A clock on which every epoch takes 10 s: a 35 s budget holds 4 of 8 epochs, so the cosine is planned
    over 4 and the last one ends at 1% of the peak rate (a fixed 8-epoch cosine would still be at half).
    Stopped after 2 epochs and resumed, the run re-plans from its history and ends the same way."""
    import itertools
    import types

    from pipeline import schedules, train

    ticks = itertools.count(step=10.0)
    monkeypatch.setattr(resume, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    run_dir = copy_prepared(prepared, tmp_path / "runs")
    common = ("train.verbose=0", "train.time_budget_s=35", "train.patience=100", "train.warmup_epochs=1",
              "train.learning_rate=0.004")
    first = train.fit(run_dir / "model" / "model.keras", run_dir / "data", _cfg("train.epochs=2", *common),
                      run_dir / "train")
    assert first["epochs_run"] == 2
    cfg = _cfg("train.epochs=8", *common)
    summary = train.fit(run_dir / "model" / "model.keras", run_dir / "data", cfg, run_dir / "train")
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 4
    rows = history(run_dir)
    assert [float(r["time_s"]) for r in rows] == [10.0, 20.0, 30.0, 40.0]
    assert [int(r["planned_epochs"]) for r in rows] == [2, 2, 4, 4]  # the first call planned its own 2
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[1] == pytest.approx(0.004 * schedules.ALPHA, rel=1e-4)  # the 2-epoch plan's end
    assert rates[2] > rates[3] and rates[3] == pytest.approx(0.004 * schedules.ALPHA, rel=1e-4)
    state = artifacts.read_json(run_dir / "train" / "checkpoint" / "state.json")
    assert state["early_stopping"]["stopped_by"] == "train.time_budget_s"
