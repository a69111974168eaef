"""The ``flightmind`` command: one line for every user error, no traceback.

``fit``, ``validate`` and ``test`` are LightningCLI (``flightmind.training.lightning_cli``). The tool
commands (``prepare`` …) are plain argparse programs, each defined in the module of its concept by
``add_arguments`` and ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from lightning.pytorch.utilities.exceptions import SIGTERMException

from flightmind.errors import FlightMindError
from flightmind.training.lightning_cli import LIGHTNING_COMMANDS, lightning_cli

# name → (module defining add_arguments/run, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "prepare": ("flightmind.data.prepare", "train the BPE tokenizer if needed; JSONL → packed uint16 shards + meta.json"),
    "generate": ("flightmind.generate", "continue a prompt with a trained checkpoint (KV cache; greedy or sampled)"),
    "dashboard": ("flightmind.dashboard", "draw a run's loss, perplexity, gradient norm and throughput as a PNG"),
    "budget": ("flightmind.training.budget", "parameters, tokens, FLOPs, hours and cost of a pretraining run"),
    "plan": ("flightmind.training.plan", "peak memory per device of a config, whether it fits its card, the largest micro-batch"),
    "synth-commands": ("flightmind.data.commands", "synthetic cockpit commands (9 categories) as chat JSONL for fine-tuning"),
    "export": ("flightmind.export", "merge LoRA adapters; write a Hugging Face Llama directory (default), GGUF, or FlightMind's format"),
    "import-hf": ("flightmind.interop.import_hf", "a Llama-family Hugging Face model as a checkpoint to continue pretraining or fine-tune"),
}

class ToolParser(argparse.ArgumentParser):
    """argparse, its errors one line (main prints them) instead of the usage and a second line."""

    def error(self, message: str):
        raise FlightMindError(f"{message} ({self.prog} --help lists the options)")


def run_tool(name: str, argv: list[str]) -> int:
    module_name, help_text = TOOLS[name]
    module = importlib.import_module(module_name)
    parser = ToolParser(prog=f"flightmind {name}", description=help_text)
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


PARSE_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>", "- Problem with")


def parse_error_line(err: argparse.ArgumentError) -> str:
    """jsonargparse's nested, multi-line message as one line: the key and the innermost reason."""
    keys, reasons = [], []
    for line in (line.strip() for line in str(err).splitlines()):
        if match := re.match(r'Parser key "([^"]+)":\s*(.*)', line):
            keys.append(match.group(1))
            line = match.group(2)
        if line and not line.startswith(PARSE_NOISE):
            reasons.append(line)
    reason = reasons[0] if reasons else " ".join(str(err).split())[:300]
    if not keys:
        return reason
    # A class's own arguments (model, data) sit under init_args in the config.
    key = keys[0] if len(keys) == 1 else f"{keys[0]}.init_args.{keys[-1]}"
    if len(keys) == 1 and "class_path" in str(err) and keys[0] in ("model", "data"):
        key += ".init_args"
    return f"{key}: {reason}"


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if not words or words[0] in ("-h", "--help"):
            print_usage()
            return 0
        if words[0] in TOOLS:
            return run_tool(words[0], words[1:])
        lightning_cli(None if argv is None else words)
        return 0
    except argparse.ArgumentError as err:
        command = words[0] if words and words[0] in LIGHTNING_COMMANDS else "COMMAND"
        print(f"flightmind: error: {parse_error_line(err)} (flightmind {command} --help lists the options)", file=sys.stderr)
        return 2
    except SIGTERMException:  # Lightning's own handler, before training started (SaveOnSignal's after)
        print("flightmind: stopped by SIGTERM before training started; nothing to save", file=sys.stderr)
        return 143
    except (FlightMindError, ValueError) as err:
        if (cause := user_error(err)) is None:
            raise
        print(f"flightmind: error: {cause}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
