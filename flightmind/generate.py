"""`flightmind generate`: continue a prompt, or ask a fine-tuned model in its chat template, with any
model ``fit`` or ``export`` wrote (decoding itself is flightmind/model/generate.py)."""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from tokenizers import Tokenizer

from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT, ChatTemplate, Message
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_trained
from flightmind.model.generate import complete


def chat_prompt(tokenizer: Tokenizer, prompt: str, system: str | None) -> list[int]:
    """The prompt as a user turn of the fine-tuning chat template, asking for the assistant's answer."""
    messages = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    return ChatTemplate(tokenizer).prompt(messages)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, metavar="PATH", help="a checkpoint written by `flightmind fit` (pretraining or LoRA, "
                        "e.g. checkpoints/d8/best.ckpt) or a directory written by `flightmind export`")
    parser.add_argument("--prompt", required=True, help="text to continue (with --chat: the user's message)")
    parser.add_argument("--chat", action="store_true", help="ask a fine-tuned model: the prompt becomes a user turn of the "
                        "chat template and the assistant's answer is printed")
    parser.add_argument("--system", default=None, help="with --chat: the system prompt (default: the one fine-tuning "
                        "adds to records without one)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="at most this many new tokens (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default: 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample among the most likely tokens holding this probability mass")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    parser.add_argument("--stream", action="store_true", help="print the text as it is generated")
    parser.add_argument("--tokenizer", metavar="tokenizer.json", help="use this tokenizer instead of the one saved with the model")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token (slow; for comparison)")


def _check_arguments(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise FlightMindError(f"--max-new-tokens must be at least 1, not {args.max_new_tokens}")
    if args.system is not None and not args.chat:
        raise FlightMindError("--system sets the system turn of --chat: add --chat, or drop --system")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise FlightMindError(f"--temperature must be a finite number, 0 (greedy) or more, not {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise FlightMindError(f"--top-k must be at least 1, not {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise FlightMindError(f"--top-p must be in (0, 1], not {args.top_p}")


def chosen_device(name: str | None) -> torch.device:
    """``--device``, checked against what this machine and this torch build have."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FlightMindError(f"--device {name} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FlightMindError(f"--device {name}: no CUDA GPU is usable here (torch {torch.__version__}): use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FlightMindError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    elif device.type != "cpu":
        raise FlightMindError(f"--device {name}: flightmind generate runs on cpu or cuda")
    return device


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    device = chosen_device(args.device)
    model, tokenizer = load_trained(args.ckpt, tokenizer=args.tokenizer, device=device)
    generator = None if args.seed is None else torch.Generator(device).manual_seed(args.seed)

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    prompt_ids = None
    if args.chat:
        prompt_ids = chat_prompt(tokenizer, args.prompt, DEFAULT_SYSTEM_PROMPT if args.system is None else args.system)
    shown_prompt = "" if args.chat else args.prompt  # a chat answer stands alone
    if args.stream:
        show(shown_prompt)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        completion = complete(
            model,
            tokenizer,
            args.prompt,
            args.max_new_tokens,
            on_text=show if args.stream else None,
            prompt_ids=prompt_ids,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=generator,
            use_cache=not args.no_cache,
        )
    seconds = time.perf_counter() - started
    print("" if args.stream else shown_prompt + completion.text)
    tokens = len(completion.ids)
    print(f"[{tokens} tokens in {seconds:.2f} s, {tokens / seconds:.1f} tokens/s]", file=sys.stderr)
    return 0
