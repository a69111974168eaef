"""From training checkpoints to a deployable model: ``flightmind export --ckpt … --out …``.

    flightmind export --ckpt checkpoints/finetune/final.ckpt --out exported/flightmind-d24-aida
    flightmind export --ckpt checkpoints/finetune/final.ckpt --out exported/aida-q8.gguf --format gguf --dtype q8_0

The source is a checkpoint ``flightmind fit`` writes (pretraining or LoRA fine-tuning), an export
directory, or a Hugging Face Llama directory (all read by ``flightmind.model.checkpoint.read_saved``).
Export rebuilds the GPT, merges any adapters (``W ← W + (α/r)·B·A``) and writes one of:

- ``--format hf`` (the default): a Hugging Face Llama directory that transformers, vLLM and
  lm-evaluation-harness load with no custom code (``flightmind.interop.hf``);
- ``--format gguf``: one ``FILE.gguf`` for llama.cpp (``flightmind.interop.gguf``);
- ``--format flightmind``: ``model.safetensors`` with the GPT's own keys, ``tokenizer.json`` and
  ``config.json`` = ``{"format": "flightmind-gpt", "model_config": {...}, "dtype", "source", ...}``.

A directory's ``config.json`` is written last (and an old one removed first), so a directory holding
one is complete. ``load_trained(DIR)`` and ``flightmind generate --ckpt DIR`` read both directory
formats back. safetensors, transformers and gguf are optional: ``pip install 'flightmind[hf,gguf]'``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flightmind.atomic import replace_with
from flightmind.contracts import tokenizer_hash
from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT
from flightmind.data.tokenizer import save_tokenizer
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    build_model,
    read_saved,
    safetensors_torch,
    trained_tokenizer,
)

FORMATS = ("hf", "gguf", "flightmind")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GGUF_ONLY_DTYPES = ("q8_0",)


# ---------------------------------------------------------------------------------------------
# Writing an exported model


def export(
    ckpt: str | Path,
    out: str | Path,
    *,
    format: str = "hf",
    tokenizer: str | Path | None = None,
    dtype: str = "float32",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> dict:
    """Write the merged model of ``ckpt`` to ``out`` in ``format``; returns what was written (for the
    flightmind format, the config.json written)."""
    if format not in FORMATS:
        raise FlightMindError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES and not (format == "gguf" and dtype in GGUF_ONLY_DTYPES):
        choices = [*DTYPES, *(GGUF_ONLY_DTYPES if format == "gguf" else ())]
        raise FlightMindError(f"unknown dtype {dtype!r} for --format {format}: choose one of {', '.join(choices)}")
    if format == "gguf":  # a missing optional package is reported before any work
        from flightmind.interop.gguf import gguf_module

        gguf_module()
    else:
        safetensors_torch()
    if format != "gguf" and Path(out).exists() and not Path(out).is_dir():
        raise FlightMindError(f"--out {out} is a file: name a directory (created if missing) for the exported model")
    saved = read_saved(ckpt)
    tok = trained_tokenizer(saved, tokenizer)
    model = build_model(saved)
    state = model.state_dict()
    summary = {
        "format": EXPORT_FORMAT if format == "flightmind" else format,
        "model_config": saved.config.to_dict(),
        "dtype": dtype,
        "num_params": sum(v.numel() for v in state.values()),
        "tokenizer_sha256": tokenizer_hash(tok),
        "source": {"checkpoint": str(saved.path), "global_step": saved.global_step, "lora_merged": saved.lora},
    }
    out = Path(out)
    if format == "hf":
        from flightmind.interop.hf import write_hf

        summary["files"] = write_hf(state, saved.config, tok, out, dtype=dtype, system_prompt=system_prompt)
        return summary
    if format == "gguf":
        from flightmind.interop.gguf import write_gguf

        write_gguf(state, saved.config, tok, out, dtype=dtype, system_prompt=system_prompt)
        summary["files"] = [out.name]
        return summary
    from flightmind.interop.hf import save_safetensors

    state = {k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # the directory is incomplete until the new one is written
    save_safetensors(state, out / WEIGHTS_FILE)
    save_tokenizer(tok, out / TOKENIZER_FILE)
    replace_with(out / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
    return summary


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt", required=True, metavar="PATH",
        help="a checkpoint written by `flightmind fit` (pretraining or LoRA), or an exported / Hugging Face Llama directory",
    )
    parser.add_argument("--out", required=True, metavar="DIR|FILE.gguf", help="directory to write (hf, flightmind) or the .gguf file (gguf)")
    parser.add_argument(
        "--format", choices=FORMATS, default="hf",
        help="hf (default): Hugging Face Llama for transformers, vLLM, lm_eval; gguf: one file for llama.cpp; "
        "flightmind: model.safetensors + config.json + tokenizer.json with FlightMind's own keys",
    )
    parser.add_argument("--tokenizer", metavar="tokenizer.json", help="tokenizer to ship (default: the one the checkpoint holds)")
    parser.add_argument(
        "--dtype", choices=[*DTYPES, *GGUF_ONLY_DTYPES], default="float32",
        help="weights' dtype (default: %(default)s; q8_0 for gguf only)",
    )
    parser.add_argument(
        "--system-prompt", default=DEFAULT_SYSTEM_PROMPT,
        help="system turn the exported chat template puts first when a conversation has none (default: %(default)r)",
    )


def run(args: argparse.Namespace) -> int:
    config = export(
        args.ckpt, args.out, format=args.format, tokenizer=args.tokenizer, dtype=args.dtype, system_prompt=args.system_prompt
    )
    lora = config["source"]["lora_merged"]
    merged = f"LoRA r={lora['r']} α={lora['alpha']} merged" if lora else "no adapters"
    files = config.get("files") or [WEIGHTS_FILE, TOKENIZER_FILE, CONFIG_FILE]
    print(
        f"exported d{config['model_config']['depth']} ({config['num_params'] / 1e6:.1f}M parameters, {config['dtype']}, "
        f"{merged}) as {args.format} to {args.out}: {', '.join(files)}"
    )
    return 0
