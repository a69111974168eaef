"""Low-rank adapters (Hu et al., 2021): ``y = x·Wᵀ + (α/r)·x·Aᵀ·Bᵀ`` with W frozen, A and B trained.

``LoRALinear`` is an ``nn.Linear`` (it keeps the base layer's ``weight``, so a pretraining state dict
loads into an adapted model unchanged) plus ``lora_A`` (r × in, Kaiming-uniform) and ``lora_B``
(out × r, zeros): at the start the adapted model computes exactly what the base computes. Three verbs,
as in litgpt: ``apply_lora`` wraps the chosen projections of every block,
``mark_only_lora_as_trainable`` freezes everything else, and ``merge_lora_weights`` folds
``W ← W + (α/r)·B·A`` into plain ``nn.Linear`` layers, leaving a model with the plain GPT's keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from flightmind.errors import FlightMindError
from flightmind.model.gpt import GPT

ATTENTION_TARGETS = ("q", "k", "v", "o")
MLP_TARGETS = ("gate", "up", "down")
DEFAULT_TARGETS = ATTENTION_TARGETS + MLP_TARGETS


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        if r < 1:
            raise FlightMindError(f"LoRA rank r must be at least 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise FlightMindError(f"LoRA dropout must be in [0, 1), got {dropout}")
        # The base layer's parameters are reused, so nothing is allocated for them here.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(base.out_features, r, **factory))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        down = F.linear(self.lora_dropout(x), self.lora_A)  # (…, r)
        # base + (α/r)·down·Bᵀ as one addmm: no separate scaling and addition passes over the output.
        return torch.addmm(base.flatten(0, -2), down.flatten(0, -2), self.lora_B.t(), alpha=self.scaling).view(base.shape)

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B·A, computed in float32."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this layer computes (dropout aside)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        weight = (self.weight.detach().float() + self.delta_weight().detach()).to(self.weight.dtype)
        linear.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        linear.bias = self.bias
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}"


def _target_parent(block: nn.Module, target: str) -> nn.Module:
    return block.attn if target in ATTENTION_TARGETS else block.mlp


def check_targets(targets: Sequence[str]) -> tuple[str, ...]:
    targets = tuple(targets)
    unknown = [t for t in targets if t not in DEFAULT_TARGETS]
    if unknown or not targets:
        raise FlightMindError(
            f"unknown LoRA target(s) {unknown or '(none given)'}: choose among {', '.join(DEFAULT_TARGETS)} "
            "(attention q, k, v, o; MLP gate, up, down)"
        )
    if len(set(targets)) != len(targets):
        raise FlightMindError(f"LoRA targets {list(targets)} name a projection twice")
    return targets


def apply_lora(
    model: GPT, *, r: int, alpha: float, dropout: float = 0.0, targets: Sequence[str] = DEFAULT_TARGETS
) -> GPT:
    """Replace the ``targets`` projections of every block by LoRALinear, in place."""
    targets = check_targets(targets)
    for block in model.blocks:
        for target in targets:
            parent = _target_parent(block, target)
            layer = getattr(parent, target)
            if isinstance(layer, LoRALinear):
                raise FlightMindError(f"{target} already carries a LoRA adapter")
            setattr(parent, target, LoRALinear(layer, r=r, alpha=alpha, dropout=dropout))
    return model


def lora_layers(model: nn.Module) -> list[tuple[nn.Module, str, LoRALinear]]:
    """(parent module, attribute name, layer) of every LoRALinear in the model."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, LoRALinear)
    ]


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad = False
    for _, _, layer in lora_layers(model):
        layer.lora_A.requires_grad = True
        layer.lora_B.requires_grad = True


def merge_lora_weights(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and remove it, in place; returns the model."""
    for parent, name, layer in lora_layers(model):
        setattr(parent, name, layer.merged())
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; works on the meta device."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
