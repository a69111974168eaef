"""From training checkpoints to a deployable model: ``flightmind export --ckpt … --out DIR``.

    flightmind export --ckpt checkpoints/finetune/final.ckpt --out exported/flightmind-d24-aida

A training checkpoint is what ``flightmind fit`` writes: ``state_dict`` (the GPT under ``model.``),
``model_config`` and, for a LoRA fine-tune, ``lora`` (r, alpha, targets) and ``tokenizer_json``.
Export rebuilds the GPT, merges any adapters (``W ← W + (α/r)·B·A``) and writes:

    DIR/model.safetensors   the plain GPT's state dict: no LoRA tensors, no ``model.`` prefix
    DIR/tokenizer.json      the tokenizer the model was trained with
    DIR/config.json         {"format": "flightmind-gpt", "model_config": {...}, "dtype", "source", ...}

``config.json`` is written last (and an old one removed first), so a directory holding one is
complete. ``load_exported(DIR)`` gives back ``(GPT, Tokenizer)`` with no LoRA code involved.
safetensors is an optional dependency: ``pip install 'flightmind[export]'``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from flightmind.data.tokenizer import load_tokenizer, save_tokenizer, tokenizer_hash
from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.model.lora import apply_lora, merge_lora_weights

EXPORT_FORMAT = "flightmind-gpt"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise FlightMindError(
            "exported models are safetensors files, and the safetensors package is not installed: "
            "pip install 'flightmind[export]'"
        ) from None
    return safetensors.torch


# ---------------------------------------------------------------------------------------------
# Reading training checkpoints


@dataclass
class TrainedCheckpoint:
    path: Path
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]  # the GPT's own keys; LoRA tensors too when ``lora`` is set
    lora: dict | None  # {"r", "alpha", "targets"} of a LoRA fine-tune
    tokenizer_json: str | None
    global_step: int | None


def _load(path: Path) -> dict:
    if not path.is_file():
        raise FlightMindError(f"checkpoint {path} does not exist: name a .ckpt written by `flightmind fit`")
    try:
        # mmap: reading a d24 checkpoint costs no memory until its tensors are used.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated zip, a pickle with foreign objects, not a checkpoint at all
        raise FlightMindError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint or "state_dict" not in checkpoint:
        raise FlightMindError(
            f"{path} is not a FlightMind training checkpoint (no 'state_dict' and 'model_config'): "
            "name a .ckpt written by `flightmind fit`"
        )
    return checkpoint


def read_model_config(path: str | Path) -> GPTConfig:
    return GPTConfig.from_dict(_load(Path(path))["model_config"])


def read_checkpoint(path: str | Path) -> TrainedCheckpoint:
    path = Path(path)
    checkpoint = _load(path)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise FlightMindError(f"checkpoint {path} holds no model weights (no 'model.' keys in its state_dict)")
    return TrainedCheckpoint(
        path=path,
        config=GPTConfig.from_dict(checkpoint["model_config"]),
        state_dict=state,
        lora=checkpoint.get("lora"),
        tokenizer_json=checkpoint.get("tokenizer_json"),
        global_step=checkpoint.get("global_step"),
    )


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a state dict strictly, reporting every missing, unexpected or misshapen key at once."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} where the model has {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        problems = [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []
        problems += [f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"] if unexpected else []
        problems += [f"{len(misshapen)} of another shape ({'; '.join(misshapen[:3])})"] if misshapen else []
        raise FlightMindError(
            f"the weights in {source} do not fit the model its configuration describes: {', '.join(problems)}; "
            "the file does not match its model_config (was it written by another version or edited?)"
        )
    model.load_state_dict(state_dict)


def build_model(checkpoint: TrainedCheckpoint, *, merge: bool = True) -> GPT:
    """The checkpoint's GPT with its weights; a LoRA fine-tune comes merged unless ``merge=False``."""
    model = GPT(checkpoint.config)
    if checkpoint.lora:
        lora = checkpoint.lora
        apply_lora(model, r=int(lora["r"]), alpha=float(lora["alpha"]), targets=lora["targets"])
    load_weights(model, checkpoint.state_dict, checkpoint.path)
    if checkpoint.lora and merge:
        merge_lora_weights(model)
    return model


