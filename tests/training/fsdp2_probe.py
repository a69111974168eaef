"""What each FSDP2 rank saw, for tests/training/test_fsdp2.py: after every micro-batch's backward,
how many parameters hold a (reduce-scattered, sharded) gradient. Under FSDP2 with the gradient sync
deferred, only the micro-batch that ends an optimizer step has any. Written to
``$FLIGHTMIND_PROBE_DIR/rank{R}.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L


class GradientSyncProbe(L.Callback):
    def __init__(self) -> None:
        self.with_grad: list[int] = []

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.with_grad.append(sum(p.grad is not None for p in pl_module.parameters()))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "world_size": trainer.world_size,
            "with_grad": self.with_grad,
            "parameters": len(list(pl_module.parameters())),
            "sharded": type(pl_module.model).__name__,
        }
        out = Path(os.environ["FLIGHTMIND_PROBE_DIR"]) / f"rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))
