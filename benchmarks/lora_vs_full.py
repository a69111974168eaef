"""LoRA against full fine-tuning of the same model: optimizer-state memory and step time.

The same d4 weights, the same padded chat-shaped batches and the same masked loss; AdamW from the
modules' own ``configure_optimizers`` (decay groups, warm-up → cosine). "Full" trains every
parameter (a PretrainModule holding the base weights); "LoRA" is a FinetuneModule (r = 16, α = 32 on
q, k, v, o, gate, up, down). fp32 on the CPU, gradient clipping at 1.0. Prints the optimizer-state
and gradient bytes of each, their median step time, and the ratios LoRA / full.

    python benchmarks/lora_vs_full.py [--depth 4] [--seq-len 256] [--batch-size 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch

from flightmind.data.chat import IGNORE_INDEX
from flightmind.model import GPT, GPTConfig
from flightmind.training.finetune import FinetuneModule
from flightmind.training.pretrain import PretrainModule


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


def run(module: L.LightningModule, data: list[dict], warmup: int) -> dict:
    module.train()
    optimizer, scheduler = optimizer_of(module, len(data))
    params = [p for p in module.parameters() if p.requires_grad]
    times = []
    for batch in data:
        t0 = time.perf_counter()
        loss = FinetuneModule.loss(module, batch)  # the masked loss, whichever module holds the GPT
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        grads = tensor_bytes(p.grad for p in params)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        times.append(time.perf_counter() - t0)
    state = tensor_bytes(t for per_param in optimizer.state.values() for t in per_param.values())
    return {"params": sum(p.numel() for p in params), "state": state, "grads": grads, "times": times[warmup:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4, help="steps dropped from each median")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    args = parser.parse_args()

    config = GPTConfig.from_depth(args.depth, max_seq_len=args.seq_len)
    data = batches(args, config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.ckpt"
        base = write_base(base_path, config)

        def full() -> PretrainModule:
            module = PretrainModule(depth=args.depth, max_seq_len=args.seq_len, warmup_steps=2)
            module.configure_model()
            module.model.load_state_dict(base.state_dict())
            return module

        def lora() -> FinetuneModule:
            torch.manual_seed(0)
            module = FinetuneModule(str(base_path), lora_r=16, lora_alpha=32, lora_dropout=0.0, warmup_steps=2)
            module.configure_model()
            return module

        results = {"full": [], "lora": []}
        for _ in range(args.repeats):  # alternate so drift on a shared machine hits both
            results["full"].append(run(full(), data, args.warmup))
            results["lora"].append(run(lora(), data, args.warmup))

    summary = {}
    for name, runs in results.items():
        times = [t for r in runs for t in r["times"]]
        summary[name] = {**runs[0], "ms": statistics.median(times) * 1e3}
    full_, lora_ = summary["full"], summary["lora"]
    print(f"# lora_vs_full  {date.today()}  torch {torch.__version__}  lightning {L.__version__}")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; d{args.depth} "
          f"({config.num_params() / 1e6:.1f}M), batch {args.batch_size} × {args.seq_len}, loss on the last third, "
          f"{args.steps} steps × {args.repeats} runs, AdamW fp32 on the CPU")
    print(f"{'':<10}{'trainable':>12}{'AdamW state (MB)':>18}{'grads (MB)':>12}{'median step (ms)':>18}")
    for name, s in summary.items():
        print(f"{name:<10}{s['params']:>12,}{s['state'] / 2**20:>18.2f}{s['grads'] / 2**20:>12.2f}{s['ms']:>18.1f}")
    print(f"ratio LoRA / full: optimizer state {lora_['state'] / full_['state']:.4f}, "
          f"gradients {lora_['grads'] / full_['grads']:.4f}, step time {lora_['ms'] / full_['ms']:.3f}")


if __name__ == "__main__":
    main()
