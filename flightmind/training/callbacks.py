"""Callbacks every pretraining run gets, built on Lightning's own."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor


def _inputs(batch: torch.Tensor | dict) -> torch.Tensor:
    # Pretraining batches are (B, T+1) windows; fine-tuning batches are dicts of padded (B, T) tensors.
    return batch["input_ids"] if isinstance(batch, dict) else batch[:, :-1]


def _batch_size(batch: torch.Tensor | dict) -> int:
    return _inputs(batch).size(0)


def _tokens(batch: torch.Tensor | dict) -> int:
    return _inputs(batch).numel()


class TokenThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor for token batches: items/s are trained tokens/s (padding included); MFU on known GPUs.

    Logs ``train/device/items_per_sec`` (tokens per second per device), ``train/items_per_sec``
    (all devices), ``train/device/flops_per_sec`` and ``train/device/mfu``.
    """

    def __init__(self, window_size: int = 100) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_tokens, window_size=window_size)


class FinalCheckpoint(L.Callback):
    """Writes ``final.ckpt`` beside the other checkpoints when training ends normally."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        if dirpath is not None:
            trainer.save_checkpoint(os.path.join(dirpath, "final.ckpt"), weights_only=False)
