"""The training step reads nothing back from the device except on the optimizer steps that are logged.

On a GPU, reading a value (``.item()``, ``float(t)``, ``.tolist()``, ``if t:``) or
``torch.cuda.synchronize()`` stalls the CPU until the GPU has finished all queued work, so the next
step cannot be queued in time. On the CPU the same reads are visible as Python calls: the test
counts them per micro-batch during a real ``flightmind fit`` (the CLI's callbacks, progress bar,
logger and checkpoints included).
"""

import sys
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput

from flightmind.cli import lightning_cli
from flightmind.training.pretrain import PretrainModule

REPO = Path(__file__).resolve().parents[2]
READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
STEPS, ACCUMULATE, LOG_EVERY = 6, 2, 3


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


def record_reads(monkeypatch) -> list[str]:
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
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    # TokenThroughputMonitor calls torch.cuda.synchronize() right before each Throughput.update.
    monkeypatch.setattr(Throughput, "update", spy("synchronize + Throughput.update", Throughput.update))
    return reads


def test_no_device_reads_between_logging_steps(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(
        [
            "-c", str(REPO / "configs" / "smoke.yaml"),
            "--data.init_args.data_dir", str(prepared_dir), "--data.init_args.build_demo", "false",
            "--data.init_args.aviation_ratio", "1.0",  # the shards alone: no general pool
            "--data.init_args.seq_len", "64", "--data.init_args.batch_size", "2",
            "--model.init_args.depth", "2", "--model.init_args.vocab_size", "1024", "--model.init_args.max_seq_len", "64",
            "--trainer.max_steps", str(STEPS), "--trainer.accumulate_grad_batches", str(ACCUMULATE),
            "--trainer.log_every_n_steps", str(LOG_EVERY),
            # validation and checkpoints (which read values) after logged steps, as in the shipped configs
            "--val_every_n_steps", str(LOG_EVERY), "--trainer.limit_val_batches", "2",
            "--checkpoint.every_n_train_steps", str(LOG_EVERY),
            "--throughput.window_size", "2",
        ],  # fmt: skip
        run=False,
    )
    probe = ReadsPerMicroBatch(record_reads(monkeypatch))
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert "val/loss" in cli.trainer.callback_metrics  # validation ran mid-training

    micro_batches = STEPS * ACCUMULATE
    assert sorted(probe.per_batch) == list(range(micro_batches))
    # Lightning logs optimizer steps LOG_EVERY, 2·LOG_EVERY, … (0-based: step + 1 divisible by LOG_EVERY).
    logged = {b for b in range(micro_batches) if (b + 1) % ACCUMULATE == 0 and ((b + 1) // ACCUMULATE) % LOG_EVERY == 0}
    for batch, reads in probe.per_batch.items():
        if batch in logged:
            assert reads, f"micro-batch {batch} is logged, yet nothing was read: the probe sees nothing"
        else:
            assert reads == [], f"micro-batch {batch} (not logged) read from the device: {reads}"
    assert isinstance(cli.model, PretrainModule)
