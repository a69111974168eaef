"""``flightmind import-hf DIR --out FILE.ckpt``: a Llama-family Hugging Face model as a FlightMind checkpoint.

The checkpoint holds what ``flightmind fit`` reads from a base: ``state_dict`` (the GPT's keys under
``model.``), ``model_config`` and ``tokenizer``. LoRA fine-tuning names it in
``model.init_args.base_checkpoint``, continued pretraining in ``model.init_args.init_from``. The
tokenizer, with FlightMind's special tokens added where missing, is also written beside the checkpoint
(``FILE.tokenizer.json``) for ``flightmind prepare --tokenizer`` and the fine-tuning data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flightmind.atomic import replace_with
from flightmind.data.tokenizer import save_tokenizer
from flightmind.errors import FlightMindError
from flightmind.interop.hf import read_llama
from flightmind.model.checkpoint import MODEL_PREFIX, tokenizer_entry


def tokenizer_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".tokenizer.json")


def import_hf(directory: str | Path, out: str | Path) -> dict:
    """Write the checkpoint ``out`` and its tokenizer file; returns what changed on the way (see read_llama)."""
    directory, out = Path(directory), Path(out)
    if not (directory / "config.json").is_file():
        raise FlightMindError(f"{directory} holds no config.json: name a Hugging Face model directory (save_pretrained)")
    if out.suffix != ".ckpt":
        raise FlightMindError(f"--out {out}: name the checkpoint to write FILE.ckpt")
    saved, changes = read_llama(directory)
    checkpoint = {
        "state_dict": {MODEL_PREFIX + k: v.contiguous() for k, v in saved.state_dict.items()},
        "model_config": saved.config.to_dict(),
        "tokenizer": tokenizer_entry(saved.tokenizer.to_str()),
        "global_step": 0,
        "imported_from": {"directory": str(directory), "added_tokens": changes["added_tokens"], "rows": list(changes["rows"])},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_tokenizer(saved.tokenizer, tokenizer_path(out))
    replace_with(out, lambda tmp: torch.save(checkpoint, tmp))
    return {**changes, "config": saved.config, "num_params": saved.config.num_params()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="a Llama model directory: config.json, *.safetensors, tokenizer.json")
    parser.add_argument("--out", required=True, metavar="FILE.ckpt", help="checkpoint to write (its tokenizer goes to FILE.tokenizer.json)")


def run(args: argparse.Namespace) -> int:
    result = import_hf(args.directory, args.out)
    config, (before, after) = result["config"], result["rows"]
    added = result["added_tokens"]
    grown = f"; added {', '.join(added)} to the tokenizer, embedding rows {before:,} → {after:,}" if added else ""
    print(
        f"imported {args.directory}: {config.n_layer} layers, width {config.dim}, {config.n_head} heads "
        f"({config.n_kv_head} key/value), {config.num_params() / 1e6:.1f}M parameters{grown}\n"
        f"wrote {args.out} and {tokenizer_path(args.out)}; prepare data with "
        f"`flightmind prepare --tokenizer {tokenizer_path(args.out)} …`"
    )
    return 0
