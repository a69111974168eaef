"""Which SDPA kernel runs the attention: the ``attention`` setting of GPTConfig, and a probe that says
which one actually ran.

``auto`` leaves PyTorch's choice except on Hopper with cuDNN newer than 9.15, where the cuDNN kernel
goes first (PyTorch prefers it only then; FlashAttention-2 reaches about half its H100 throughput at
head size 128, pytorch issue 142132). A named kernel is that kernel only: if it cannot run (the CPU
has neither cuDNN nor the memory-efficient kernel), the probe at the start of training says so.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

ATTENTION_CHOICES = ("auto", "cudnn", "flash", "efficient", "math")
CUDNN_PREFERRED_ABOVE = 91500  # torch.backends.cudnn.version() of cuDNN 9.15.0
_NAMED = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
# the aten op each kernel dispatches to → the name the setting uses
_KERNEL_OPS = {
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
}


def hopper_with_new_cudnn(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.backends.cudnn.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] == 9 and (torch.backends.cudnn.version() or 0) > CUDNN_PREFERRED_ABOVE


def backends(setting: str, device: torch.device) -> list[SDPBackend] | None:
    """The kernels SDPA may use, in priority order, for ``setting`` on ``device``; None: PyTorch's default."""
    if setting == "auto":
        if hopper_with_new_cudnn(device):
            return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        return None
    return [_NAMED[setting]]


def attention_context(setting: str, device: torch.device):
    """The context the GPT runs its blocks in (outside the compiled regions, so tracing sees it too)."""
    chosen = backends(setting, device)
    return contextlib.nullcontext() if chosen is None else sdpa_kernel(chosen, set_priority=True)


class _AtenOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def kernel_used(setting: str, n_head: int, n_kv_head: int, head_size: int, device: torch.device, dtype: torch.dtype,
                seq_len: int = 256) -> str:
    """Run one causal SDPA call shaped as the model's and name the kernel that ran ("math" when it
    decomposed into matmuls). Raises RuntimeError when the setting allows no kernel for these inputs."""
    q = torch.randn(1, n_head, seq_len, head_size, device=device, dtype=dtype)
    kv = torch.randn(1, n_kv_head, seq_len, head_size, device=device, dtype=dtype)
    gqa = dict(enable_gqa=True) if n_kv_head != n_head else {}
    with torch.no_grad(), attention_context(setting, device), _AtenOps() as recorder:
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, **gqa)
    return next((_KERNEL_OPS[op] for op in recorder.ops if op in _KERNEL_OPS), "math")
