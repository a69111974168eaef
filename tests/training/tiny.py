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
