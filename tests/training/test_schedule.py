import math

import pytest
import torch

from flightmind.training.schedule import lr_at, warmup_cosine

SPEC = dict(max_lr=6e-4, min_lr=6e-5, warmup_steps=500, max_steps=50_000)


def test_lr_at_the_points_that_define_it():
    assert lr_at(0, **SPEC) == 0.0
    assert lr_at(250, **SPEC) == pytest.approx(3e-4)
    assert lr_at(500, **SPEC) == pytest.approx(6e-4)
    mid = 500 + (50_000 - 500) // 2
    assert lr_at(mid, **SPEC) == pytest.approx((6e-4 + 6e-5) / 2)
    assert lr_at(50_000, **SPEC) == pytest.approx(6e-5)
    assert lr_at(80_000, **SPEC) == pytest.approx(6e-5)


def test_cosine_is_monotone_after_warmup():
    values = [lr_at(s, **SPEC) for s in range(500, 50_001, 500)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    quarter = 500 + (50_000 - 500) // 4
    expected = 6e-5 + 0.5 * (6e-4 - 6e-5) * (1 + math.cos(math.pi * 0.25))
    assert lr_at(quarter, **SPEC) == pytest.approx(expected)


def test_scheduler_steps_per_optimizer_step():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=6e-4)
    scheduler = warmup_cosine(optimizer, max_lr=6e-4, min_lr=6e-5, warmup_steps=4, max_steps=10)
    seen = []
    for _ in range(12):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [lr_at(s, max_lr=6e-4, min_lr=6e-5, warmup_steps=4, max_steps=10) for s in range(12)]
    assert seen == pytest.approx(expected)
    # Plain closure: nothing of the schedule's arguments lands in the checkpoint.
    assert scheduler.state_dict()["lr_lambdas"] == [None]
