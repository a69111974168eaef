"""``flightmind fit``, ``validate`` and ``test``: YAML → LightningCLI → the ``__init__`` signatures
of the module, the datamodule and the Trainer, with FlightMind's checkpoints, signals and checks.

Config files may build on others (``base:``); ``instantiate_config`` builds what ``fit`` would
from a config without a Trainer (``flightmind plan``/``budget -c``, tests, benchmarks).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import lightning as L
import yaml
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_checkpoint_file
from flightmind.training.callbacks import TokenThroughputMonitor, persistent_callbacks
from flightmind.training.checkpoint_io import AtomicCheckpointIO
from flightmind.training.checkpoints import BestCheckpoint, StepCheckpoint, resolve_last
from flightmind.training.samples import SampleGeneration
from flightmind.training.settings import check_settings
from flightmind.training.signals import SaveOnSignal

LIGHTNING_COMMANDS = {
    "fit": "train, or resume with --ckpt_path last",
    "validate": "validation loss and perplexity of a checkpoint",
    "test": "held-out loss, perplexity and bits per byte of a checkpoint (data.test_file)",
}


def val_check_interval(val_every_n_steps: int, accumulate_grad_batches: int | None) -> int:
    """Lightning's val_check_interval (micro-batches) for a validation every N optimizer steps."""
    if val_every_n_steps < 1:
        raise FlightMindError(f"val_every_n_steps must be at least 1, not {val_every_n_steps}")
    return val_every_n_steps * (accumulate_grad_batches or 1)


def config_chain(path: str, seen: tuple[Path, ...] = ()) -> list[str]:
    """The config files ``path`` builds on through ``base:`` keys, outermost first, ending with ``path``."""
    file = Path(path)
    try:
        content = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        return [path]  # LightningCLI reports a missing or malformed file with its own message
    base = content.get("base") if isinstance(content, dict) else None
    if base is None:
        return [path]
    if not isinstance(base, str):
        raise FlightMindError(f"{path}: `base:` names one YAML file, relative to {path}; got {base!r}")
    base_file = file.parent / base
    if not base_file.is_file():
        raise FlightMindError(
            f"{path}: its `base: {base}` was not found at {base_file} "
            "(a base path is relative to the directory of the file naming it)"
        )
    if base_file.resolve() in seen + (file.resolve(),):
        raise FlightMindError(f"{path}: `base:` files form a cycle through {base_file}")
    return config_chain(str(base_file), seen + (file.resolve(),)) + [path]


def expand_config_bases(argv: list[str]) -> list[str]:
    """``-c hw.yaml``, where hw.yaml says ``base: base/pretrain.yaml``, becomes ``-c base/pretrain.yaml -c hw.yaml``.

    LightningCLI then merges the files key by key, later files winning (a list such as
    ``trainer.callbacks`` is replaced, not merged). ``--base null`` follows, so the printed and the
    saved config, already complete, build on nothing.
    """
    expanded: list[str] = []
    words = iter(argv)
    for word in words:
        flag, _, path = word.partition("=")
        if flag not in ("-c", "--config"):
            expanded.append(word)
            continue
        path = path or next(words, "")
        chain = config_chain(path)
        expanded += [part for file in chain for part in (flag, file)]
        if len(chain) > 1:
            expanded += ["--base", "null"]
    return expanded


class FlightMindCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--base",
            type=Optional[str],
            default=None,
            help="In a config file: another config file (relative to this one) whose keys this file overrides.",
        )
        # step_N every N optimizer steps (the newest checkpoint.keep kept) and last.ckpt, a hard link
        # to the newest, for --ckpt_path last.
        parser.add_lightning_class_args(StepCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.dirpath": "checkpoints",
                "checkpoint.filename": "step_{step}",
                "checkpoint.every_n_train_steps": 1000,
                "checkpoint.save_top_k": -1,
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
            }
        )
        # SIGTERM/SIGINT: finish the optimizer step, save step_N, exit 143/130.
        parser.add_lightning_class_args(SaveOnSignal, "signals")
        # best.ckpt: lowest validation loss, in the same directory (a link to step_N saved at its step).
        parser.add_lightning_class_args(BestCheckpoint, "best_checkpoint")
        parser.set_defaults(
            {
                "best_checkpoint.filename": "best",
                "best_checkpoint.monitor": "val/loss",
                "best_checkpoint.mode": "min",
                "best_checkpoint.save_top_k": 1,
                "best_checkpoint.auto_insert_metric_name": False,
                "best_checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("checkpoint.dirpath", "best_checkpoint.dirpath")
        parser.add_lightning_class_args(TokenThroughputMonitor, "throughput")
        parser.add_lightning_class_args(SampleGeneration, "samples")
        # Validation is configured in optimizer steps; Lightning's val_check_interval counts micro-batches.
        parser.add_argument(
            "--memory_check", type=bool, default=True,
            help="on a GPU, plan the peak memory before any data is built and refuse a config that cannot fit",
        )
        parser.add_argument(
            "--val_every_n_steps", type=int, default=500, help="validate every N optimizer steps, whatever the accumulation"
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        check_settings(config, self.subcommand or "fit")  # before any data is built or streamed
        if self.subcommand:
            self._safe_loading(config)
        interval = val_check_interval(config.val_every_n_steps, trainer.accumulate_grad_batches)
        # A saved config.yaml holds the converted value: accept it when it agrees.
        if trainer.val_check_interval not in (None, interval):
            raise FlightMindError(
                f"trainer.val_check_interval ({trainer.val_check_interval}) counts micro-batches; set "
                "val_every_n_steps (optimizer steps, converted for any accumulation) instead"
            )
        trainer.val_check_interval = interval
        # The persistent progress bar only where the Trainer shows one (Lightning refuses a bar otherwise).
        if trainer.get("enable_progress_bar") is False:
            self.trainer_defaults["callbacks"] = [
                c for c in self.trainer_defaults["callbacks"] if not isinstance(c, ProgressBar)
            ]

    def before_fit(self) -> None:
        """The memory plan (flightmind plan) before any data is built or streamed; GPUs only."""
        from lightning.pytorch.accelerators import CUDAAccelerator

        if not self.config.fit.get("memory_check", True) or not isinstance(self.trainer.accelerator, CUDAAccelerator):
            return
        import torch
        from lightning.pytorch.utilities import rank_zero_info

        from flightmind.training.plan import check_fits, gib

        device = self.trainer.strategy.root_device
        memory = torch.cuda.get_device_properties(device).total_memory
        if hasattr(torch.cuda, "get_per_process_memory_fraction"):  # a cap set by the caller (gpu_check's emulation)
            memory *= torch.cuda.get_per_process_memory_fraction(device)
        plan = check_fits(self.model, self.datamodule, self.trainer, memory, torch.cuda.get_device_name(device))
        rank_zero_info(f"memory plan: peak {gib(plan.peak)} per device, {gib(plan.with_margin)} with margin, of "
                       f"{gib(memory)} (flightmind plan -c … for the parts)")

    def _safe_loading(self, config) -> None:
        # Lightning's fit/validate/test pass weights_only=None to torch.load, which then follows
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD; AtomicCheckpointIO loads with True whatever it is given.
        if config.get("weights_only") is False:
            raise FlightMindError(
                "--weights_only false: FlightMind loads checkpoints with weights_only=True only (a pickle can run code)"
            )
        config.weights_only = True
        if self.subcommand in ("validate", "test") and config.get("ckpt_path") is None:
            rank_zero_warn(
                f"NO CHECKPOINT: `flightmind {self.subcommand}` without --ckpt_path scores the model as configured, "
                "with random weights that were never trained; pass --ckpt_path checkpoints/<run>/best.ckpt"
            )
        if config.get("ckpt_path") == "last":
            config.ckpt_path = resolve_last(config.checkpoint.dirpath or "checkpoints")
        elif config.get("ckpt_path") not in (None, "best", "hpc", "registry"):
            # FSDP reads a full checkpoint with its own unpickler, not through AtomicCheckpointIO:
            # whatever the strategy, the file must first pass a weights-only load.
            load_checkpoint_file(config.ckpt_path, mmap=True)

    def instantiate_trainer(self, **kwargs):
        # Every checkpoint is written and read by AtomicCheckpointIO, whatever trainer.plugins lists.
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        if isinstance(args, dict):
            return super().parse_arguments(parser, args)
        self.config = parser.parse_args(expand_config_bases(list(sys.argv[1:] if args is None else args)))

    def _parse_ckpt_path(self) -> None:
        # Private LightningCLI method (tests/training/test_internals.py watches it): it would silently
        # replace the configured model with the checkpoint's hyperparameters. The config stays the source
        # of truth; a shape that differs from the checkpoint's is reported by name when the checkpoint
        # loads (CausalLM.on_load_checkpoint). Upstream: Lightning-AI/pytorch-lightning#20801, and the
        # public hook proposed in #21408 (adapt_checkpoint_hparams) would replace this override.
        return


def lightning_cli(args: list[str] | None = None, run: bool = True, cli_class: type[LightningCLI] = FlightMindCLI):
    """The ``fit``/``validate``/``test`` CLI; ``run=False`` parses and instantiates only (no subcommand in args)."""
    return cli_class(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={
            "precision": "bf16-mixed",
            "gradient_clip_val": 1.0,
            "callbacks": persistent_callbacks(),
        },
        save_config_kwargs={"overwrite": True},
        # A bad option raises argparse.ArgumentError, which main() prints as one line (not the usage).
        parser_kwargs={"exit_on_error": False, **{name: {"exit_on_error": False} for name in LIGHTNING_COMMANDS}},
        args=args,  # None: sys.argv
        run=run,
    )


class _ConfigOnlyCLI(FlightMindCLI):
    def instantiate_trainer(self, **kwargs) -> None:
        return None  # the Trainer's arguments stay in config_init.trainer


def instantiate_config(*args: str):
    """What ``flightmind fit`` builds from these arguments (``-c FILE``, overrides), except the Trainer.

    Returns the model, the datamodule and the Trainer's arguments (its strategy instantiated); for
    tests and benchmarks that check a shipped config on hardware it was not written for.
    """
    cli = lightning_cli(list(args), run=False, cli_class=_ConfigOnlyCLI)
    return cli.model, cli.datamodule, cli.config_init.trainer
