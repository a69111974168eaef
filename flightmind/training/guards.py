"""Guards against the spec's training pathologies: a non-finite loss or gradient norm, and loss spikes.

Nothing here synchronizes the host with the device on an ordinary optimizer step. ``observe`` turns
the step's loss and gradient norm into a device flag that the fused AdamW reads as ``found_inf``
(the way GradScaler makes it skip a step), so a non-finite update is never applied. A device counter
of non-finite steps makes the flag sticky once more than ``skip_nonfinite`` have been seen: from the
first step over the limit no update lands, and the weights stay those from before that step until
the next ``check``. ``check`` runs on logging steps: it copies the records of the steps since the
last check to the host in one transfer and decides — skip and count, stop, or warn of a spike.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

USUAL_CAUSES = (
    "Usual causes: a learning rate too high (lower model.optimizer.max_lr or lengthen model.optimizer.warmup_steps), "
    "precision (float16 overflows: train in bf16-mixed), or bad data (corrupt shards, special values)."
)


@dataclass(frozen=True)
class NonFinite:
    """The step that ended training: its loss and gradient norm, and the last finite loss before it."""

    step: int
    loss: float
    grad_norm: float
    last_finite_step: int | None
    last_finite_loss: float | None
    skipped_before: int

    def message(self, checkpoint: str, skip_nonfinite: int, updates_held: bool = True) -> str:
        """``updates_held``: no update landed after the failing step (False under float16's GradScaler,
        which skips only the overflowing steps itself)."""
        last = (
            f"the last finite loss was {self.last_finite_loss:.4f} at step {self.last_finite_step}"
            if self.last_finite_step is not None
            else "no step before it had a finite loss"
        )
        skipped = (
            f" after {self.skipped_before} skipped non-finite step(s) (model.guard.skip_nonfinite={skip_nonfinite})"
            if skip_nonfinite
            else " (set model.guard.skip_nonfinite: N to skip up to N such steps instead)"
        )
        saved = (
            f"The weights and optimizer state from before step {self.step} are saved in {checkpoint}"
            if updates_held
            else f"The weights and optimizer state at the stop (float16: GradScaler skipped the overflowing updates, "
            f"the finite ones after step {self.step} were applied) are saved in {checkpoint}"
        )
        return (
            f"training stopped: non-finite loss or gradient norm at step {self.step} (loss {self.loss}, gradient "
            f"norm {self.grad_norm}){skipped}; {last}. {USUAL_CAUSES} {saved}: resume from it with --ckpt_path "
            f"{checkpoint} once fixed."
        )


@dataclass(frozen=True)
class Spike:
    step: int
    loss: float
    median: float
    window: int

    def __str__(self) -> str:
        return (
            f"loss spike at step {self.step}: {self.loss:.4f} is {self.loss / self.median:.1f}× the median "
            f"{self.median:.4f} of the last {self.window} steps"
        )


@dataclass(frozen=True)
class GuardSettings:
    """
    Args:
        skip_nonfinite: optimizer steps with a non-finite loss or gradient norm to skip and count; the
            next one stops training (0: the first one does), saving the last good state.
        spike_factor: warn when a step's loss exceeds this multiple of the running median.
        spike_window: optimizer steps in that running median; spikes are looked for once it is half full.
    """

    skip_nonfinite: int = 0
    spike_factor: float = 2.0
    spike_window: int = 100


class TrainingGuard:
    def __init__(self, settings: GuardSettings = GuardSettings()) -> None:
        self.skip_nonfinite = settings.skip_nonfinite
        self.spike_factor = settings.spike_factor
        self.recent: deque[float] = deque(maxlen=settings.spike_window)
        self.skipped = 0  # non-finite steps skipped, as known at the last check (saved in checkpoints)
        self.last_finite: tuple[int, float] | None = None
        self._bad_count: torch.Tensor | None = None  # device: non-finite steps so far, checked or not
        self._steps: list[int] = []
        self._records: list[torch.Tensor] = []  # device: (loss, grad_norm) per step since the last check

    def observe(
        self,
        step: int,
        loss: torch.Tensor,
        grad_norm: torch.Tensor,
        sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Record an optimizer step; return its ``found_inf`` (1.0: do not apply this update), on the device.

        ``sum_over_ranks`` (an all-reduce, asynchronous on the device) makes one rank's bad step every
        rank's, so that all ranks skip and stop together.
        """
        loss, grad_norm = loss.detach().float(), grad_norm.detach().float()
        bad = (~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float()
        if sum_over_ranks is not None:
            bad = (sum_over_ranks(bad) > 0).float()
        self._bad_count = bad + self.skipped if self._bad_count is None else self._bad_count + bad
        self._steps.append(step)
        self._records.append(torch.stack([loss, grad_norm, bad]))
        return torch.maximum(bad, (self._bad_count > self.skip_nonfinite).float())

    def check(self) -> tuple[NonFinite | None, list[Spike], list[int]]:
        """Judge the steps since the last check: (the step that stops training or None, spikes, skipped steps)."""
        if not self._records:
            return None, [], []
        rows = torch.stack(self._records).cpu().tolist()  # the one host synchronization
        steps, self._steps, self._records = self._steps, [], []
        spikes, skipped = [], []
        for step, (loss, grad_norm, bad) in zip(steps, rows):
            if bad:
                if self.skipped >= self.skip_nonfinite:
                    last_step, last_loss = self.last_finite or (None, None)
                    return NonFinite(step, loss, grad_norm, last_step, last_loss, self.skipped), spikes, skipped
                self.skipped += 1
                skipped.append(step)
                continue
            if len(self.recent) >= max(1, self.recent.maxlen // 2):
                median = statistics.median(self.recent)
                if loss > self.spike_factor * median:
                    spikes.append(Spike(step, loss, median, len(self.recent)))
            self.recent.append(loss)
            self.last_finite = (step, loss)
        return None, spikes, skipped
