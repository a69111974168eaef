"""How the GPT is laid out for training: activation checkpointing, per-block compile and FSDP2.

``parallelize`` does, in torchtitan's order, what ``CausalLM.configure_model`` asks for:

1. activation checkpointing per block: none, every k-th block in full, or selective (torchtitan's
   op-level policy: keep the outputs of attention and of every second matmul, recompute the rest);
2. ``torch.compile`` of each block in place (one graph per block: DDP's bucket splitter finds nothing
   to cut when a block's gradients fit a bucket, and FSDP2 all-gathers between compiled blocks);
3. under Lightning's ``ModelParallelStrategy``: FSDP2 ``fully_shard`` of every block, then of the
   root, with bf16 parameters and fp32 gradient reduction under bf16 precision. Buffers are not
   cast by FSDP2, so the rotary tables stay fp32.

Checkpoint keys never change (the wrappers and in-place compile add no prefixes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from flightmind.errors import FlightMindError
from flightmind.model import GPT

AC_MODES = ("none", "full", "selective")


@dataclass(frozen=True)
class ActivationCheckpointing:
    """
    Args:
        mode: none (keep every activation), full (recompute whole blocks in backward: least memory,
            about a third more compute) or selective (recompute the cheap operations only; keep
            attention and every second matmul, as torchtitan's op-level policy).
        every: with full, checkpoint every k-th block only (1: all of them).
    """

    mode: str = "none"
    every: int = 1

    def __post_init__(self) -> None:
        if self.mode not in AC_MODES:
            raise FlightMindError(f"model.activation_checkpointing.mode must be one of {', '.join(AC_MODES)}, got {self.mode!r}")
        if not isinstance(self.every, int) or self.every < 1:
            raise FlightMindError(f"model.activation_checkpointing.every must be a positive whole number, got {self.every!r}")

    @classmethod
    def of(cls, value: ActivationCheckpointing | bool | dict | None) -> ActivationCheckpointing:
        """The setting from what a config may say: true (full, every block), false, or the fields."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls("full" if value else "none")

    def blocks(self, n_layer: int) -> list[int]:
        """The indices of the blocks checkpointed."""
        if self.mode == "none":
            return []
        step = self.every if self.mode == "full" else 1
        return [i for i in range(n_layer) if (i + 1) % step == 0]


# Ops whose outputs selective checkpointing keeps (torchtitan's _save_list, plus the CPU kernel).
_aten = torch.ops.aten
_SAVE = {
    _aten.mm.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten.max.default,
}
if hasattr(torch.ops, "_c10d_functional"):
    _SAVE.add(torch.ops._c10d_functional.reduce_scatter_tensor.default)


def _selective_context():
    """A fresh policy per checkpointed call: keep SDPA outputs and every other matmul's output."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    counts: dict[str, int] = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        mode = "recompute" if ctx.is_recompute else "forward"
        if func == _aten.mm.default:
            counts[f"{mode}_mm"] += 1
            # Every second matmul is recomputed: half the matmul memory for a sixth more matmul compute.
            return CheckpointPolicy.PREFER_RECOMPUTE if counts[f"{mode}_mm"] % 2 == 0 else CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.MUST_SAVE if func in _SAVE else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def apply_checkpointing(model: GPT, setting: ActivationCheckpointing) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i in setting.blocks(len(model.blocks)):
        if setting.mode == "selective":
            wrapped = checkpoint_wrapper(model.blocks[i], context_fn=_selective_context, preserve_rng_state=False)
        else:
            wrapped = checkpoint_wrapper(model.blocks[i], preserve_rng_state=False)
        model.blocks[i] = wrapped


def compile_blocks(model: GPT) -> None:
    """Compile every block in place (one graph each; the embedding, final norm and head stay eager)."""
    for block in model.blocks:
        block.compile()


def mixed_precision(precision: str | None):
    """FSDP2's policy for Lightning's precision flag: bf16 parameters with fp32 reduction under bf16."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision is not None and "bf16" in str(precision):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if precision is not None and "16" in str(precision):
        return MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def data_parallel_mesh(mesh):
    """The mesh FSDP2 shards over: Lightning's ``data_parallel`` dimension (tensor parallelism is not
    implemented, so the ``tensor_parallel`` dimension must be 1)."""
    if "tensor_parallel" in (mesh.mesh_dim_names or ()):
        if mesh["tensor_parallel"].size() != 1:
            raise FlightMindError(
                "trainer.strategy: FlightMind shards with FSDP2 only; set ModelParallelStrategy's "
                f"tensor_parallel_size: 1 and data_parallel_size to the number of GPUs (got {mesh.size()} devices "
                f"split {tuple(mesh.shape)})"
            )
        return mesh["data_parallel"]
    return mesh


def shard(model: GPT, mesh, precision: str | None) -> None:
    """FSDP2: every block one unit, then the root (embedding, final norm, head)."""
    from torch.distributed.fsdp import fully_shard

    dp_mesh = data_parallel_mesh(mesh)
    shard_ = partial(fully_shard, mesh=dp_mesh, mp_policy=mixed_precision(precision))
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        # The last block's backward starts right after its forward: keeping it gathered saves an all-gather.
        shard_(block, reshard_after_forward=i < last)
    shard_(model)


def parallelize(model: GPT, mesh=None, *, checkpointing: ActivationCheckpointing = ActivationCheckpointing(),
                compile: bool = False, precision: str | None = None) -> GPT:
    """Checkpointing, per-block compile and (given a device mesh) FSDP2, in that order; in place."""
    apply_checkpointing(model, checkpointing)
    if compile:
        compile_blocks(model)
    if mesh is not None:
        shard(model, mesh, precision)
    return model


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """FSDP2: reduce-scatter gradients only on the micro-batch that ends an optimizer step (the others
    accumulate unsharded gradients, in fp32 under bf16 parameters). No-op for other models."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)

