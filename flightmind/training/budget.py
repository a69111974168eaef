"""The compute budget of a pretraining run, known before launching it: parameters, tokens, FLOPs,
hours and cost (the spec's "Compute Budget" table).

    flightmind budget --depth 24 --steps 95000 --tokens-per-step 524288 --gpus 4 --gpu h100 --mfu 0.25 --price-per-hour 6.40

FLOPs are counted two ways: the spec's ``6·P·D`` (P = all parameters, D = tokens), and the count
that MFU logging uses, ``GPTConfig.flops_per_token`` (every multiplied matrix plus attention's
``12·n_layer·dim·T``). ``GPUS`` is the one table of GPU peaks: the budget, the throughput monitor's
MFU and ``benchmarks/gpu_check.py`` all read it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import torch

from flightmind.errors import FlightMindError
from flightmind.model.config import GPTConfig

CHINCHILLA_TOKENS_PER_PARAMETER = 20


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_flops: float  # dense bf16 tensor-core peak with fp32 accumulation (FLOP/s), from the datasheet
    device_pattern: str  # matched against torch.cuda.get_device_name() in lower case
    memory_gib: float  # total memory as torch.cuda.get_device_properties reports it (the planner's card)


GPUS: dict[str, GPU] = {
    "h100": GPU("H100 SXM", 989e12, r"h100(?!.*(pcie|nvl))", 79.2),  # device name "NVIDIA H100 80GB HBM3"
    "h100-pcie": GPU("H100 PCIe", 756e12, r"h100.*pcie", 79.2),
    "h200": GPU("H200", 989e12, r"h200(?!.*nvl)", 139.8),  # 141 GB
    "a100-40gb": GPU("A100 40GB", 312e12, r"a100.*40gb", 39.4),
    "a100": GPU("A100 80GB", 312e12, r"a100", 79.2),
    # GeForce Ada runs fp32-accumulating tensor math at half its fp16-accumulate rate (60.5).
    "rtx4060": GPU("RTX 4060", 30.2e12, r"rtx 4060(?!.*(ti|laptop))", 8.0),
}


def gpu_for_device_name(name: str) -> GPU | None:
    lowered = name.lower()
    return next((gpu for gpu in GPUS.values() if re.search(gpu.device_pattern, lowered)), None)


def peak_flops(device: torch.device, precision: str | None) -> float | None:
    """Peak FLOP/s of one device for MFU: the table's bf16 peak for 16-bit training on a known GPU."""
    if device.type != "cuda" or "16" not in str(precision):
        return None
    gpu = gpu_for_device_name(torch.cuda.get_device_name(device))
    return None if gpu is None else gpu.bf16_flops


@dataclass(frozen=True)
class Budget:
    config: GPTConfig
    steps: int
    tokens_per_step: int
    gpus: int
    gpu: GPU
    seq_len: int = 2048

    @property
    def params(self) -> int:
        return self.config.num_params()

    @property
    def tokens(self) -> int:
        return self.steps * self.tokens_per_step

    @property
    def flops_6pd(self) -> float:
        return 6 * self.params * self.tokens

    @property
    def flops_with_attention(self) -> float:
        return self.config.flops_per_token(self.seq_len) * self.tokens

    def hours(self, flops: float, mfu: float = 1.0) -> float:
        """Wall-clock hours for ``flops`` on all GPUs at ``mfu`` of their peak."""
        return flops / (self.gpus * self.gpu.bf16_flops * mfu) / 3600


