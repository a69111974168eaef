"""A tiny `flightmind fit` config on the `prepared_dir` fixture: d2, sequences of 64, CPU, seconds per run."""

from pathlib import Path

import yaml


def tiny_config(path: Path, data_dir: Path, ckpt_dir: Path, *, max_steps: int = 6, every: int = 2, shuffle: bool = True) -> Path:
    config = {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": max_steps,
            "accumulate_grad_batches": 2, "check_val_every_n_epoch": None, "limit_val_batches": 2,
            "num_sanity_val_steps": 0, "log_every_n_steps": 1, "enable_model_summary": False,
        },
        "model": {
            "class_path": "flightmind.training.pretrain.PretrainModule",
            "init_args": {"shape": {"depth": 2, "max_seq_len": 64}, "optimizer": {"max_lr": 1e-3, "warmup_steps": 2}},
        },
        "data": {
            "class_path": "flightmind.data.datamodule.PretrainDataModule",
            "init_args": {"data_dir": str(data_dir), "seq_len": 64, "batch_size": 4, "num_workers": 0,
                          "shuffle": shuffle, "aviation_ratio": 1.0},
        },
        "val_every_n_steps": max_steps,
        "checkpoint": {"dirpath": str(ckpt_dir), "every_n_train_steps": every},
        "samples": {"every_n_validations": 0},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def durable_trainer(ckpt_dir: Path, *, max_steps: int = 8, every: int = 2, keep: int = 5, callbacks=(), root=None, asynchronous=False):
    """A Trainer as `flightmind fit` builds it for durability: AtomicCheckpointIO, StepCheckpoint, SaveOnSignal."""
    import lightning as L

    from flightmind.training.checkpoint_io import AtomicCheckpointIO
    from flightmind.training.checkpoints import StepCheckpoint
    from flightmind.training.signals import SaveOnSignal

    return L.Trainer(
        accelerator="cpu", precision="32-true", max_steps=max_steps, accumulate_grad_batches=2, gradient_clip_val=1.0,
        val_check_interval=2 * max_steps, check_val_every_n_epoch=None, limit_val_batches=2, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root or ckpt_dir,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            *callbacks, SaveOnSignal(),
            StepCheckpoint(keep=keep, asynchronous=asynchronous, dirpath=str(ckpt_dir), filename="step_{step}", every_n_train_steps=every,
                           save_top_k=-1, auto_insert_metric_name=False, enable_version_counter=False),
        ],
    )


def tiny_module_and_data(prepared_dir: Path, shuffle: bool = False):
    import torch

    from flightmind.data.datamodule import PretrainDataModule
    from flightmind.model import GPTConfig
    from flightmind.training.optimizer import OptimizerSettings
    from flightmind.training.pretrain import PretrainModule

    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=64), optimizer=OptimizerSettings(max_lr=1e-3, warmup_steps=2))
    data = PretrainDataModule(str(prepared_dir), seq_len=64, batch_size=4, num_workers=0, shuffle=shuffle, seed=7)
    return module, data
