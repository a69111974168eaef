"""Launched by test_ddp_mixing.py: 2-process DDP on the CPU (gloo) over mixed aviation + general data.

    python ddp_mixed_run.py PREPARED_DIR POOL_DIR OUT_DIR

Each rank saves the micro-batches it trained on, in order, as OUT_DIR/rank{R}.pt.
"""

import sys
from pathlib import Path

import lightning as L
import torch

from flightmind.data.datamodule import PretrainDataModule
from flightmind.training.pretrain import PretrainModule

STEPS, BATCH, SEQ_LEN, RATIO = 6, 4, 64, 0.3


class BatchRecorder(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out, self.batches = out, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch.detach().cpu().clone())

    def on_train_end(self, trainer, pl_module):
        torch.save(torch.cat(self.batches), self.out / f"rank{trainer.global_rank}.pt")


def main(prepared_dir: Path, pool_dir: Path, out: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        precision="32-true",
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BatchRecorder(out)],
    )
    general = {"path": "parquet", "data_files": sorted(str(p) for p in pool_dir.glob("*.parquet"))}
    data = PretrainDataModule(
        prepared_dir, seq_len=SEQ_LEN, batch_size=BATCH, num_workers=0, seed=7, aviation_ratio=RATIO, general=general
    )
    trainer.fit(PretrainModule(depth=2, vocab_size=1024, max_seq_len=SEQ_LEN, warmup_steps=2), data)


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]))
