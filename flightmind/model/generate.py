"""Text continuation: greedy or sampled (temperature, top-k, top-p), one token at a time, with a KV cache."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Collection, Iterator

import torch
from tokenizers import Tokenizer

from flightmind.contracts import END, EOT, eot_id
from flightmind.errors import FlightMindError
from flightmind.model.gpt import GPT, KVCache



def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next token from the logits (vocab,) of the last position; temperature 0 is greedy."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


def context_start(length: int, start: int, max_seq_len: int) -> int:
    """Where the model's context begins, given ``length`` tokens so far and a context that began at ``start``.

    The context grows until it fills ``max_seq_len``; the next token restarts it on the last half of
    the window (rotary positions from 0 again). With a cache that is one re-fill of the cache per
    ``max_seq_len // 2`` new tokens instead of a full forward pass per token.
    """
    if length - start <= max_seq_len:
        return start
    return length - max(1, max_seq_len // 2)


@torch.no_grad()
def generate(
    model: GPT,
    prompt: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Collection[int] = (),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` continuation tokens of ``prompt``; a stop id ends (and is not yielded).

    With ``use_cache`` each new token costs one position through a ``KVCache``; without, the whole
    context is recomputed for every token. Both see the same context (see ``context_start``) and give
    the same tokens.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    device = next(model.parameters()).device
    window = model.config.max_seq_len
    tokens = list(prompt)
    start = context_start(len(tokens), 0, window)
    cache = KVCache(min(window, len(tokens) + max_new_tokens)) if use_cache else None
    cached = start  # tokens[start:cached] are in the cache
    for _ in range(max_new_tokens):
        restart = context_start(len(tokens), start, window)
        if restart != start:
            start = cached = restart
            if cache is not None:
                cache.reset()
        if cache is None:
            logits = model(torch.tensor([tokens[start:]], device=device))[0, -1]
        else:
            logits = model(torch.tensor([tokens[cached:]], device=device), cache)[0, -1]
            cached = len(tokens)
        token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        if token in stop_ids:
            return
        yield token
        tokens.append(token)


# ---------------------------------------------------------------------------------------------
# Text in, text out (used by `flightmind generate` and the sample callback)


def stop_ids(tokenizer: Tokenizer) -> set[int]:
    """Generation ends at the end of a document or of a chat turn."""
    return {tokenizer.token_to_id(token) for token in (EOT, END)} - {None}


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt as the start of a document: training put ``<|endoftext|>`` before every document."""
    return [eot_id(tokenizer), *tokenizer.encode(prompt, add_special_tokens=False).ids]


def chat_prompt(tokenizer: Tokenizer, prompt: str, system: str | None) -> list[int]:
    """The prompt as a user turn of the fine-tuning chat template, asking for the assistant's answer."""
    from flightmind.data.chat import ChatTemplate, Message

    messages = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    return ChatTemplate(tokenizer).prompt(messages)


class TextStream:
    """Turns tokens into text as they come, holding back a character whose bytes are still incomplete."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        """The new text that ``token`` completes (possibly empty)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):  # byte-level BPE: a multi-byte character split across tokens
            return ""
        new, self.text = text[len(self.text) :], text
        return new

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        new, self.text = text[len(self.text) :], text
        return new


def complete(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    *,
    on_text: Callable[[str], None] | None = None,
    prompt_ids: list[int] | None = None,
    **sampling,
) -> TextStream:
    """The continuation of ``prompt`` (``.text``, ``.ids``); ``on_text`` receives the text piece by piece.

    ``prompt_ids`` replaces the prompt's encoding as a document's start (e.g. ``chat_prompt``).
    ``sampling`` takes the keyword arguments of ``generate`` (temperature, top_k, top_p, generator, use_cache).
    """
    stream = TextStream(tokenizer)
    ids = encode_prompt(tokenizer, prompt) if prompt_ids is None else prompt_ids
    for token in generate(model, ids, max_new_tokens, stop_ids=stop_ids(tokenizer), **sampling):
        piece = stream.push(token)
        if piece and on_text is not None:
            on_text(piece)
    piece = stream.flush()
    if piece and on_text is not None:
        on_text(piece)
    return stream


# ---------------------------------------------------------------------------------------------
# `flightmind generate`


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
    from flightmind.model.checkpoint import load_trained

    _check_arguments(args)
    device = chosen_device(args.device)
    model, tokenizer = load_trained(args.ckpt, tokenizer=args.tokenizer, device=device)
    generator = None if args.seed is None else torch.Generator(device).manual_seed(args.seed)

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    prompt_ids = None
    if args.chat:
        from flightmind.data.chat import DEFAULT_SYSTEM_PROMPT

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
