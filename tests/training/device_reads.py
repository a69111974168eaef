"""Spies on the calls that read a value back from the device or wait for other ranks, grouped by
micro-batch, for the hot-path tests (in-process and in each DDP rank, see ddp_probe.py).

On a GPU, reading a value (``.item()``, ``float(t)``, ``.tolist()``, ``if t:``),
``torch.cuda.synchronize()`` or a ``torch.distributed.barrier()`` stalls the CPU until the GPU has
finished all queued work, so the next step cannot be queued in time. On the CPU the same calls are
visible as Python calls.
"""

import sys
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.distributed
from lightning.fabric.utilities.throughput import Throughput

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")


class ReadsPerMicroBatch(L.Callback):
    """Groups the recorded reads by micro-batch: from its start to the next one's (validation included)."""

    def __init__(self, reads: list[str]) -> None:
        self.reads = reads
        self.per_batch: dict[int, list[str]] = defaultdict(list)
        self._batch, self._mark = None, 0

    def _close(self) -> None:
        if self._batch is not None:
            self.per_batch[self._batch] = self.reads[self._mark :]
        self._mark = len(self.reads)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._close()
        self._batch = batch_idx

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()


def record_reads(patch=setattr) -> list[str]:
    """Replace the reading calls with spies (through ``patch(owner, name, value)``, e.g. a pytest
    monkeypatch's ``setattr``); returns the list they append "call in function (file)" to."""
    reads: list[str] = []

    def spy(name, original):
        def read(*args, **kwargs):
            caller = sys._getframe(1).f_code
            # AdamW keeps its step counter on the host unless fused (as on CUDA): no device read.
            if caller.co_name != "_get_value":
                reads.append(f"{name} in {caller.co_name} ({Path(caller.co_filename).name})")
            return original(*args, **kwargs)

        return read

    for name in READS:
        patch(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    # TokenThroughputMonitor calls torch.cuda.synchronize() right before each Throughput.update.
    patch(Throughput, "update", spy("synchronize + Throughput.update", Throughput.update))
    patch(torch.distributed, "barrier", spy("barrier", torch.distributed.barrier))
    return reads
