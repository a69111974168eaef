"""What Lightning costs per step: ``flightmind fit``'s Trainer against a plain PyTorch loop doing the same work.

Same PretrainModule (model, loss, AdamW groups, warm-up/cosine), same batches, gradient clipping at
1.0, fp32 on the CPU. The Trainer runs with the callbacks of every ``flightmind fit`` (progress bar,
learning-rate and throughput monitors) and a TensorBoard logger, logging every 10 steps. A step's
time runs from one step's start to the next, so everything Lightning does between steps counts.
Prints the medians and their ratio (aim: ≤ 1.05), in wall time and in CPU time of this process (one
thread): on a shared machine other processes stretch the wall time, not the CPU time.

    python benchmarks/trainer_overhead.py [--depth 2] [--seq-len 128] [--batch-size 4] [--steps 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

from _common import REPO_ROOT, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from flightmind.model import GPTConfig
from flightmind.training.optimizer import OptimizerSettings
from flightmind.training.callbacks import TokenThroughputMonitor, persistent_callbacks  # noqa: E402
from flightmind.training.pretrain import PretrainModule  # noqa: E402


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def periods(marks: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(wall, CPU) seconds between consecutive marks."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]


class StepPeriods(L.Callback):
    """Clocks at each step's start and at the end of training."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args) -> None:
        self.marks.append(clocks())

    def on_train_end(self, *args) -> None:
        self.marks.append(clocks())


def make_module(args) -> PretrainModule:
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=args.depth, max_seq_len=args.seq_len), optimizer=OptimizerSettings(warmup_steps=5))
    module.configure_model()
    return module


def trainer_steps(args, batches: list[torch.Tensor]) -> list[tuple[float, float]]:
    timer = StepPeriods()
    with tempfile.TemporaryDirectory() as logs, open(os.devnull, "w") as quiet:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # the progress bar runs, unseen
            trainer = L.Trainer(
                accelerator="cpu",
                devices=1,
                precision="32-true",
                max_steps=len(batches),
                gradient_clip_val=1.0,
                callbacks=[timer, TokenThroughputMonitor(), *persistent_callbacks()],
                logger=TensorBoardLogger(logs),
                log_every_n_steps=10,
                enable_checkpointing=False,
                enable_model_summary=False,
            )
            trainer.fit(make_module(args), DataLoader(batches, batch_size=None))
    return periods(timer.marks)


def plain_steps(args, batches: list[torch.Tensor]) -> list[tuple[float, float]]:
    module = make_module(args)
    module.train()
    module._trainer = type("Trainer", (), {"max_steps": len(batches)})()  # configure_optimizers reads max_steps
    opt = module.configure_optimizers()
    module._trainer = None
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    marks = [clocks()]
    for batch in batches:
        loss = module.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        marks.append(clocks())
    return periods(marks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped from each median")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(1)
    batches = [torch.randint(0, 32768, (args.batch_size, args.seq_len + 1)) for _ in range(args.steps)]
    lightning_times, plain_times = [], []
    for _ in range(args.repeats):  # alternate so drift on a shared machine hits both
        plain_times += plain_steps(args, batches)[args.warmup :]
        lightning_times += trainer_steps(args, batches)[args.warmup :]
    lightning_ms = [statistics.median(t[i] for t in lightning_times) * 1e3 for i in (0, 1)]
    plain_ms = [statistics.median(t[i] for t in plain_times) * 1e3 for i in (0, 1)]
    lines = report_header(
        "trainer overhead: flightmind fit's Trainer against a plain PyTorch loop, same work (median step)",
        packages=("torch", "lightning"),
        machine_notes=f", {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f}",
    )
    lines += [
        f"d{args.depth}, batch {args.batch_size} × {args.seq_len}, {args.steps} steps × {args.repeats} runs "
        f"({args.warmup} dropped each)",
        "",
        f"{'median step (ms)':<24}{'wall':>10}{'CPU':>10}",
        f"{'plain PyTorch':<24}{plain_ms[0]:>10.1f}{plain_ms[1]:>10.1f}",
        f"{'Lightning Trainer':<24}{lightning_ms[0]:>10.1f}{lightning_ms[1]:>10.1f}",
        f"{'ratio (Trainer / plain)':<24}{lightning_ms[0] / plain_ms[0]:>10.3f}{lightning_ms[1] / plain_ms[1]:>10.3f}",
    ]
    write_report(lines, "trainer_overhead.txt")

if __name__ == "__main__":
    main()
