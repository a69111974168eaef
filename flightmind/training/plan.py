"""Memory planner: the peak memory one device needs for a config, known before a run starts.

    flightmind plan -c configs/rtx4060_d8.yaml [--gpu rtx4060] [--mfu 0.4] [-- --data.init_args.batch_size 4 …]

Per device: parameters, gradients and AdamW state (divided by the GPUs under FSDP2), and what one
micro-batch's forward and backward hold at their peak, *traced*: the real model (its checkpointing
setting applied) and loss run on fake tensors (``FakeTensorMode``: shapes and dtypes, no memory)
under CPU autocast, while a dispatch mode adds up every tensor storage the operations create and
subtracts it when the last tensor using it dies. Gradients exist before the trace, as on every
micro-batch after the first, so only transient gradient memory counts.

Compiled runs (``compile: true``, per block) are not traced: Inductor fuses the pointwise operations
and its partitioner recomputes them in backward instead of saving them. The planner scales the
traced block activations by ``COMPILED_ACTIVATIONS`` (measured on the CPU with Inductor against
eager, benchmarks/plan_check.py) and counts the compiled loss at 4 bytes per logit (the bf16 logits
and their bf16 gradient; eager: 12 more, benchmarks/results/loss_memory.txt).

Margin: 1 GiB for the CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers, plus 8 % of the peak
for the caching allocator's fragmentation. ``fit`` runs the same plan before any data is built and
refuses a config that does not fit, with the numbers and the fix.
"""

from __future__ import annotations

import argparse
import re
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from flightmind.errors import FlightMindError
from flightmind.model import GPT, GPTConfig
from flightmind.training.budget import GPU, GPUS
from flightmind.training.parallel import ActivationCheckpointing, apply_checkpointing

GiB = 2**30
RESERVE_BYTES = 1 * GiB  # CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers
FRAGMENTATION = 0.08  # the caching allocator holds more than is live
COMPILED_ACTIVATIONS = 0.78  # compiled / eager block activations, measured: benchmarks/results/plan_check.txt
COMPILED_LOSS_BYTES_PER_LOGIT = 4  # bf16 logits kept for backward + their bf16 gradient
DEFAULT_MFU = 0.40


@dataclass(frozen=True)
class Setup:
    """What the plan reads from a config (``from_config``) or is given directly (tests)."""

    config: GPTConfig
    micro_batch: int
    seq_len: int
    accumulation: int = 1
    devices: int = 1
    nodes: int = 1
    strategy: str = "single"  # single | ddp | fsdp
    precision: str = "bf16-mixed"
    compile: bool = False
    checkpointing: ActivationCheckpointing = field(default_factory=ActivationCheckpointing)
    bucket_view: bool = True  # DDP's gradient_as_bucket_view: buckets are the gradients
    lora: dict | None = None  # {"r", "alpha", "targets"}: only the adapters train
    accelerator: str = "gpu"

    @property
    def world(self) -> int:
        return self.devices * self.nodes

    @property
    def mixed(self) -> bool:
        return "mixed" in self.precision

    @property
    def param_bytes(self) -> int:
        return 4 if self.mixed or "32" in self.precision else 2