def load_checkpoint_model(path: str | Path) -> GPT:
    """A plain GPT (adapters merged) from any training checkpoint, in eval mode."""
    return build_model(read_checkpoint(path)).eval()


# ---------------------------------------------------------------------------------------------
# Writing and reading exported models


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FlightMindError(f"cannot write {path}: {e.strerror or e}") from None


def export(
    ckpt: str | Path, out: str | Path, *, tokenizer: str | Path | None = None, dtype: str = "float32"
) -> dict:
    """Write the merged model of ``ckpt`` to the directory ``out``; returns the written config."""
    safetensors_torch = _safetensors_torch()
    if dtype not in DTYPES:
        raise FlightMindError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    checkpoint = read_checkpoint(ckpt)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif checkpoint.tokenizer_json is not None:
        tok = Tokenizer.from_str(checkpoint.tokenizer_json)
    else:
        raise FlightMindError(
            f"checkpoint {ckpt} does not hold its tokenizer (pretraining checkpoints don't): "
            "pass --tokenizer with the tokenizer.json it was trained with (e.g. data/tokenized/tokenizer.json)"
        )
    if tok.get_vocab_size() > checkpoint.config.vocab_size:
        raise FlightMindError(
            f"the tokenizer has {tok.get_vocab_size():,} tokens but the model only {checkpoint.config.vocab_size:,} "
            "embedding rows: it is not the tokenizer this model was trained with"
        )
    model = build_model(checkpoint)
    state = {k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": EXPORT_FORMAT,
        "model_config": checkpoint.config.to_dict(),
        "dtype": dtype,
        "num_params": sum(v.numel() for v in state.values()),
        "tokenizer_sha256": tokenizer_hash(tok),
        "source": {"checkpoint": str(checkpoint.path), "global_step": checkpoint.global_step, "lora_merged": checkpoint.lora},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # the directory is incomplete until the new one is written
    _replace_atomically(out / WEIGHTS_FILE, lambda tmp: safetensors_torch.save_file(state, str(tmp), metadata={"format": "pt"}))
    save_tokenizer(tok, out / TOKENIZER_FILE)
    _replace_atomically(out / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    return config


def load_exported(directory: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, Tokenizer]:
    """The GPT (float32, eval mode) and tokenizer of a directory written by ``export``."""
    safetensors_torch = _safetensors_torch()
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FlightMindError(f"{directory} holds no {CONFIG_FILE}: it is not a complete `flightmind export` directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_config = GPTConfig.from_dict(config["model_config"])
    except (ValueError, KeyError, TypeError) as e:
        raise FlightMindError(f"cannot read {config_path} ({type(e).__name__}: {e}); export the model again") from None
    if config.get("format") != EXPORT_FORMAT:
        raise FlightMindError(f"{config_path} describes format {config.get('format')!r}, not {EXPORT_FORMAT!r}")
    with torch.device(device):
        model = GPT(model_config)
    state = safetensors_torch.load_file(str(directory / WEIGHTS_FILE), device=str(device))
    load_weights(model, state, directory / WEIGHTS_FILE)
    return model.eval(), load_tokenizer(directory / TOKENIZER_FILE)


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="FILE.ckpt", help="a checkpoint written by `flightmind fit` (pretraining or LoRA)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors, config.json, tokenizer.json")
    parser.add_argument("--tokenizer", metavar="tokenizer.json", help="tokenizer to ship (default: the one a fine-tuning checkpoint holds)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="weights' dtype (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    config = export(args.ckpt, args.out, tokenizer=args.tokenizer, dtype=args.dtype)
    lora = config["source"]["lora_merged"]
    merged = f"LoRA r={lora['r']} α={lora['alpha']} merged" if lora else "no adapters"
    print(
        f"exported d{config['model_config']['depth']} ({config['num_params'] / 1e6:.1f}M parameters, {config['dtype']}, "
        f"{merged}) to {args.out}: {WEIGHTS_FILE}, {TOKENIZER_FILE}, {CONFIG_FILE}"
    )
    return 0
