"""What each DDP rank did, for tests/training/test_ddp.py.

As a callback (``--trainer.callbacks+=tests.training.ddp_probe.RankProbe``) it records, per
micro-batch, the windows this rank trained on and how many gradient all-reduces ran (a DDP
communication hook counts them), and writes ``rank{R}.json`` into ``$FLIGHTMIND_PROBE_DIR``.

As a script it is ``flightmind`` run from ``$FLIGHTMIND_RANK_DIRS/rank{LOCAL_RANK}``: every rank gets
its own working directory, so the files a rank writes through relative paths (checkpoints, logs)
land in its own directory, and a rank that writes nothing leaves its directory empty.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/training/ddp_probe.py fit -c …
    python tests/training/ddp_probe.py fit -c … --trainer.devices 2
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

ALLREDUCES = 0


def counting_allreduce_hook(state, bucket):
    global ALLREDUCES
    ALLREDUCES += 1
    return default_hooks.allreduce_hook(state, bucket)


class RankProbe(L.Callback):
    def __init__(self) -> None:
        self.rows: list[list[list[int]]] = []
        self.allreduces: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers DDP communication hooks on CUDA only; on CPU (gloo) register it here.
        if isinstance(trainer.strategy.model, DistributedDataParallel):
            trainer.strategy.model.register_comm_hook(None, counting_allreduce_hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = ALLREDUCES
        self.rows.append(batch.tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.allreduces.append(ALLREDUCES - self._before)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {"world_size": trainer.world_size, "rows": self.rows, "allreduces": self.allreduces}
        out = Path(os.environ["FLIGHTMIND_PROBE_DIR"]) / f"rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))


if __name__ == "__main__":
    rank_dir = Path(os.environ["FLIGHTMIND_RANK_DIRS"]) / f"rank{os.environ.get('LOCAL_RANK', '0')}"
    rank_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(rank_dir)
    from flightmind.cli import main

    sys.exit(main())
