"""Text continuation: greedy or sampled (temperature, top-k, top-p), one token at a time, with a KV cache."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import torch

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
