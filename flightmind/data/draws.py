"""What each pool will be asked for: tokens drawn over ``max_steps`` against the pool's size, passes, and
the validation windows scored; printed when training starts.

Aviation repeating is the plan (the spec's d24 run takes ~140 passes over its shards); the general pool
repeating is not (its premise is that general text is never seen twice), so that one is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from flightmind.data.mixing import aviation_count

# Published sizes (tokens, GPT-2 tokenizer, from the dataset cards) of the pools the configs name.
PUBLISHED_TOKENS = {
    ("HuggingFaceFW/fineweb-edu", "default"): 1.3e12,
    ("HuggingFaceFW/fineweb-edu", None): 1.3e12,
    ("HuggingFaceFW/fineweb-edu", "sample-10BT"): 10e9,
    ("HuggingFaceFW/fineweb-edu", "sample-100BT"): 100e9,
    ("HuggingFaceFW/fineweb-edu", "sample-350BT"): 350e9,
}


@dataclass(frozen=True)
class PoolDraw:
    name: str
    tokens: int  # drawn over the whole run
    size: float | None  # tokens in the pool, where known
    size_note: str
    repeat_planned: bool

    @property
    def passes(self) -> float | None:
        return None if not self.size else self.tokens / self.size

    @property
    def warning(self) -> str | None:
        if self.repeat_planned or self.passes is None or self.passes <= 1:
            return None
        return (
            f"the {self.name} pool would come round {self.passes:.2f} times ({_tokens(self.tokens)} tokens drawn from "
            f"{_tokens(self.size)}): name a larger pool (FineWeb-EDU `name: default`, ≈ 1.3T tokens) or train fewer steps"
        )

    def line(self) -> str:
        size = f"of {_tokens(self.size)} ({self.size_note}), {self.passes:.3g} passes" if self.size else f"({self.size_note})"
        plan = "; repeating it is the plan" if self.repeat_planned and (self.passes or 0) > 1 else ""
        return f"{self.name}: {_tokens(self.tokens)} tokens over the run {size}{plan}"


def _tokens(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def plan_draws(
    *, max_steps: int, accumulate: int, world_size: int, batch_size: int, seq_len: int, ratio: Fraction,
    aviation_tokens: int | None, general: tuple[str, str | None] | None, general_tokens: float | None = None,
) -> list[PoolDraw]:
    """Tokens each pool gives over ``max_steps`` (a window adds ``seq_len`` tokens of its pool's stream).

    ``general`` is the pool's (path, name); its size is ``general_tokens`` if given, else the published one.
    """
    sequences = max_steps * accumulate * batch_size  # per rank
    aviation = aviation_count(sequences, ratio) * world_size * seq_len
    draws = [PoolDraw("aviation", aviation, aviation_tokens, "meta.json" if aviation_tokens else "size unknown: no meta.json yet", True)]
    if general is not None and ratio < 1:
        size, note = general_tokens, "estimated from its first documents"
        if size is None:
            size, note = PUBLISHED_TOKENS.get(tuple(general)), "published size"
        label = f"{general[0]}" + (f" ({general[1]})" if general[1] else "")
        draws.append(PoolDraw(f"general {label}", sequences * world_size * seq_len - aviation, size,
                              note if size else "size unknown", False))
    return draws


def validation_coverage(windows: int, *, limit_val_batches: int | float | None, batch_size: int, world_size: int) -> tuple[int, int]:
    """(windows scored at each validation, windows in the split): whole batches of ``batch_size`` per rank
    over a split cut evenly between ranks, as Lightning's distributed sampler and ``drop_last`` do."""
    batches = -(-windows // world_size) // batch_size
    if isinstance(limit_val_batches, int):
        batches = min(batches, limit_val_batches)
    elif limit_val_batches is not None:
        batches = int(batches * limit_val_batches)
    return min(windows, batches * batch_size * world_size), windows
