"""From training checkpoints to a deployable model: ``flightmind export --ckpt … --out DIR``.

    flightmind export --ckpt checkpoints/finetune/final.ckpt --out exported/flightmind-d24-aida

A training checkpoint is what ``flightmind fit`` writes (pretraining or LoRA fine-tuning; read by
``flightmind.model.checkpoint``, which also describes its keys). Export rebuilds the GPT, merges any
adapters (``W ← W + (α/r)·B·A``) and writes:

    DIR/model.safetensors   the plain GPT's state dict: no LoRA tensors, no ``model.`` prefix
    DIR/tokenizer.json      the tokenizer the model was trained with (the checkpoint's, or --tokenizer)
    DIR/config.json         {"format": "flightmind-gpt", "model_config": {...}, "dtype", "source", ...}

``config.json`` is written last (and an old one removed first), so a directory holding one is
complete. ``flightmind.model.checkpoint.load_trained(DIR)`` gives back ``(GPT, Tokenizer)``, as does
``flightmind generate --ckpt DIR``. safetensors is an optional dependency: ``pip install 'flightmind[export]'``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from flightmind.atomic import replace_with
from flightmind.contracts import tokenizer_hash
from flightmind.data.tokenizer import save_tokenizer
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    build_model,
    read_checkpoint,
    safetensors_torch,
    trained_tokenizer,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Writing an exported model


def export(
    ckpt: str | Path, out: str | Path, *, tokenizer: str | Path | None = None, dtype: str = "float32"
) -> dict:
    """Write the merged model of ``ckpt`` to the directory ``out``; returns the written config."""
    safetensors = safetensors_torch()
    if Path(out).exists() and not Path(out).is_dir():
        raise FlightMindError(f"--out {out} is a file: name a directory (created if missing) for the exported model")
    if dtype not in DTYPES:
        raise FlightMindError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    checkpoint = read_checkpoint(ckpt)
    tok = trained_tokenizer(checkpoint, tokenizer)
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
    replace_with(out / WEIGHTS_FILE, lambda tmp: _save_safetensors(safetensors, state, tmp))
    save_tokenizer(tok, out / TOKENIZER_FILE)
    replace_with(out / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    return config


def _save_safetensors(safetensors, state: dict, tmp: Path) -> None:
    mode = tmp.stat().st_mode & 0o777  # safetensors recreates the file 0600: keep the 0644 of the other files
    safetensors.save_file(state, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, mode)


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="FILE.ckpt", help="a checkpoint written by `flightmind fit` (pretraining or LoRA)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors, config.json, tokenizer.json")
    parser.add_argument("--tokenizer", metavar="tokenizer.json", help="tokenizer to ship (default: the one the checkpoint holds)")
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
