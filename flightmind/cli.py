"""The ``flightmind`` command.

``fit``, ``validate`` and ``test`` are LightningCLI: YAML → LightningCLI → the ``__init__``
signatures of the module, the datamodule and the Trainer. The tool commands (``prepare`` …) are
plain argparse programs, each defined in the module of its concept by ``add_arguments`` and ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from flightmind.errors import FlightMindError
from flightmind.training.callbacks import FinalCheckpoint, TokenThroughputMonitor

# name → (module defining add_arguments/run, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "prepare": ("flightmind.data.prepare", "train the BPE tokenizer if needed; JSONL → packed uint16 shards + meta.json"),
    "synth-commands": ("flightmind.data.commands", "synthetic cockpit commands (9 categories) as chat JSONL for fine-tuning"),
    "export": ("flightmind.export", "merge LoRA adapters; write model.safetensors + config.json + tokenizer.json"),
}

LIGHTNING_COMMANDS = {
    "fit": "train, or resume with --ckpt_path last",
    "validate": "validation loss and perplexity of a checkpoint",
    "test": "held-out loss and perplexity of a checkpoint",
}


class FlightMindCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # step_N every N optimizer steps (all kept) and last.ckpt for --ckpt_path last.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.dirpath": "checkpoints",
                "checkpoint.filename": "step_{step}",
                "checkpoint.every_n_train_steps": 1000,
                "checkpoint.save_top_k": -1,
                "checkpoint.save_last": True,
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
            }
        )
        # best.ckpt: lowest validation loss, in the same directory.
        parser.add_lightning_class_args(ModelCheckpoint, "best_checkpoint")
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

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would silently replace the configured model with the checkpoint's
        # hyperparameters. The config stays the source of truth; a shape that differs from the
        # checkpoint's is reported by name when the checkpoint loads (PretrainModule.on_load_checkpoint).
        return


def run_lightning(argv: list[str] | None) -> None:
    FlightMindCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={
            "precision": "bf16-mixed",
            "gradient_clip_val": 1.0,
            "callbacks": [LearningRateMonitor(logging_interval="step"), FinalCheckpoint()],
        },
        save_config_kwargs={"overwrite": True},
        args=argv,  # None: LightningCLI reads sys.argv itself
    )


def run_tool(name: str, argv: list[str]) -> int:
    module_name, help_text = TOOLS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"flightmind {name}", description=help_text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


def print_usage() -> None:
    lines = ["usage: flightmind COMMAND [options]   (flightmind COMMAND --help for its options)", ""]
    lines += ["training (LightningCLI; -c CONFIG.yaml):"]
    lines += [f"  {name:<15} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {name:<15} {text}" for name, (_, text) in TOOLS.items()]
    print("\n".join(lines))


def user_error(err: BaseException) -> FlightMindError | None:
    """The FlightMindError behind ``err``: jsonargparse wraps one raised in a class's ``__init__``."""
    while err is not None and not isinstance(err, FlightMindError):
        err = err.__cause__
    return err


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if not words or words[0] in ("-h", "--help"):
            print_usage()
            return 0
        if words[0] in TOOLS:
            return run_tool(words[0], words[1:])
        run_lightning(None if argv is None else words)
        return 0
    except (FlightMindError, ValueError) as err:
        if (cause := user_error(err)) is None:
            raise
        print(f"flightmind: error: {cause}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
