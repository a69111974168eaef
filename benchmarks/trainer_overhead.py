"""What Lightning costs per step: ``flightmind fit``'s Trainer against a plain PyTorch loop doing the same work.

Same PretrainModule (model, loss, AdamW groups, warm-up/cosine), same batches, gradient clipping at
1.0, fp32 on the CPU. The Trainer runs with the callbacks of every ``flightmind fit`` (progress bar,
learning-rate and throughput monitors) and a TensorBoard logger, logging every 10 steps. A step's
time is the wall time from one step's start to the next, so everything Lightning does between
steps counts. Prints the median of each and their ratio (aim: ≤ 1.05).

    python benchmarks/trainer_overhead.py [--depth 2] [--seq-len 128] [--batch-size 4] [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's flightmind

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from flightmind.training.callbacks import TokenThroughputMonitor, persistent_callbacks  # noqa: E402
from flightmind.training.pretrain import PretrainModule  # noqa: E402


class StepPeriods(L.Callback):
    """Wall time from each step's start to the next step's start (the last: to the end of training)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args) -> None:
        self.starts.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def make_module(args) -> PretrainModule:
    torch.manual_seed(0)
    module = PretrainModule(depth=args.depth, max_seq_len=args.seq_len, warmup_steps=5)
    module.configure_model()
    return module


def trainer_steps(args, batches: list[torch.Tensor]) -> list[float]:
    periods = StepPeriods()
    with tempfile.TemporaryDirectory() as logs, open(os.devnull, "w") as quiet:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # the progress bar runs, unseen
            trainer = L.Trainer(
                accelerator="cpu",
                devices=1,
                precision="32-true",
                max_steps=len(batches),
                gradient_clip_val=1.0,
                callbacks=[periods, TokenThroughputMonitor(), *persistent_callbacks()],
                logger=TensorBoardLogger(logs),
                log_every_n_steps=10,
                enable_checkpointing=False,
                enable_model_summary=False,
            )
            trainer.fit(make_module(args), DataLoader(batches, batch_size=None))
    return periods.times


def plain_steps(args, batches: list[torch.Tensor]) -> list[float]:
    module = make_module(args)
    module.train()
    module._trainer = type("Trainer", (), {"max_steps": len(batches)})()  # configure_optimizers reads max_steps
    opt = module.configure_optimizers()
    module._trainer = None
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    times, start = [], time.perf_counter()
    for batch in batches:
        loss = module.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped from each median")
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
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f}; d{args.depth}, batch {args.batch_size} × {args.seq_len}, "
          f"{args.steps} steps × {args.repeats} runs ({args.warmup} dropped each)")
    print(f"# command: python benchmarks/trainer_overhead.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{'loop':<20}{'median step (ms)':>18}")
    print(f"{'plain PyTorch':<20}{plain_ms:>18.1f}")
    print(f"{'Lightning Trainer':<20}{lightning_ms:>18.1f}")
    print(f"ratio (Trainer / plain): {lightning_ms / plain_ms:.3f}")


if __name__ == "__main__":
    main()
