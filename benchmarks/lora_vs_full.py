"""LoRA against full fine-tuning of the same model: optimizer-state memory and step time.

The same d4 weights, the same padded chat-shaped batches and the same masked loss; AdamW from the
modules' own ``configure_optimizers`` (decay groups, warm-up → cosine). "Full" trains every
parameter (a PretrainModule holding the base weights); "LoRA" is a FinetuneModule (r = 16, α = 32 on
q, k, v, o, gate, up, down). fp32 on the CPU, gradient clipping at 1.0, the two stepping in turn.
Prints the optimizer-state and gradient bytes of each, their step times, and the ratios LoRA / full.

    python benchmarks/lora_vs_full.py [--depth 4] [--seq-len 256] [--batch-size 8] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

import lightning as L  # noqa: E402
import torch  # noqa: E402

from flightmind.training.optimizer import OptimizerSettings
from flightmind.contracts import IGNORE_INDEX  # noqa: E402
from flightmind.model import GPT, GPTConfig  # noqa: E402
from flightmind.training.finetune import FinetuneModule  # noqa: E402
from flightmind.training.pretrain import PretrainModule  # noqa: E402


def write_base(path: Path, config: GPTConfig) -> GPT:
    torch.manual_seed(0)
    base = GPT(config)
    state = {f"model.{k}": v for k, v in base.state_dict().items()}
    torch.save({"state_dict": state, "model_config": config.to_dict()}, path)
    return base


def batches(args, vocab_size: int) -> list[dict[str, torch.Tensor]]:
    """Prompt then answer: the loss covers the last third of each row, as in instruction data."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(args.steps):
        input_ids = torch.randint(0, vocab_size, (args.batch_size, args.seq_len), generator=g)
        targets = torch.randint(0, vocab_size, (args.batch_size, args.seq_len), generator=g)
        targets[:, : 2 * args.seq_len // 3] = IGNORE_INDEX
        out.append({"input_ids": input_ids, "targets": targets})
    return out


def optimizer_of(module: L.LightningModule, steps: int):
    class _Trainer:  # configure_optimizers reads only max_steps
        max_steps = steps

    module._trainer = _Trainer()
    configured = module.configure_optimizers()
    module._trainer = None
    return configured["optimizer"], configured["lr_scheduler"]["scheduler"]


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class Stepper:
    """One module with its optimizer and schedule, stepping one batch at a time."""

    def __init__(self, module: L.LightningModule, steps: int) -> None:
        module.train()
        self.module = module
        self.optimizer, self.scheduler = optimizer_of(module, steps)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # CPU seconds of this process: less disturbed by other programs
        self.grad_bytes = 0

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        loss = FinetuneModule.loss(self.module, batch)  # the masked loss, whichever module holds the GPT
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.grad_bytes = tensor_bytes(p.grad for p in self.params)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.times.append(time.perf_counter() - t0)
        self.cpu_times.append(time.process_time() - c0)

    @property
    def state_bytes(self) -> int:
        return tensor_bytes(t for per_param in self.optimizer.state.values() for t in per_param.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4, help="steps dropped from each median")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's). On a machine shared with other programs use 1: with "
                             "more, every op waits at a barrier for a thread the OS has descheduled, which charges "
                             "the many small adapter ops a time slice each")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = GPTConfig.from_depth(args.depth, max_seq_len=args.seq_len)
    data = batches(args, config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.ckpt"
        base = write_base(base_path, config)

        def full() -> PretrainModule:
            module = PretrainModule(shape=GPTConfig(depth=args.depth, max_seq_len=args.seq_len), optimizer=OptimizerSettings(warmup_steps=2))
            module.configure_model()
            module.model.load_state_dict(base.state_dict())
            return module

        def lora() -> FinetuneModule:
            torch.manual_seed(0)
            module = FinetuneModule(str(base_path), lora_r=16, lora_alpha=32, lora_dropout=0.0, optimizer=OptimizerSettings(warmup_steps=2))
            module.configure_model()
            return module

        full_run, lora_run = Stepper(full(), len(data)), Stepper(lora(), len(data))
        # Interleaved step by step, so that load from other programs hits both alike.
        for batch in data:
            full_run.step(batch)
            lora_run.step(batch)

    def median_ratio(full_times: list[float], lora_times: list[float]) -> float:
        return statistics.median(l / f for f, l in list(zip(full_times, lora_times))[args.warmup :])

    lines = report_header(
        "LoRA against full fine-tuning of the same model: optimizer state and step time",
        packages=("torch", "lightning"),
        machine_notes=f", {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} at the end",
    )
    lines += [
        f"d{args.depth} ({config.num_params() / 1e6:.1f}M), batch {args.batch_size} × {args.seq_len}, loss on the last "
        f"third, {args.steps} steps each (first {args.warmup} dropped), interleaved; AdamW fp32 on the CPU",
        "",
    ]
    header = ("trainable", "AdamW state (MB)", "grads (MB)", "median step (ms)", "min step (ms)", "median CPU (ms)")
    lines.append(f"{'':<6}" + "".join(f"{h:>18}" for h in header))
    for name, run in (("full", full_run), ("lora", lora_run)):
        times, cpu = run.times[args.warmup :], run.cpu_times[args.warmup :]
        row = (f"{sum(p.numel() for p in run.params):,}", f"{run.state_bytes / 2**20:.2f}", f"{run.grad_bytes / 2**20:.2f}",
               f"{statistics.median(times) * 1e3:.1f}", f"{min(times) * 1e3:.1f}", f"{statistics.median(cpu) * 1e3:.1f}")
        lines.append(f"{name:<6}" + "".join(f"{v:>18}" for v in row))
    lines.append(
        f"ratio LoRA / full: optimizer state {lora_run.state_bytes / full_run.state_bytes:.4f}, "
        f"gradients {lora_run.grad_bytes / full_run.grad_bytes:.4f}, "
        f"step time {median_ratio(full_run.times, lora_run.times):.3f}, "
        f"step CPU time {median_ratio(full_run.cpu_times, lora_run.cpu_times):.3f} (medians of per-step ratios)"
    )
    write_report(lines, "lora_vs_full.txt")

if __name__ == "__main__":
    main()
