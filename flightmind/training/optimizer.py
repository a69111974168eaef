"""AdamW with decoupled weight decay on the matrices only, under the warm-up → cosine schedule.

``OptimizerSettings`` is what a config sets (``model.init_args.optimizer``); ``configure_adamw`` is
what both training stages return from ``configure_optimizers``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from flightmind.errors import FlightMindError
from flightmind.training.schedule import warmup_cosine


@dataclass(frozen=True)
class OptimizerSettings:
    """
    Args:
        max_lr: peak learning rate, reached after ``warmup_steps`` optimizer steps.
        min_lr: floor of the cosine at ``trainer.max_steps``; ``max_lr / 10`` when unset.
        warmup_steps: optimizer steps of linear warm-up from 0.
        weight_decay: AdamW decay of tensors with ≥ 2 dims; 1-dim tensors (norms) get none.
        betas: AdamW betas.
        eps: AdamW epsilon.
    """

    max_lr: float = 6e-4
    min_lr: float | None = None
    warmup_steps: int = 500
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8

    @property
    def floor(self) -> float:
        return self.max_lr / 10 if self.min_lr is None else self.min_lr


def configure_adamw(
    params: Iterable[torch.nn.Parameter],
    matrices: set[int],
    settings: OptimizerSettings,
    *,
    max_steps: int | None,
    fused: bool,
) -> dict:
    """The optimizer and its per-step schedule, as ``configure_optimizers`` returns them.

    ``matrices`` holds the ids of the parameters that get weight decay (recorded while they were whole:
    FSDP flattens every parameter). ``fused``: one kernel per step that honours ``found_inf`` (see
    ``TrainingGuard``); float16's GradScaler needs the unfused AdamW to unscale before clipping.
    """
    if max_steps is None or max_steps < 1:
        raise FlightMindError("set trainer.max_steps: the learning-rate schedule is built from it")
    params = [p for p in params if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in matrices], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if id(p) not in matrices], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=settings.max_lr, betas=tuple(settings.betas), eps=settings.eps, fused=fused
    )
    scheduler = warmup_cosine(
        optimizer,
        max_lr=settings.max_lr,
        min_lr=settings.floor,
        warmup_steps=settings.warmup_steps,
        max_steps=max_steps,
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}
