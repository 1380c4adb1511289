"""Learning-rate schedules: the time-budget plan and its cosine against Keras' own."""
import numpy as np
import pytest

from conftest import DEFAULT_CONFIG
from pipeline import config, schedules


def _rows(*epoch_s):
    out, total = [], 0.0
    for i, s in enumerate(epoch_s):
        total += s
        out.append({"epoch": i, "epoch_s": s, "time_s": total})
    return out


@pytest.mark.parametrize("epoch_s, budget, epochs, planned", [
    ((), 100, 12, 12),                 # nothing measured yet: the configured length
    ((10,), 0, 12, 12),                # no budget
    ((10,), 35, 12, 4),                # 25 s left at 10 s an epoch: 3 more, the last one crossing 35 s
    ((10,), 1000, 12, 12),             # never more than train.epochs
    ((10, 10), 20, 12, 2),             # spent exactly: stop here
    ((10, 10, 40), 45, 12, 3),         # spent past the budget: stop here
    ((10, 60, 10), 100, 12, 4),        # one slow epoch: the median (35 s of the last two) plans 1 more...
    ((10, 60, 10, 10), 100, 12, 5),    # ...and the median of 60, 10, 10 (10 s) 1 more for the 10 s left
    ((30, 10), 100, 12, 8),            # the first epoch (tracing, cache fill) left out: 6 more of 10 s
    ((50,), 60, 12, 2),                # 10 s left of a 50 s epoch: still one more, the one crossing it
])
def test_planned_epochs(epoch_s, budget, epochs, planned):
    assert schedules.planned_epochs(_rows(*epoch_s), budget, epochs) == planned


@pytest.mark.parametrize("warmup", [0, 2])
def test_budget_cosine_matches_keras_cosine_until_replanned(warmup):
    cfg = config.load(DEFAULT_CONFIG, ["train.epochs=6", f"train.warmup_epochs={warmup}",
                                       "train.learning_rate=0.01", "train.time_budget_s=45"])
    steps = 7
    fixed = schedules.learning_rate(cfg.train, steps)
    budget = schedules.learning_rate(cfg.train, steps, budget=True)
    assert type(fixed).__name__ == type(budget).__name__ == "CosineDecay"
    assert isinstance(fixed.decay_steps, int) and not isinstance(budget.decay_steps, int)  # a variable
    at = range(0, 6 * steps + 3)
    np.testing.assert_allclose([float(budget(s)) for s in at], [float(fixed(s)) for s in at],
                               rtol=1e-5, atol=1e-9)
    assert schedules.replan(budget, _rows(10, 10, 10), cfg.train, steps) == 5
    assert float(budget.decay_steps) == 5 * steps - warmup * steps
    assert float(budget(5 * steps)) == pytest.approx(0.01 * schedules.ALPHA)
    assert float(budget(3 * steps)) < float(fixed(3 * steps))  # 5 epochs decay faster than 6
