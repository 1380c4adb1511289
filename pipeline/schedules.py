"""Learning-rate schedules: constant, or linear warm-up then cosine decay to 1% of the peak.

With ``train.time_budget_s`` the cosine decays over the epochs that fit the budget instead of
``train.epochs``: after each epoch :func:`planned_epochs` re-plans the length from the median epoch time
so far, and :class:`BudgetCosine` reads that length from a variable at every step. Training that the budget
cuts short then still ends at the schedule's low learning rates, where a fixed cosine would stop half-way
down. The plan depends on the machine's speed, so such a run is repeatable only as far as its timing is.
"""
from __future__ import annotations

import functools
import math
import statistics

ALPHA = 0.01  # the cosine ends at this fraction of the peak learning rate


def learning_rate(train_cfg, steps_per_epoch: int, budget: bool = False):
    """A float for ``constant``; for ``cosine`` a Keras schedule (linear warm-up, then cosine decay), or a
    :class:`BudgetCosine` when ``budget`` and ``train.time_budget_s`` is set."""
    import keras

    if train_cfg.schedule == "constant":
        return train_cfg.learning_rate
    if budget and train_cfg.time_budget_s > 0:
        return BudgetCosine(train_cfg.learning_rate, steps_per_epoch, train_cfg.warmup_epochs,
                            train_cfg.epochs)
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    decay = max(1, train_cfg.epochs * steps_per_epoch - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, decay, alpha=ALPHA)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay, alpha=ALPHA, warmup_target=train_cfg.learning_rate, warmup_steps=warmup)


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


@functools.cache
def _budget_cosine_class():
    import keras
    from keras import ops

    class BudgetCosine(keras.optimizers.schedules.LearningRateSchedule):
        """Keras' warm-up + cosine decay, whose length in epochs is a variable (``planned``)."""

        def __init__(self, peak: float, steps_per_epoch: int, warmup_epochs: int, epochs: int):
            self.peak, self.steps_per_epoch = float(peak), int(steps_per_epoch)
            self.warmup_epochs, self.epochs = int(warmup_epochs), int(epochs)
            self.planned = keras.Variable(float(epochs), dtype="float32", trainable=False,
                                          name="planned_epochs")

        def replan(self, history: list, budget_s: float) -> int:
            planned = planned_epochs(history, budget_s, self.epochs)
            self.planned.assign(float(planned))
            return planned

        def __call__(self, step):
            step = ops.cast(step, "float32")
            warmup = float(self.warmup_epochs * self.steps_per_epoch)
            decay = ops.maximum(self.planned * self.steps_per_epoch - warmup, 1.0)
            progress = ops.clip((step - warmup) / decay, 0.0, 1.0)
            cosine = self.peak * (ALPHA + (1 - ALPHA) * 0.5 * (1 + ops.cos(math.pi * progress)))
            if warmup == 0:
                return cosine
            return ops.where(step < warmup, self.peak * step / warmup, cosine)

        def get_config(self):
            return {"peak": self.peak, "steps_per_epoch": self.steps_per_epoch,
                    "warmup_epochs": self.warmup_epochs, "epochs": self.epochs}

    return BudgetCosine


def BudgetCosine(peak: float, steps_per_epoch: int, warmup_epochs: int, epochs: int):  # noqa: N802
    """A :class:`keras.optimizers.schedules.LearningRateSchedule` (built lazily: TensorFlow loads only
    when a stage trains)."""
    return _budget_cosine_class()(peak, steps_per_epoch, warmup_epochs, epochs)
