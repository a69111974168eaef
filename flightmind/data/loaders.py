"""What the pretraining and fine-tuning DataLoaders share: the length of a run's training stream,
and the worker and pinning options."""

from __future__ import annotations

import lightning as L

from flightmind.errors import FlightMindError


def training_micro_batches(trainer: L.Trainer, run: str) -> int:
    """Micro-batches each rank draws over the whole run: ``max_steps`` × ``accumulate_grad_batches``.

    The training stream is exactly this long, so a resumed run ends where an uninterrupted one would.
    """
    if trainer.max_steps is None or trainer.max_steps < 1:
        raise FlightMindError(f"set trainer.max_steps: {run} runs for a number of optimizer steps")
    return trainer.max_steps * trainer.accumulate_grad_batches


def loader_options(trainer: L.Trainer | None, num_workers: int) -> dict:
    """DataLoader keywords: pinned memory when training on CUDA, workers kept alive between epochs."""
    pin = trainer is not None and trainer.strategy.root_device.type == "cuda"
    return dict(num_workers=num_workers, pin_memory=pin, persistent_workers=num_workers > 0)
