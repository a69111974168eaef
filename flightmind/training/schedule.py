"""The learning-rate schedule: linear warm-up from 0, cosine decay to ``min_lr``, then flat.

Evaluated per optimizer step (not per micro-batch), and built from ``max_steps`` so that resuming
or changing the data never shifts it.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int
) -> LambdaLR:
    """A LambdaLR over ``lr_at``; the optimizer's base learning rate must be ``max_lr``.

    The factor is a plain closure, so checkpoints store none of its arguments: a resumed run follows
    the schedule of its own configuration.
    """

    def factor(step: int) -> float:
        return lr_at(step, max_lr=max_lr, min_lr=min_lr, warmup_steps=warmup_steps, max_steps=max_steps) / max_lr

    return LambdaLR(optimizer, factor)
