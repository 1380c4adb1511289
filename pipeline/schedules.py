"""Learning-rate schedules: constant, or linear warm-up then cosine decay to 1% of the peak.

With ``train.time_budget_s`` the cosine decays over the epochs that fit the budget instead of
``train.epochs``: Keras' ``CosineDecay`` gets its length as a variable, and after each epoch :func:`replan`
sets it from :func:`planned_epochs` (the median epoch time so far). Training that the budget cuts short then
still ends at the schedule's low learning rates, where a fixed cosine would stop half-way down. The plan
depends on the machine's speed, so such a run is repeatable only as far as its timing is.
"""
from __future__ import annotations

import math
import statistics

ALPHA = 0.01  # the cosine ends at this fraction of the peak learning rate


def budgeted(train_cfg) -> bool:
    """Whether the cosine's length follows ``train.time_budget_s``."""
    return train_cfg.schedule == "cosine" and train_cfg.time_budget_s > 0


def _decay_steps(train_cfg, epochs: int, steps_per_epoch: int) -> int:
    """The cosine's length in steps: ``epochs`` less the warm-up (at least one step)."""
    return max(1, (epochs - train_cfg.warmup_epochs) * steps_per_epoch)


def learning_rate(train_cfg, steps_per_epoch: int, budget: bool = False):
    """A float for ``constant``; for ``cosine`` a Keras schedule (linear warm-up, then cosine decay), whose
    decay length is a variable for :func:`replan` when ``budget`` and :func:`budgeted`."""
    import keras

    if train_cfg.schedule == "constant":
        return train_cfg.learning_rate
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    decay = _decay_steps(train_cfg, train_cfg.epochs, steps_per_epoch)
    if budget and budgeted(train_cfg):
        decay = keras.Variable(float(decay), dtype="float32", trainable=False, name="decay_steps")
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, decay, alpha=ALPHA)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay, alpha=ALPHA, warmup_target=train_cfg.learning_rate, warmup_steps=warmup)


def replan(schedule, history: list, train_cfg, steps_per_epoch: int) -> int:
    """Set the decay length of a budgeted ``schedule`` to the epochs :func:`planned_epochs` gives after
    ``history``; returns them."""
    planned = planned_epochs(history, train_cfg.time_budget_s, train_cfg.epochs)
    schedule.decay_steps.assign(float(_decay_steps(train_cfg, planned, steps_per_epoch)))
    return planned


def planned_epochs(history: list, budget_s: float, epochs: int) -> int:
    """The epochs the schedule should span after the ``history`` rows (``epoch_s``, ``time_s``): as many
    as ``epochs``, fewer when the median epoch time (the first epoch left out) says they do not fit
    ``budget_s``. The last planned epoch is the one that crosses the budget, where training stops. The plan
    may grow again when epochs speed up: the rate then steps back up the cosine."""
    if budget_s <= 0 or not history:
        return epochs
    done = len(history)
    left = budget_s - float(history[-1]["time_s"])
    if left <= 0:
        return done
    times = [float(r["epoch_s"]) for r in history]
    # the first epoch also traces the graph and fills the input cache: left out once others are measured
    per_epoch = max(statistics.median(times[1:] or times), 1e-3)
    return min(epochs, done + math.ceil(left / per_epoch))
