"""Text continuation: greedy or sampled (temperature, top-k, top-p), one token at a time, with a KV cache."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

import torch
from tokenizers import Tokenizer

from flightmind.contracts import END, EOT, eot_id
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
# Text in, text out (used by `flightmind generate`, flightmind/generate.py, and the sample callback)


def stop_ids(tokenizer: Tokenizer) -> set[int]:
    """Generation ends at the end of a document or of a chat turn."""
    return {tokenizer.token_to_id(token) for token in (EOT, END)} - {None}


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt as the start of a document: training put ``<|endoftext|>`` before every document."""
    return [eot_id(tokenizer), *tokenizer.encode(prompt, add_special_tokens=False).ids]


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

    ``prompt_ids`` replaces the prompt's encoding as a document's start (e.g. flightmind.generate.chat_prompt).
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
