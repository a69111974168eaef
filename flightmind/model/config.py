"""The model's shape as a function of depth, and the counts derived from it (parameters, FLOPs).

One knob, ``depth``, sets everything: ``dim = 64·depth``, ``n_layer = depth``, head size 128.
d8 ≈ 50.3M parameters, d20 ≈ 566M, d24 ≈ 956M, d32 ≈ 2.21B (the spec's table).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from flightmind.errors import FlightMindError


@dataclass(frozen=True)
class GPTConfig:
    depth: int = 8
    vocab_size: int = 32768
    max_seq_len: int = 2048
    head_dim: int = 128
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise FlightMindError(f"model depth must be at least 1, got {self.depth}")
        if self.vocab_size > 65536:
            raise FlightMindError(
                f"vocab_size {self.vocab_size} does not fit the uint16 token shards (at most 65,536)"
            )

    @classmethod
    def from_depth(cls, depth: int, **overrides) -> GPTConfig:
        return cls(depth=depth, **overrides)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def dim(self) -> int:
        return 64 * self.depth

    @property
    def n_layer(self) -> int:
        return self.depth

    @property
    def head_size(self) -> int:
        """128, or the whole width for debug models narrower than one head (d1)."""
        return min(self.head_dim, self.dim)

    @property
    def n_head(self) -> int:
        return self.dim // self.head_size

    @property
    def attn_dim(self) -> int:
        """Width of q, k and v: ``dim`` whenever depth is even (every size the spec names)."""
        return self.n_head * self.head_size

    @property
    def hidden_dim(self) -> int:
        return self.mlp_ratio * self.dim

    def matmul_params(self) -> int:
        """Weights multiplied per token: every block's projections plus the (tied) output head."""
        attention = 4 * self.dim * self.attn_dim
        mlp = 3 * self.dim * self.hidden_dim
        return self.n_layer * (attention + mlp) + self.vocab_size * self.dim

    def num_params(self) -> int:
        """All parameters, counted once (the embedding is tied to the head)."""
        norms = (2 * self.n_layer + 1) * self.dim
        return self.matmul_params() + norms

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward) as DESIGN.md defines them for MFU."""
        return 6 * self.matmul_params() + 12 * self.n_layer * self.dim * seq_len
