"""Callbacks every pretraining run gets, built on Lightning's own."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor


def _batch_size(batch: torch.Tensor | dict) -> int:
    return (batch["inputs"] if isinstance(batch, dict) else batch).size(0)


def _tokens(batch: torch.Tensor | dict) -> int:
    # (B, T+1) windows in training and validation; held-out test batches are dicts of (B, T) inputs.
    return batch["inputs"].numel() if isinstance(batch, dict) else batch.size(0) * (batch.size(1) - 1)


class TokenThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor for (B, T+1) token windows: items/s are trained tokens/s; MFU on known GPUs.

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
