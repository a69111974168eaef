"""The model's shape: one dataclass, set from YAML (``model.init_args.model``), saved in checkpoints.

``depth`` alone gives the spec's table (width 64·depth, depth layers, heads of 128, SwiGLU of 4×
width, tied head): d8 ≈ 50.3M parameters, d20 ≈ 566M, d24 ≈ 956M, d32 ≈ 2.21B. Every field it
derives can be set instead. After construction every field holds its resolved value, except
``vocab_size``, which may stay ``None`` until the training module sets it from the tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from flightmind.contracts import MAX_VOCAB_SIZE
from flightmind.errors import FlightMindError
from flightmind.model.attention import ATTENTION_CHOICES

DEFAULT_VOCAB_SIZE = 32768  # the spec's tokenizer: what counts use while the vocabulary is unset
VOCAB_MULTIPLE = 128  # an unset vocabulary is the tokenizer's size rounded up to this (tensor-core tiles)


@dataclass(frozen=True)
class GPTConfig:
    """
    Args:
        depth: the one size knob; the fields below left unset follow from it.
        vocab_size: embedding rows; unset: the tokenizer's size rounded up to a multiple of 128
            (or, when resuming, the checkpoint's).
        max_seq_len: longest sequence the rotary tables cover.
        dim: width of the residual stream (64·depth).
        n_layer: transformer blocks (depth).
        head_size: channels per attention head (128, or the whole width when it is narrower).
        n_head: query heads (dim / head_size).
        n_kv_head: key/value heads; fewer than ``n_head`` is grouped-query attention (a divisor of it).
        hidden_dim: SwiGLU hidden width (mlp_ratio·dim).
        mlp_ratio: hidden_dim / dim when hidden_dim is unset.
        rope_base: base of the rotary frequencies.
        norm_eps: RMSNorm epsilon.
        tie_embeddings: the output head shares the token embedding's weights.
        dropout: dropout on attention probabilities and on each block's residual branches (training only).
        attention: the SDPA kernel: auto (PyTorch's choice; cuDNN first on Hopper with cuDNN > 9.15),
            cudnn, flash, efficient or math (that kernel only). A run-time choice, not part of the shape:
            a checkpoint resumes under any (see flightmind.model.attention).
    """

    depth: int = 8
    vocab_size: int | None = None
    max_seq_len: int = 2048
    dim: int | None = None
    n_layer: int | None = None
    head_size: int | None = None
    n_head: int | None = None
    n_kv_head: int | None = None
    hidden_dim: int | None = None
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    attention: str = "auto"

    RUNTIME_FIELDS = ("attention",)  # settings a resumed run may change; every other field is the shape

    def __post_init__(self) -> None:
        def positive(name: str, value) -> None:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise FlightMindError(f"model.{name} must be a positive whole number, got {value!r}")

        for name in ("depth", "vocab_size", "max_seq_len", "dim", "n_layer", "head_size", "n_head", "n_kv_head", "hidden_dim", "mlp_ratio"):
            positive(name, getattr(self, name))
        def derive(name: str, value: int) -> None:  # an unset field takes the value depth implies
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: the dataclass's own way to fill a field

        derive("dim", 64 * self.depth)
        derive("n_layer", self.depth)
        derive("head_size", min(128, self.dim))
        derive("n_head", max(1, self.dim // self.head_size))
        derive("n_kv_head", self.n_head)
        derive("hidden_dim", self.mlp_ratio * self.dim)
        if self.n_head % self.n_kv_head:
            raise FlightMindError(
                f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head} (each key/value head serves "
                "a group of query heads)"
            )
        if self.head_size % 2:
            raise FlightMindError(f"model.head_size={self.head_size} must be even (rotary embeddings rotate pairs)")
        if self.vocab_size is not None and self.vocab_size > MAX_VOCAB_SIZE:
            raise FlightMindError(
                f"model.vocab_size {self.vocab_size} does not fit the uint16 token shards (at most {MAX_VOCAB_SIZE:,})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise FlightMindError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTION_CHOICES:
            raise FlightMindError(f"model.attention must be one of {', '.join(ATTENTION_CHOICES)}, got {self.attention!r}")
        if self.rope_base <= 0 or self.norm_eps <= 0:
            raise FlightMindError("model.rope_base and model.norm_eps must be positive")

    @classmethod
    def from_depth(cls, depth: int, **overrides) -> GPTConfig:
        return cls(depth=depth, **overrides)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """A saved shape; fields it lacks (checkpoints of earlier versions) take the values they had then."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def with_vocab(self, tokenizer_size: int) -> GPTConfig:
        """This shape with an unset vocabulary resolved: the tokenizer's size rounded up to a multiple of 128."""
        if self.vocab_size is not None:
            return self
        rounded = -(-tokenizer_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
        return replace(self, vocab_size=min(rounded, MAX_VOCAB_SIZE))

    @property
    def vocab(self) -> int:
        """Embedding rows for counting: ``vocab_size``, or the spec's 32,768 while it is unset."""
        return self.vocab_size or DEFAULT_VOCAB_SIZE

    @property
    def attn_dim(self) -> int:
        """Width of the queries (and of the attention output)."""
        return self.n_head * self.head_size

    @property
    def kv_dim(self) -> int:
        """Width of the keys and of the values: smaller than ``attn_dim`` under grouped-query attention."""
        return self.n_kv_head * self.head_size

    def matmul_params(self) -> int:
        """Weights multiplied per token: every block's projections plus the output head."""
        attention = 2 * self.dim * self.attn_dim + 2 * self.dim * self.kv_dim
        mlp = 3 * self.dim * self.hidden_dim
        return self.n_layer * (attention + mlp) + self.vocab * self.dim

    def num_params(self) -> int:
        """All parameters, each counted once (a tied embedding is the head's weight)."""
        norms = (2 * self.n_layer + 1) * self.dim
        embedding = 0 if self.tie_embeddings else self.vocab * self.dim
        return self.matmul_params() + embedding + norms

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward) as DESIGN.md defines them for MFU: 6 per weight
        multiplied, plus the attention scores and weighted sum over ``seq_len`` positions."""
        return 6 * self.matmul_params() + 12 * self.n_layer * self.attn_dim * seq_len

    def kv_cache_bytes(self, batch: int, length: int, bytes_per_value: int = 2) -> int:
        """Memory of a KV cache holding ``length`` positions for ``batch`` sequences."""
        return 2 * self.n_layer * batch * length * self.kv_dim * bytes_per_value
