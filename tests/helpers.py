"""Running the `flightmind` command as a user does, and reading what it logged."""

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Imported here, at collection, not first inside a test: Lightning gives its logger a StreamHandler
# on the sys.stderr of its import, and a test's capsys stream is closed when that test ends (the
# next test to log through it would print "--- Logging error ---").
from flightmind.cli import main as _cli_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def flightmind(*args, cwd):
    # This checkout's package, whatever is installed.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "flightmind.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def flightmind_here(*args, cwd, monkeypatch, capsys):
    """`flightmind ARGS` in this process (for argument checks, which need no fresh interpreter):
    an object with returncode, stdout and stderr like `flightmind`'s."""
    from types import SimpleNamespace

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = _cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def recomputed_action_accuracy(model, tokenizer, examples, max_new_tokens) -> float:
    """The reference for val/action_acc: greedy decoding by a full forward pass per token (no KV cache),
    the text up to the first newline or end marker parsed as JSON and compared with the reference action."""
    import json

    import torch

    stops = {tokenizer.token_to_id("<|end|>"), tokenizer.token_to_id("<|endoftext|>")}
    right = 0
    model.eval()
    for example in examples:
        tokens = list(example["prompt"])
        for _ in range(max_new_tokens):
            with torch.no_grad():
                token = int(model(torch.tensor([tokens]))[0, -1].argmax())
            if token in stops:
                break
            tokens.append(token)
            if "\n" in tokenizer.decode([token], skip_special_tokens=False):
                break
        first_line = tokenizer.decode(tokens[len(example["prompt"]) :]).split("\n", 1)[0]
        try:
            right += json.loads(first_line) == example["action"]
        except ValueError:
            pass
    return right / len(examples)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def write_checkpoint(path: Path, model, *, lora: dict | None = None, tokenizer_json: str | None = None, step: int = 0) -> Path:
    """A checkpoint laid out as `flightmind fit` writes it: the GPT under `model.`, its model_config,
    and (given its JSON text) the tokenizer as PretrainModule stores it."""
    import torch

    from flightmind.model.checkpoint import tokenizer_entry

    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "model_config": model.config.to_dict(),
        "hyper_parameters": {"depth": model.config.depth},
        "global_step": step,
    }
    if lora is not None:
        checkpoint["lora"] = lora
    if tokenizer_json is not None:
        checkpoint["tokenizer"] = tokenizer_entry(tokenizer_json)
    torch.save(checkpoint, path)
    return path


LORA = {"r": 4, "alpha": 8.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"]}


def tiny_gpt(seed=0, vocab_size=512):
    """A random d2 GPT (max_seq_len 64) in eval mode; vocab 512 fits the `chat_tokenizer_path` fixture."""
    import torch

    from flightmind.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig.from_depth(2, vocab_size=vocab_size, max_seq_len=64)).eval()


def fine_tuned(seed=0):
    """tiny_gpt with LORA adapters whose B is non-zero, so that they change what the model computes."""
    import torch

    from flightmind.model.lora import apply_lora, lora_layers

    model = apply_lora(tiny_gpt(seed), r=LORA["r"], alpha=LORA["alpha"])
    with torch.no_grad():
        for _, _, layer in lora_layers(model):
            layer.lora_B.normal_(std=0.05)
    return model.eval()
