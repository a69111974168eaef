"""Run by test_ddp_mixing.py (``main`` in the test's process; the 2-rank runs fork their ranks, which
saves a fresh interpreter per rank) or as a script: DDP on the CPU (gloo) over mixed aviation + general
data, shuffled.

    python ddp_mixed_run.py PREPARED_DIR POOL_DIR OUT_DIR
        2 ranks train STEPS steps (checkpoint every STEPS // 2), then 2 ranks resume from step STEPS // 2;
        each rank saves the micro-batches it trained on, in order: OUT_DIR/rank{R}.pt and
        OUT_DIR/rank{R}-resumed.pt.
    python ddp_mixed_run.py PREPARED_DIR POOL_DIR OUT_DIR DEVICES NAME [CHECKPOINT]
        one run on DEVICES ranks (resumed from CHECKPOINT if given): OUT_DIR/NAME-rank{R}.pt, and its
        checkpoints in OUT_DIR/NAME/.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from flightmind.model import GPTConfig
from flightmind.training.optimizer import OptimizerSettings
from flightmind.data.datamodule import PretrainDataModule
from flightmind.training.pretrain import PretrainModule

STEPS, BATCH, SEQ_LEN, RATIO, SEED = 6, 4, 64, 0.3, 7
GENERAL = {"shuffle_block": 40}  # blocks of a few row groups: several per pass


class BatchRecorder(L.Callback):
    def __init__(self, path: str) -> None:
        self.path, self.batches = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch.detach().cpu().clone())

    def on_train_end(self, trainer, pl_module):
        torch.save(torch.cat(self.batches), self.path.format(rank=trainer.global_rank))


def fit(prepared_dir: Path, pool_dir: Path, out: Path, record: str, *, devices=2, checkpoints="checkpoints", ckpt_path=None) -> None:
    every = ModelCheckpoint(
        dirpath=out / checkpoints, filename="step_{step}", every_n_train_steps=STEPS // 2, save_top_k=-1,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_fork" if devices > 1 else "auto",
        precision="32-true",
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BatchRecorder(str(out / record)), every],
    )
    general = {"path": "parquet", "data_files": sorted(str(p) for p in pool_dir.glob("*.parquet")), **GENERAL}
    data = PretrainDataModule(
        prepared_dir, seq_len=SEQ_LEN, batch_size=BATCH, num_workers=0, shuffle=True, seed=SEED,
        aviation_ratio=RATIO, general=general,
    )
    model = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=SEQ_LEN), optimizer=OptimizerSettings(warmup_steps=2))
    trainer.fit(model, data, ckpt_path=ckpt_path)


def main(prepared_dir: Path, pool_dir: Path, out: Path, *rest: str) -> None:
    if rest:
        devices, name, *checkpoint = rest
        fit(prepared_dir, pool_dir, out, f"{name}-rank{{rank}}.pt", devices=int(devices), checkpoints=name,
            ckpt_path=checkpoint[0] if checkpoint else None)
        return
    fit(prepared_dir, pool_dir, out, "rank{rank}.pt")
    fit(prepared_dir, pool_dir, out, "rank{rank}-resumed.pt", ckpt_path=out / "checkpoints" / f"step_{STEPS // 2}.ckpt")


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:4]), *sys.argv[4:])
