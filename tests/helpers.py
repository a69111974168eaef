"""Running the `flightmind` command as a user does, and reading what it logged."""

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def flightmind(*args, cwd):
    # This checkout's package, whatever is installed.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "flightmind.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def write_checkpoint(path: Path, model, *, lora: dict | None = None, tokenizer_json: str | None = None, step: int = 0) -> Path:
    """A checkpoint laid out as `flightmind fit` writes it: the GPT under `model.`, its model_config."""
    import torch

    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "hyper_parameters": {"depth": model.config.depth},
        "global_step": step,
    }
    if lora is not None:
        checkpoint["lora"] = lora
    if tokenizer_json is not None:
        checkpoint["tokenizer_json"] = tokenizer_json
    torch.save(checkpoint, path)
    return path
