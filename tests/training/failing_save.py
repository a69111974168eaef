"""A callback for `flightmind fit --trainer.callbacks+=tests.training.failing_save.FailOnRankZero`:
rank 0's write of ``step_2.ckpt`` fails as on a full disk (test_checkpoints.py)."""

from pathlib import Path

import lightning as L

from flightmind.errors import FlightMindError
from flightmind.training import checkpoint_io


class FailOnRankZero(L.Callback):
    def __init__(self, name: str = "step_2.ckpt") -> None:
        self.name = name

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank != 0:
            return
        write = checkpoint_io.save_atomically

        def failing(checkpoint: dict, path) -> None:
            if Path(path).name == self.name:
                raise FlightMindError(f"cannot write checkpoint {path}: No space left on device (injected)")
            write(checkpoint, path)

        checkpoint_io.save_atomically = failing