def report(budget: Budget, mfu: float | None = None, price_per_hour: float | None = None) -> str:
    c = budget
    ratio = c.tokens / c.params
    lines = [
        f"FlightMind d{c.config.depth} on {c.gpus} × {c.gpu.name} (bf16 dense peak {c.gpu.bf16_flops / 1e12:g} TFLOP/s each)",
        f"  parameters        {c.params / 1e6:,.1f}M",
        f"  tokens            {c.tokens / 1e9:,.2f}B = {c.steps:,} steps × {c.tokens_per_step:,} tokens per step",
        f"  tokens/parameter  {ratio:.1f} (Chinchilla-optimal ≈ {CHINCHILLA_TOKENS_PER_PARAMETER}: "
        f"{ratio / CHINCHILLA_TOKENS_PER_PARAMETER:.1f}×)",
        "",
    ]
    header = f"  {'FLOPs':<26}{'total':>10}{'hours at peak':>16}"
    if mfu is not None:
        header += f"{f'hours at {mfu:.0%} MFU':>20}"
    if price_per_hour is not None:
        header += f"{f'cost at ${price_per_hour:,.2f}/h':>20}"
    lines.append(header)
    rows = [("6·P·D", c.flops_6pd), (f"with attention (T={c.seq_len})", c.flops_with_attention)]
    for label, flops in rows:
        line = f"  {label:<26}{flops:>10.2e}{c.hours(flops):>16.1f}"
        expected_hours = c.hours(flops, mfu or 1.0)
        if mfu is not None:
            line += f"{expected_hours:>20.1f}"
        if price_per_hour is not None:
            line += f"{f'${expected_hours * price_per_hour:,.0f}':>20}"
        lines.append(line)
    return "\n".join(lines)


def from_config(path: str, gpu: GPU) -> Budget:
    """The budget of the run a ``flightmind fit`` config describes: its shape, steps, tokens per step and GPUs."""
    from flightmind.training.lightning_cli import instantiate_config

    model, data, trainer = instantiate_config("-c", path)
    gpus = int(trainer.devices) * int(trainer.num_nodes)
    tokens = data.batch_size * trainer.accumulate_grad_batches * gpus * data.seq_len
    return Budget(model.config, trainer.max_steps, tokens, gpus, gpu, seq_len=data.seq_len)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="a `flightmind fit` config: the model's whole shape, steps, tokens per "
                        "step and GPUs come from it (the options below are then ignored)")
    parser.add_argument("--depth", type=int, help="model depth (d8, d24, d32 …), without --config")
    parser.add_argument("--steps", type=int, help="optimizer steps, without --config")
    parser.add_argument("--tokens-per-step", type=int,
                        help="tokens per optimizer step: micro-batch × accumulation × GPUs × sequence length")
    parser.add_argument("--gpus", type=int, default=1, help="number of GPUs (default 1)")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="GPU model (default h100 = H100 SXM)")
    parser.add_argument("--mfu", type=float, help="expected model FLOPs utilization, e.g. 0.25")
    parser.add_argument("--price-per-hour", type=float, help="price of all the GPUs together per hour, e.g. 6.40")
    parser.add_argument("--seq-len", type=int, default=2048, help="sequence length for attention FLOPs (default 2048)")
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocabulary size (default 32768)")


def run(args: argparse.Namespace) -> int:
    if args.config is not None:
        print(report(from_config(args.config, GPUS[args.gpu]), mfu=args.mfu, price_per_hour=args.price_per_hour))
        return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("depth", "steps", "tokens_per_step") if getattr(args, n) is None]
    if missing:
        raise FlightMindError(f"give -c CONFIG, or {', '.join(missing)}")
    for name in ("steps", "tokens_per_step", "gpus", "seq_len"):
        if getattr(args, name) < 1:
            raise FlightMindError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.mfu is not None and not 0 < args.mfu <= 1:
        raise FlightMindError(f"--mfu is a fraction of the peak in (0, 1], got {args.mfu}")
    if args.price_per_hour is not None and args.price_per_hour < 0:
        raise FlightMindError(f"--price-per-hour cannot be negative, got {args.price_per_hour}")
    budget = Budget(
        config=GPTConfig.from_depth(args.depth, vocab_size=args.vocab_size),
        steps=args.steps,
        tokens_per_step=args.tokens_per_step,
        gpus=args.gpus,
        gpu=GPUS[args.gpu],
        seq_len=args.seq_len,
    )
    print(report(budget, mfu=args.mfu, price_per_hour=args.price_per_hour))
    return 0
