"""The Lightning and torch internals FlightMind relies on, each behind one function, with the public
API that would replace it. Lightning is pinned below 2.7 because of them, and
tests/training/test_internals.py fails, naming the attribute, when an upgrade moves one.

Elsewhere, each with its own test: ``TokenThroughputMonitor`` (callbacks.py) reads ThroughputMonitor's
counters (``_throughputs``, ``_t0s`` …) and ``FlightMindCLI._parse_ckpt_path`` (lightning_cli.py) overrides a
private LightningCLI method (both: test_internals.py); ``StepCheckpoint._link_checkpoint``
(checkpoints.py) overrides ModelCheckpoint's (test_checkpoints.py), and ``StepCheckpoint`` saves on
demand and at the end through ModelCheckpoint's ``_save_topk_checkpoint``, ``_save_last_checkpoint``,
``_monitor_candidates``, ``_last_global_step_saved`` and ``_last_checkpoint_saved`` (no public
"save now"); ``BestCheckpoint`` overrides ModelCheckpoint's ``_save_checkpoint`` to link instead
of writing (test_internals.py); ``MixedLoader`` stops its workers
with the DataLoader iterator's ``_shutdown_workers`` (mixing.py); the memory planner and the attention
log trace with ``torch.utils._python_dispatch.TorchDispatchMode`` (plan.py, attention.py); selective
activation checkpointing wraps blocks with torch's ``_checkpoint.checkpoint_wrapper`` (parallel.py).
"""

from __future__ import annotations

import lightning as L
import torch


def ends_optimizer_step(trainer: L.Trainer) -> bool:
    """True during the last micro-batch of an optimizer step (``FitLoop._should_accumulate``; no public API)."""
    return not trainer.fit_loop._should_accumulate()


def is_logging_step(trainer: L.Trainer) -> bool:
    """True during the micro-batch whose optimizer step Lightning logs.

    No public API says whether the current micro-batch ends an optimizer step (``FitLoop._should_accumulate``)
    and whether Lightning will log it (``_LoggerConnector.should_update_logs``); Lightning's own
    ThroughputMonitor reads the same pair.
    """
    return ends_optimizer_step(trainer) and trainer._logger_connector.should_update_logs


def skip_update_on_device(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """Make the next fused ``step()`` skip its update where ``found_inf`` is 1, without a host sync.

    torch's fused AdamW reads ``optimizer.found_inf`` (and ``grad_scale``), the attributes GradScaler sets
    (torch/amp/grad_scaler.py, ``_maybe_opt_step``); they are not documented as public.
    """
    optimizer.found_inf = found_inf
