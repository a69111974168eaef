"""What Lightning costs per step: the Trainer against a plain PyTorch loop doing the same work.

Same PretrainModule (model, loss, AdamW groups, warm-up/cosine), same batches, gradient clipping
at 1.0, fp32 on the CPU. Prints the median step time of each and their ratio (aim: ≤ 1.05).

    python benchmarks/trainer_overhead.py [--depth 4] [--seq-len 256] [--batch-size 8] [--steps 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import lightning as L
import torch
from torch.utils.data import DataLoader

from flightmind.training.pretrain import PretrainModule


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._t0)


def make_module(args) -> PretrainModule:
    torch.manual_seed(0)
    module = PretrainModule(depth=args.depth, max_seq_len=args.seq_len, warmup_steps=5)
    module.configure_model()
    return module


def trainer_steps(args, batches: list[torch.Tensor]) -> list[float]:
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_steps=len(batches),
        gradient_clip_val=1.0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
    )
    trainer.fit(make_module(args), DataLoader(batches, batch_size=None))
    return timer.times


def plain_steps(args, batches: list[torch.Tensor]) -> list[float]:
    module = make_module(args)
    module.train()
    config = module.configure_optimizers.__func__  # the same optimizer and schedule code

    class _Trainer:  # configure_optimizers reads only max_steps
        max_steps = len(batches)

    module._trainer = _Trainer()
    opt = config(module)
    module._trainer = None
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    times = []
    for batch in batches:
        t0 = time.perf_counter()
        loss = module.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps dropped from each median")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    args = parser.parse_args()

    torch.manual_seed(1)
    batches = [torch.randint(0, 32768, (args.batch_size, args.seq_len + 1)) for _ in range(args.steps)]
    lightning_times, plain_times = [], []
    for _ in range(args.repeats):  # alternate so drift on a shared machine hits both
        plain_times += plain_steps(args, batches)[args.warmup :]
        lightning_times += trainer_steps(args, batches)[args.warmup :]
    lightning_ms = statistics.median(lightning_times) * 1e3
    plain_ms = statistics.median(plain_times) * 1e3
    print(f"# trainer_overhead  {date.today()}  torch {torch.__version__}  lightning {L.__version__}")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"d{args.depth}, batch {args.batch_size} × {args.seq_len}, {args.steps} steps × {args.repeats} runs")
    print(f"{'loop':<20}{'median step (ms)':>18}")
    print(f"{'plain PyTorch':<20}{plain_ms:>18.1f}")
    print(f"{'Lightning Trainer':<20}{lightning_ms:>18.1f}")
    print(f"ratio (Trainer / plain): {lightning_ms / plain_ms:.3f}")


if __name__ == "__main__":
    main()
