"""Preemption: SIGTERM or SIGINT finishes the optimizer step, saves a resumable checkpoint and exits 128 + signal.

The handler only records the signal. At the end of the next optimizer step (the last micro-batch
of an accumulation) every rank agrees to stop — under several processes one small all-reduce,
every ``check_every_n_steps`` optimizer steps — the checkpoint callback saves ``step_N`` and links
``last``, and the run exits with status 143 (SIGTERM) or 130 (SIGINT), so a scheduler sees a
failure and ``--ckpt_path last`` resumes at that step. A second signal stops at once, without saving.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from flightmind.training.checkpoint_io import checkpoint_writer
from flightmind.training.checkpoints import StepCheckpoint
from flightmind.training.internals import is_logging_step


class Stopped(SystemExit):
    """Raised after the checkpoint is saved; its code is 128 + the signal's number."""


class SaveOnSignal(L.Callback):
    """
    Args:
        signals: the signals that save and stop (names, e.g. SIGTERM, SIGINT, SIGUSR1).
        check_every_n_steps: under several processes, how often ranks agree on stopping (each time one
            small all-reduce that waits for the device); unset: on the optimizer steps Lightning logs,
            which read the device anyway (a stop then waits at most ``log_every_n_steps`` steps). A
            single process checks every step for free.
    """

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGINT"), check_every_n_steps: int | None = None) -> None:
        self.signals = tuple(signals)
        self.check_every_n_steps = check_every_n_steps
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the second signal: stop now, as without this callback
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received = signum
        if rank_zero_only.rank == 0:
            print(
                f"flightmind: {signal.Signals(signum).name} received: saving a checkpoint after this optimizer step "
                "(send it again to stop at once, without saving)",
                file=sys.stderr,
                flush=True,
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has installed its own SIGTERM handler by now (it records the signal and exits 0).
        if threading.current_thread() is not threading.main_thread():
            return
        self.received = None
        for name in self.signals:
            signum = signal.Signals[name]
            self._previous[signum] = signal.signal(signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: the step is not finished
        stop = self.received is not None
        if trainer.world_size > 1:
            due = is_logging_step(trainer) if self.check_every_n_steps is None else not trainer.global_step % self.check_every_n_steps
            if not due:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self.received or signal.SIGTERM  # another rank got it
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, StepCheckpoint):
            path = checkpoint.save_now(trainer)
        else:
            path = os.path.join(trainer.default_root_dir, f"step_{trainer.global_step}.ckpt")
            trainer.save_checkpoint(path)
        writer = checkpoint_writer(trainer)
        if writer is not None:
            writer.wait()  # an asynchronous save is on disk before the run says so and exits
        if trainer.is_global_zero:
            print(
                f"flightmind: stopped by {signal.Signals(signum).name} after optimizer step {trainer.global_step}; "
                f"saved {path}: resume with --ckpt_path last (or --ckpt_path {path})",
                file=sys.stderr,
                flush=True,
            )
        raise Stopped(128 + signum)
