"""Callbacks every pretraining run gets, built on Lightning's own.

The hot path stays free of host–device synchronization: reading a GPU value (``.item()``,
``float(t)``, ``torch.cuda.synchronize()``) makes the CPU wait until the GPU has drained its queue,
so nothing here reads one except on the optimizer steps that Lightning logs.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor, TQDMProgressBar
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_only

from flightmind.training.budget import peak_flops
from flightmind.training.internals import is_logging_step


def _inputs(batch: torch.Tensor | dict) -> torch.Tensor:
    # Pretraining batches are (B, T+1) windows; fine-tuning and held-out test batches are dicts of
    # padded (B, T) tensors.
    return batch["input_ids"] if isinstance(batch, dict) else batch[:, :-1]


def _sequences(batch: torch.Tensor | dict) -> int:
    return _inputs(batch).size(0)


def _tokens(batch: torch.Tensor | dict) -> int:
    return _inputs(batch).numel()


def _synchronize(trainer: L.Trainer) -> None:
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize()


class TokenThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor for token batches (windows or padded dicts), measuring only on logging steps.

    Logs ``train/device/items_per_sec`` (trained tokens per second per device), ``train/items_per_sec``
    (all devices), ``train/device/flops_per_sec`` and ``train/device/mfu`` (against the bf16 peak of
    the GPU table in ``flightmind.training.budget``). Lightning's monitor synchronizes the GPU after
    every micro-batch; this one counts micro-batches on the host and synchronizes once per logged step.
    It reads and updates the parent's counters (``_throughputs``, ``_t0s``, ``_batches`` …), which no public
    API exposes; tests/training/test_internals.py checks that they still exist.

    Args:
        window_size: rates are averaged over this many logged steps (at least 2).
    """

    def __init__(self, window_size: int = 5) -> None:
        super().__init__(batch_size_fn=_sequences, length_fn=_tokens, window_size=window_size)
        self._pending_flops = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.available_flops = peak_flops(trainer.strategy.root_device, trainer.precision)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, *_) -> None:
        super().on_train_start(trainer)
        self._pending_flops = 0

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        stage = RunningStage.TRAINING
        self._batches[stage] += 1
        self._samples[stage] += _sequences(batch)
        self._lengths[stage] += _tokens(batch)
        self._pending_flops += getattr(pl_module, "flops_per_batch", None) or 0
        if not is_logging_step(trainer):
            return
        _synchronize(trainer)
        self._throughputs[stage].update(
            time=time.perf_counter() - self._t0s[stage],
            batches=self._batches[stage],
            samples=self._samples[stage],
            lengths=self._lengths[stage],
            flops=self._pending_flops or None,
        )
        self._pending_flops = 0
        self._compute(trainer)

    # Validation is not measured; its duration is taken out of the training clock.
    @rank_zero_only
    def on_validation_start(self, trainer: L.Trainer, *_) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            _synchronize(trainer)
            self._validation_t0 = time.perf_counter()

    @rank_zero_only
    def on_validation_batch_end(self, *_, **__) -> None:
        pass

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, *_) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            _synchronize(trainer)
            self._t0s[RunningStage.TRAINING] += time.perf_counter() - self._validation_t0


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, showing metrics it reads from the GPU only on logging steps.

    Metrics logged with ``prog_bar=True`` are read back (``.item()``) after every micro-batch by
    Lightning; log them without it and name them here instead.

    Args:
        metrics: logged metrics to show, e.g. ``train/loss``.
        refresh_rate: update the bar every this many micro-batches.
    """

    def __init__(self, metrics: tuple[str, ...] = ("train/loss",), refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.metrics = tuple(metrics)
        self._shown: dict[str, str] = {}

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        if trainer.training and is_logging_step(trainer):
            for name in self.metrics:
                value = trainer.callback_metrics.get(name)
                if value is not None:
                    self._shown[name] = f"{float(value):.3f}"
        return {**super().get_metrics(trainer, pl_module), **self._shown}


def persistent_callbacks() -> list[L.Callback]:
    """The callbacks of every ``flightmind fit``, whatever ``trainer.callbacks`` a config lists."""
    return [StepProgressBar(), LearningRateMonitor(logging_interval="step")]
