"""Resume a training run killed at any moment from its last completed epoch.

At the end of every epoch the training writes, under ``runs/<run>/train/checkpoint/``:

``epoch-NNNNN.weights.h5``  model and optimizer variables (the optimizer's iteration count included, so the
                            learning-rate schedule continues where it stopped)
``best-NNNNN.npz``          the best-so-far model weights early stopping restores at the end (written only
                            when the monitored value improved)
``state.json``              the commit point, written last: the key of the run (stage fingerprint and dtype
                            policy), completed epochs, early-stopping state (wait, best, best epoch, stopped
                            epoch), one history row per completed epoch, and the names of the two files above

Every file goes to a temporary name and is renamed, so a kill leaves the previous ``state.json`` and the files
it names intact; files no ``state.json`` names are removed at the next save. ``history.csv`` is rewritten
(atomically) from the state after every epoch, so it holds each epoch exactly once. A run whose key differs
(changed config or inputs) starts afresh; the stage removes the folder once the run is complete.
"""
from __future__ import annotations

import csv
import io
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError

STATE = "state.json"


@dataclass
class State:
    key: str
    epoch: int = 0                                          # completed epochs
    history: list = field(default_factory=list)             # one dict per completed epoch
    early_stopping: dict = field(default_factory=dict)      # wait, best, best_epoch, stopped_epoch
    weights: str = ""                                       # model + optimizer after `epoch` epochs
    best: str = ""                                          # best-so-far model weights

    def finished(self, epochs: int) -> bool:
        return self.epoch >= epochs or self.early_stopping.get("stopped_epoch", 0) > 0


class Checkpoint:
    """The resume state of one training run: read from ``read_dir``, written to ``write_dir``.

    The two differ only for a multi-worker task that is not the chief: it reads the chief's checkpoint
    (shared storage) and writes its own copy to a temporary folder.
    """

    def __init__(self, read_dir: Path, key: str, write_dir: Path | None = None):
        self.read_dir, self.key = Path(read_dir), key
        self.write_dir = Path(write_dir or read_dir)

    def load(self) -> State | None:
        """The saved state when it belongs to this run and its files are present, else None."""
        try:
            raw = artifacts.read_json(self.read_dir / STATE)
            state = State(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if state.key != self.key or not (self.read_dir / state.weights).is_file():
            return None
        if state.best and not (self.read_dir / state.best).is_file():
            return None
        return state

    def restore(self, model, state: State) -> None:
        """Load model and optimizer variables (build the optimizer first so its variables exist)."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(str(self.read_dir / state.weights))

    def best_weights(self, state: State) -> list | None:
        if not state.best:
            return None
        with np.load(self.read_dir / state.best) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]

    def save(self, model, state: State, best_weights: list | None = None) -> None:
        """Write the weights, the best weights when given, then ``state.json``; prune unnamed files."""
        d = self.write_dir
        d.mkdir(parents=True, exist_ok=True)
        ensure_space(d, model, best_weights is not None)
        state.weights = f"epoch-{state.epoch:05d}.weights.h5"
        with artifacts.atomic_path(d / state.weights, suffix=".weights.h5") as tmp:
            model.save_weights(str(tmp))
        if best_weights is not None:
            state.best = f"best-{state.epoch:05d}.npz"
            with artifacts.atomic_path(d / state.best, suffix=".npz") as tmp:
                np.savez(tmp, *best_weights)
        artifacts.write_json(d / STATE, asdict(state))
        keep = {STATE, state.weights, state.best}
        for path in d.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget a checkpoint of another run (different key) before starting afresh."""
        shutil.rmtree(self.write_dir, ignore_errors=True)


def peek(directory: Path) -> tuple[int, str] | None:
    """(completed epochs, key) of the checkpoint in ``directory``, or None when there is none."""
    try:
        raw = artifacts.read_json(Path(directory) / STATE)
        return int(raw["epoch"]), str(raw["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_space(directory: Path, model, with_best: bool) -> None:
    """Stop with one line, before writing, when the disk cannot hold the next checkpoint.

    A checkpoint holds the weights and the optimizer's variables (Adam: two per weight), and the best weights
    beside them; the files are written before the previous ones are pruned, so all must fit at once."""
    variables = list(model.weights) + list(getattr(model.optimizer, "variables", []) or [])
    need = sum(int(np.prod(v.shape)) * 4 for v in variables)
    if with_best:
        need += sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    need = int(need * 1.1) + (1 << 20)  # file headers, state.json, history.csv
    free = shutil.disk_usage(directory).free
    if free < need:
        raise PipelineError(f"{directory}: not enough free disk space for the checkpoint (needs about "
                            f"{artifacts.human_bytes(need)}, {artifacts.human_bytes(free)} free); free some "
                            f"space and run the same command again: training continues from the last epoch "
                            f"saved")


def history_csv(rows: list) -> str:
    """CSV text of the history rows: ``epoch`` first, then the other columns sorted."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_history(path: Path, rows: list) -> Path:
    return artifacts.write_text(path, history_csv(rows))


def callbacks(checkpoint: Checkpoint, state: State, history_path: Path, train_cfg,
              best_weights: list | None, replan=None) -> list:
    """[early stopping that continues from ``state``, the callback that saves ``state`` each epoch].

    ``replan(history) -> epochs``, when given, re-plans the schedule's length after each epoch; the
    history row records it as ``planned_epochs``."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            saved = state.early_stopping
            self.wait = int(saved.get("wait", 0))
            self.best = saved.get("best")
            self.best_epoch = int(saved.get("best_epoch", 0))
            self.best_weights = best_weights

        def snapshot(self) -> dict:
            return {"monitor": self.monitor, "wait": int(self.wait), "best_epoch": int(self.best_epoch),
                    "best": None if self.best is None else float(self.best),
                    "stopped_epoch": int(self.stopped_epoch), "patience": int(self.patience)}

    class SaveState(keras.callbacks.Callback):
        """Runs after early stopping at each epoch end: one history row, the checkpoint, history.csv."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": int(epoch), **{k: float(v) for k, v in (logs or {}).items()}}
            row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            earlier = [r for r in state.history if r["epoch"] < epoch]
            row["epoch_s"] = round(time.perf_counter() - getattr(self, "started", time.perf_counter()), 3)
            row["time_s"] = round(sum(r.get("epoch_s", 0.0) for r in earlier) + row["epoch_s"], 3)
            state.history = earlier + [row]
            if replan is not None:
                row["planned_epochs"] = replan(state.history)
            state.epoch = epoch + 1
            state.early_stopping = stopper.snapshot()
            budget = getattr(train_cfg, "time_budget_s", 0)
            if budget and row["time_s"] >= budget and state.epoch < train_cfg.epochs:
                # the wall-clock budget is spent: stop as early stopping would, and remember why
                self.model.stop_training = True
                state.early_stopping.update(stopped_epoch=state.epoch, stopped_by="train.time_budget_s")
            improved = stopper.best_epoch == epoch and stopper.best_weights is not None
            checkpoint.save(self.model, state, stopper.best_weights if improved else None)
            write_history(history_path, state.history)

    stopper = ResumableEarlyStopping(monitor="val_loss", patience=train_cfg.patience,
                                     restore_best_weights=True, verbose=0)
    return [stopper, SaveState()]
