"""The FlightMind GPT: a LLaMA-style decoder, readable top to bottom.

Pre-norm RMSNorm, rotary position embeddings, causal attention through SDPA (grouped-query when
``n_kv_head < n_head``), a SwiGLU MLP, no biases, an output head tied to the token embedding unless
configured otherwise, and optional dropout; the shape is ``GPTConfig``'s. For decoding, a ``KVCache``
keeps each layer's keys and values so that a new token costs one position, not the prefix.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from flightmind.model.attention import attention_context
from flightmind.model.config import GPTConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def rope_tables(head_size: int, max_seq_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_size // 2) for rotating pairs of channels."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by position; cos/sin are (T, D/2). The two halves form the pairs."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.type_as(x)


class KVCache:
    """Keys and values of the positions decoded so far, for every layer: one (B, H_kv, capacity, D) pair each.

    ``length`` positions are filled; the next forward pass writes its tokens after them and rotates them
    at positions ``length, length + 1, …``. Storage is allocated on first use, in the dtype and on the
    device of the keys, so the cache follows autocast and the model's device.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def reset(self) -> None:
        self.length = 0

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this forward pass's keys/values of one layer; return all of that layer's so far."""
        if layer == len(self.keys):
            B, H, _, D = k.shape
            self.keys.append(k.new_empty(B, H, self.capacity, D))
            self.values.append(v.new_empty(B, H, self.capacity, D))
        end = self.length + k.size(2)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.head_size = config.head_size
        self.dropout = config.dropout
        self.q = nn.Linear(config.dim, config.attn_dim, bias=False)
        self.k = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.v = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.o = nn.Linear(config.attn_dim, config.dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k, v = (proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2) for proj in (self.k, self.v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Grouped-query: each key/value head serves n_head / n_kv_head query heads, inside the kernel.
        sdpa = dict(enable_gqa=True) if self.n_kv_head != self.n_head else {}
        if self.training and self.dropout:
            sdpa["dropout_p"] = self.dropout
        if cache is None or cache.length == 0:
            # No explicit mask: is_causal keeps SDPA on its flash / memory-efficient kernels.
            if cache is not None:
                cache.store(layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, **sdpa)
        else:
            # Queries are the last T of the keys. SDPA's is_causal aligns its mask top-left, which
            # would hide the cached prefix: one query may see every key; a chunk needs the mask
            # shifted by the cached length.
            start = cache.length
            k, v = cache.store(layer, k, v)
            mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **sdpa)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.up = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.down = nn.Linear(config.hidden_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config)
        self.dropout = nn.Dropout(config.dropout)  # on each residual branch; identity in eval mode

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache, layer))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.vocab_size is None:  # a bare GPT outside training: the spec's vocabulary
            config = replace(config, vocab_size=config.vocab)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        # Untied: a head of its own (checkpoint key head.weight); tied: the embedding serves as the head.
        self.head = None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size, bias=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # Rotary tables are derived, not learned: keep them out of checkpoints.
        cos, sin = rope_tables(config.head_size, config.max_seq_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init, scaled so that the first loss is ≈ ln(vocab) at every depth.

        The final RMSNorm gives rms(h) = 1, so a logit's std is std(head)·sqrt(dim); 0.3/sqrt(dim) keeps it
        at 0.3, costing ≈ 0.05 nats over uniform. An untied head starts as the embedding does.
        Projections that write into the residual stream shrink with depth (1/sqrt(2·n_layer)).
        """
        config = self.config
        nn.init.normal_(self.embed.weight, std=0.3 / math.sqrt(config.dim))
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=0.3 / math.sqrt(config.dim))
        for block in self.blocks:
            for linear in (block.attn.q, block.attn.k, block.attn.v, block.mlp.gate, block.mlp.up):
                nn.init.normal_(linear.weight, std=0.02)
            for linear in (block.attn.o, block.mlp.down):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * config.n_layer))
            nn.init.ones_(block.attn_norm.weight)
            nn.init.ones_(block.mlp_norm.weight)
        nn.init.ones_(self.norm.weight)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Token ids (B, T) → logits (B, T, vocab).

        With a ``cache``, ``idx`` continues the ``cache.length`` positions already in it, and the cache
        grows by T.
        """
        start = 0 if cache is None else cache.length
        end = start + idx.size(1)
        if end > self.config.max_seq_len:
            raise ValueError(f"sequence of {end} tokens exceeds max_seq_len={self.config.max_seq_len}")
        if cache is not None and end > cache.capacity:
            raise ValueError(f"sequence of {end} tokens exceeds the KV cache's capacity of {cache.capacity}")
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        x = self.embed(idx)
        with attention_context(self.config.attention, idx.device):  # the chosen SDPA kernel (GPTConfig.attention)
            for layer, block in enumerate(self.blocks):
                x = block(x, cos, sin, cache, layer)
        if cache is not None:
            cache.length = end
        return F.linear(self.norm(x), self.embed.weight if self.head is None else self.head.weight)