# ---------------------------------------------------------------------------------------------
# Tracing one micro-batch


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the live tensor storages that operations create (views share theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.weight_copies = 0
        self.refs: dict[int, int] = {}  # storage → live tensors using it

    def _drop(self, key: int, nbytes: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        existing = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, nbytes = storage._cdata, storage.nbytes()
            if key in existing and key not in self.refs:
                continue  # an in-place result or a view of memory from before the trace (parameter, gradient)
            if key not in self.refs:
                self.refs[key] = 0
                self.live += nbytes
                if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.nn.Parameter):
                    self.weight_copies += nbytes  # autocast's 16-bit copy of a weight
            self.refs[key] += 1
            weakref.finalize(tensor, self._drop, key, nbytes)
        self.peak = max(self.peak, self.live)
        return out


@dataclass(frozen=True)
class Trace:
    peak: int  # transient bytes at the peak of forward + backward
    after_forward: int  # live at the end of the model's forward (saved activations + logits)
    logits: int  # bytes of the logits
    weight_copies: int  # autocast's 16-bit weight copies among them

    @property
    def block_activations(self) -> int:
        return self.after_forward - self.logits - self.weight_copies

    @property
    def loss(self) -> int:
        """What the loss and the start of backward add on top of the forward's saved tensors."""
        return self.peak - self.after_forward + self.logits


def build_traced_model(setup: Setup) -> GPT:
    model = GPT(setup.config)
    if setup.lora:
        from flightmind.model.lora import apply_lora, mark_only_lora_as_trainable

        apply_lora(model, r=int(setup.lora["r"]), alpha=float(setup.lora["alpha"]), targets=setup.lora["targets"])
        mark_only_lora_as_trainable(model)
    apply_checkpointing(model, setup.checkpointing)
    if not setup.mixed and setup.param_bytes == 2:
        model = model.to(torch.bfloat16 if "bf16" in setup.precision else torch.float16)
    return model


def trace(setup: Setup, micro_batch: int | None = None, fake: bool = True) -> Trace:
    """Trace one micro-batch's forward and backward (steady state: gradients already allocated)."""
    import contextlib

    from torch._subclasses.fake_tensor import FakeTensorMode

    B, T = micro_batch or setup.micro_batch, setup.seq_len
    with FakeTensorMode() if fake else contextlib.nullcontext():
        model = build_traced_model(setup).train()
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        ids = torch.randint(0, setup.config.vocab_size, (B, T + 1))
        dtype = torch.bfloat16 if "bf16" in setup.precision else torch.float16
        counter = LiveBytes()
        with counter:
            with torch.autocast("cpu", dtype=dtype, enabled=setup.mixed):
                logits = model(ids[:, :-1])
            after_forward = counter.live
            logits_bytes = logits.numel() * logits.element_size()
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
            del logits
            loss.backward()
            del loss
        return Trace(counter.peak, after_forward, logits_bytes, counter.weight_copies)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Plan:
    setup: Setup
    gpu: GPU | None
    memory_bytes: float | None  # the card's (None: a CPU run)
    parts: dict[str, float]  # bytes per device, by what holds them
    per_sample: float  # transient bytes one more sequence adds
    mfu: float

    @property
    def peak(self) -> float:
        return sum(self.parts.values())

    @property
    def with_margin(self) -> float:
        return self.peak * (1 + FRAGMENTATION) + RESERVE_BYTES

    @property
    def fits(self) -> bool | None:
        return None if self.memory_bytes is None else self.with_margin <= self.memory_bytes

    @property
    def largest_micro_batch(self) -> int | None:
        """The largest micro-batch whose peak with margin fits the card (0: none does)."""
        if self.memory_bytes is None or self.per_sample != self.per_sample:  # no card, or not sized (nan)
            return None
        room = (self.memory_bytes - RESERVE_BYTES) / (1 + FRAGMENTATION) - self.peak
        return max(0, self.setup.micro_batch + int(room // self.per_sample))

    @property
    def tokens_per_second(self) -> float | None:
        if self.gpu is None:
            return None
        per_token = self.setup.config.flops_per_token(self.setup.seq_len)
        return self.mfu * self.gpu.bf16_flops / per_token * self.setup.world


def transient(s: Setup, t: Trace) -> dict[str, float]:
    """What one micro-batch's forward and backward add at their peak, from its eager trace."""
    parts = {}
    if s.strategy != "fsdp":  # under FSDP2 the parameters already are 16-bit: autocast copies nothing
        parts["autocast bf16 weight copies"] = t.weight_copies
    compiled_blocks = s.compile and s.checkpointing.mode != "full"  # full: only block inputs are kept anyway
    parts["activations"] = t.block_activations * (COMPILED_ACTIVATIONS if compiled_blocks else 1.0)
    # Compiled loss: the logits and their gradient only (4 bytes per bf16 logit); eager: as traced.
    parts["logits + loss"] = 2 * t.logits if s.compile else t.loss
    return parts


def plan(setup: Setup, gpu: GPU | None, memory_bytes: float | None = None, mfu: float = DEFAULT_MFU,
         largest: bool = True) -> Plan:
    """The plan; ``largest=False`` skips the second trace that sizes the largest micro-batch."""
    s, c = setup, setup.config
    if memory_bytes is None and gpu is not None and s.accelerator != "cpu":
        memory_bytes = gpu.memory_gib * GiB
    total = trainable = c.num_params()
    if s.lora:
        with torch.device("meta"):
            model = build_traced_model(replace(s, checkpointing=ActivationCheckpointing()))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total += trainable
    shards = s.world if s.strategy == "fsdp" else 1
    extra_buckets = 2 if s.strategy == "ddp" and not s.bucket_view else 1
    parts = {
        "parameters": s.param_bytes * total / shards,
        "gradients": s.param_bytes * trainable / shards * extra_buckets,
        "AdamW state": 8 * trainable / shards,
    }
    if s.strategy == "fsdp":
        # Gathered 16-bit parameters: the root's (embedding, final norm) and two blocks' (the one
        # computing and the one prefetched).
        block = (c.num_params() - c.vocab * c.dim * (1 if c.tie_embeddings else 2) - c.dim) / c.n_layer
        parts["gathered bf16 parameters"] = 2 * (2 * block + c.vocab * c.dim + c.dim)
        if s.accumulation > 1:
            parts["unsharded fp32 gradients (one sync per step)"] = 4 * trainable
    at_batch = transient(s, trace(s))
    parts.update(at_batch)
    per_sample = float("nan")
    if largest:
        other = 1 if s.micro_batch > 1 else 2
        at_other = transient(s, trace(s, other))
        per_sample = (sum(at_batch.values()) - sum(at_other.values())) / (s.micro_batch - other)
    return Plan(setup, gpu, memory_bytes, parts, per_sample, mfu)


# ---------------------------------------------------------------------------------------------
# From a config


def setup_from(model, data, trainer) -> Setup:
    """The plan's inputs from what the CLI built: the LightningModule, the datamodule and the
    Trainer (or the Trainer's arguments, as ``flightmind.training.lightning_cli.instantiate_config`` returns them)."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    get = trainer.get if hasattr(trainer, "get") else (lambda name: getattr(trainer, name, None))
    config = model.config if model.config.vocab_size is not None else replace(model.config, vocab_size=model.config.vocab)
    strategy, devices = get("strategy"), get("num_devices") or get("devices") or 1
    devices = devices if isinstance(devices, int) and devices > 0 else 1
    bucket_view = True
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)):
        kind = "fsdp"
    elif isinstance(strategy, DDPStrategy) or (isinstance(strategy, str) and strategy.startswith("ddp")) or devices > 1:
        kind = "ddp"
        bucket_view = bool(getattr(strategy, "_ddp_kwargs", {}).get("gradient_as_bucket_view", False))
    else:
        kind = "single"
    hp = model.hparams
    lora = {"r": hp.lora_r, "alpha": hp.lora_alpha, "targets": list(hp.lora_targets)} if "lora_r" in hp else None
    accelerator = get("accelerator")
    on_cpu = str(accelerator).lower() == "cpu" or type(accelerator).__name__ == "CPUAccelerator"
    return Setup(
        config=config,
        micro_batch=data.batch_size,
        seq_len=getattr(data, "seq_len", None) or getattr(data, "max_seq_len"),
        accumulation=get("accumulate_grad_batches") or 1,
        devices=devices,
        nodes=get("num_nodes") or 1,
        strategy=kind,
        precision=str(get("precision") or "32-true"),
        compile=model.compile_model,
        checkpointing=model.activation_checkpointing,
        bucket_view=bucket_view,
        lora=lora,
        accelerator="cpu" if on_cpu else "gpu",
    )


def gpu_named(name: str | None, config_path: str | None = None) -> GPU | None:
    """``--gpu NAME``, or the card a config's file name names (rtx4060_d8.yaml: the RTX 4060)."""
    if name is not None:
        key = name.lower().replace(" ", "")
        if key not in GPUS:
            raise FlightMindError(f"--gpu {name}: not a known card; choose one of {', '.join(GPUS)}")
        return GPUS[key]
    stem = Path(config_path or "").stem.lower()
    return next((GPUS[k] for k in sorted(GPUS, key=len, reverse=True) if re.search(rf"(^|_){re.escape(k)}", stem)), None)


def gib(value: float) -> str:
    return f"{value / GiB:,.2f} GiB"


def report(p: Plan) -> str:
    s, c = p.setup, p.setup.config
    checkpointing = s.checkpointing.mode + (f" every {s.checkpointing.every}" if s.checkpointing.mode == "full" and s.checkpointing.every > 1 else "")
    lines = [
        f"FlightMind d{c.depth} ({c.num_params() / 1e6:,.1f}M parameters), micro-batch {s.micro_batch} × sequence "
        f"{s.seq_len}, accumulation {s.accumulation}, {s.world} device(s), {s.strategy}, {s.precision}, "
        f"{'compiled per block' if s.compile else 'eager'}, activation checkpointing {checkpointing}",
        "peak memory per device:",
        *(f"  {name:<46}{gib(value):>14}" for name, value in p.parts.items()),
        f"  {'peak':<46}{gib(p.peak):>14}",
        f"  {'with margin (+8 % fragmentation, +1 GiB context)':<46}{gib(p.with_margin):>14}",
    ]
    if p.memory_bytes is None:
        lines.append("card: none (a CPU run): the peak is host memory")
        return "\n".join(lines)
    card = f"{p.gpu.name if p.gpu else 'this GPU'} ({gib(p.memory_bytes)})"
    lines.append(f"card: {card}: {'fits' if p.fits else 'DOES NOT FIT'}; largest micro-batch that fits: {p.largest_micro_batch}")
    if p.tokens_per_second:
        lines.append(f"throughput at {p.mfu:.0%} MFU: {p.tokens_per_second:,.0f} tokens/s on {s.world} GPU(s)")
    if not p.fits:
        lines.append(fix(p))
    return "\n".join(lines)


def fix(p: Plan) -> str:
    s, largest = p.setup, p.largest_micro_batch
    ways = []
    if largest:
        k = -(-s.micro_batch // largest)
        ways.append(f"micro-batch {s.micro_batch // k} with accumulation {s.accumulation * k} (the same tokens per step): "
                    f"--data.init_args.batch_size {s.micro_batch // k} --trainer.accumulate_grad_batches {s.accumulation * k}")
    if s.checkpointing.mode != "full":
        ways.append("activation checkpointing: --model.init_args.activation_checkpointing.mode full (or selective)")
    if not s.compile:
        ways.append("compile: --model.init_args.compile true (fused activations, 4 bytes per logit)")
    if s.strategy != "fsdp" and s.world > 1:
        ways.append("shard with FSDP2 (configs/h100x4_d32.yaml's strategy)")
    return "fix: " + "; or ".join(ways) if ways else "fix: a larger card or more GPUs with FSDP2"


def check_fits(model, data, trainer, memory_bytes: float, device_name: str) -> Plan:
    """``fit``'s check on a GPU, before any data is built: refuse a config that cannot fit, with the numbers."""
    from flightmind.training.budget import gpu_for_device_name

    p = plan(setup_from(model, data, trainer), gpu_for_device_name(device_name), memory_bytes)
    if p.fits is False:
        raise FlightMindError(
            f"this config does not fit {device_name} ({gib(memory_bytes)}): planned peak {gib(p.peak)} per device, "
            f"{gib(p.with_margin)} with margin ({', '.join(f'{k} {gib(v)}' for k, v in p.parts.items())}); "
            f"{fix(p)} (skip this check: --memory_check false)"
        )
    return p


TABLE_HEADER = [
    "| config | card | model, micro-batch × sequence, strategy | planned peak per device | with margin | verdict | largest micro-batch | tokens/s at 40 % MFU |",
    "|---|---|---|---:|---:|---|---:|---:|",
]


def table_row(config_path: str) -> str:
    """The README's line for a shipped config, planned on the card its file name names."""
    from flightmind.training.lightning_cli import instantiate_config

    setup = setup_from(*instantiate_config("-c", config_path))
    gpu = gpu_named(None, config_path)
    p = plan(setup, gpu)
    s = setup
    what = (f"d{s.config.depth}, {s.micro_batch} × {s.seq_len}, {s.strategy}"
            f"{' × ' + str(s.world) if s.world > 1 else ''}, {'compiled' if s.compile else 'eager'}"
            f"{', checkpointing ' + s.checkpointing.mode if s.checkpointing.mode != 'none' else ''}")
    if p.memory_bytes is None:
        return f"| `{Path(config_path).name}` | CPU | {what} | {gib(p.peak)} | {gib(p.with_margin)} | host memory | | |"
    verdict = "fits" if p.fits else "does not fit"
    return (f"| `{Path(config_path).name}` | {gpu.name} {gib(p.memory_bytes)} | {what} | {gib(p.peak)} | {gib(p.with_margin)} "
            f"| {verdict} | {p.largest_micro_batch} | {p.tokens_per_second:,.0f} |")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="a training config (configs/*.yaml)")
    parser.add_argument("--gpu", help=f"the card: {', '.join(GPUS)} (default: the one the config's file name names)")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"assumed MFU for tokens/s (default {DEFAULT_MFU})")
    parser.add_argument("--table", action="store_true", help="print the config's line of the README's table instead")
    parser.add_argument("overrides", nargs="*",
                        help="after --: config overrides as for fit, e.g. -- --data.init_args.batch_size 4")


def run(args: argparse.Namespace) -> int:
    from flightmind.training.lightning_cli import instantiate_config

    if args.table:
        print(table_row(args.config))
        return 0
    model, data, trainer = instantiate_config("-c", args.config, *args.overrides)
    setup = setup_from(model, data, trainer)
    gpu = gpu_named(args.gpu, args.config)
    if gpu is None and setup.accelerator != "cpu":
        raise FlightMindError(f"{args.config}: which card? name it with --gpu ({', '.join(GPUS)})")
    print(report(plan(setup, gpu, mfu=args.mfu)))
    return 0
