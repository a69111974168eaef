"""How fast FlightMind really trains on one H100/H200, in at most 8 minutes.

Trains through the real PretrainModule and a Lightning Trainer (bf16-mixed, gradient clipping, the
throughput monitor and learning-rate monitor, a logger) on synthetic tokens, sequence 2048:

  d24 config     configs/h100x4_d24.yaml on one GPU: DDP (bucket views), compiled, micro-batch 8
  d24 eager      the largest micro-batch that fits (4, 8, 16, 32: stops at the first OOM)
  d32 config     configs/h100x4_d32.yaml on one GPU: FSDP over blocks, activation checkpointing, micro-batch 4
  d8 eager       the largest micro-batch that fits (16 … 128)
  d8 compiled    at d8's eager micro-batch (halved on OOM)
  d24 compiled   at d24's eager micro-batch, when that is not 8 and time is left

Each row: tokens/s and MFU (FLOPs per token as DESIGN.md defines them, ``GPTConfig.flops_per_token``,
against the bf16 peak of flightmind.training.budget.GPUS: 989 TFLOP/s on H100 SXM and H200), the
MFU the throughput monitor logged, peak memory, the first step's seconds (compilation), and whether
the loss is finite and falls. Rows print as they finish; the table prints last and is written to
``$OUT/gpu_check.md`` (and .json) after every row. Cases that no longer fit the time budget are
skipped with a note. Aims: d24 above 55 % MFU, d8 above 35 % (nanochat reports ≈ 47 % for d20).

    python benchmarks/gpu_check.py [--budget-s 420]
    python benchmarks/gpu_check.py --dry-run      # CPU, tiny models, few steps: proves the script runs

No ``datasets`` (nor the datamodule) on its import path: the tokens are made here.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import logging
import math
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's flightmind, installed or not

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from flightmind.model import Block, GPTConfig  # noqa: E402
from flightmind.training.budget import GPUS, gpu_for_device_name  # noqa: E402
from flightmind.training.callbacks import TokenThroughputMonitor  # noqa: E402
from flightmind.training.optimizer import OptimizerSettings  # noqa: E402
from flightmind.training.pretrain import PretrainModule  # noqa: E402

H100_PEAK = GPUS["h100"].bf16_flops
ABORT_GRACE_S = 40  # past the budget, the watchdog prints the table and exits


# The two config cases run what these files configure (tests/test_gpu_check.py holds them equal);
# the configs themselves are not parsed here, since parsing imports their datamodule.
D24_CONFIG = {"file": "configs/h100x4_d24.yaml", "micro_batch": 8, "compile": True}
D32_CONFIG = {"file": "configs/h100x4_d32.yaml", "micro_batch": 4, "compile": False}


def d24_strategy() -> DDPStrategy:
    return DDPStrategy(gradient_as_bucket_view=True)


def d32_strategy() -> FSDPStrategy:
    return FSDPStrategy(auto_wrap_policy={Block}, activation_checkpointing_policy={Block})


@dataclass
class Case:
    name: str
    depth: int
    micro_batches: list[int]
    compile: bool
    strategy: str = "single device"  # or "DDP", "FSDP": as the h100x4 configs
    search_up: bool = False  # True: try sizes upwards and keep the largest that fits; False: the first that fits
    min_seconds: int = 45  # skipped when less of the budget is left


@dataclass
class Row:
    case: str
    depth: int
    micro_batch: int
    compile: bool
    strategy: str
    tokens_per_s: float | None = None
    mfu: float | None = None
    monitor_mfu: float | None = None
    peak_alloc_gib: float | None = None
    peak_reserved_gib: float | None = None
    first_step_s: float | None = None
    losses: list[float] = field(default_factory=list)
    status: str = ""


class SyntheticWindows(Dataset):
    """Token ids drawn from a Zipf law (p ∝ 1/rank, like text): a unigram the loss can be seen learning."""

    def __init__(self, windows: int, seq_len: int, vocab_size: int = 32768, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        zipf = 1.0 / torch.arange(1, vocab_size + 1, dtype=torch.float64)
        draws = torch.multinomial(zipf, windows * (seq_len + 1), replacement=True, generator=generator)
        self.tokens = draws.view(windows, seq_len + 1)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tokens[index]


class StepTimer(L.Callback):
    """Times the optimizer steps after ``warmup`` (one synchronization at each end) and keeps each
    step's loss as a device tensor, read only when training is over."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0 = self.t1 = self.first_step_s = None
        self.timed_steps = 0
        self.losses: list[torch.Tensor] = []

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_t0 = self._now(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and self.t0 is None:
            self.t0, self._start_step = self._now(trainer), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first_step_s = self._now(trainer) - self._fit_t0
        self.losses.append(pl_module.last_step_loss)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.t0 is not None:
            self.t1 = self._now(trainer)
            self.timed_steps = trainer.global_step - self._start_step


class SimulatedOOM(L.Callback):
    """--dry-run only: micro-batches above ``limit`` fail as a CUDA OOM would, to exercise the search."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch.size(0) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated by --dry-run above micro-batch {self.limit})")


def fits(row: Row) -> bool:
    """Trained to the end (whatever the loss did): no OOM, no error, not skipped."""
    return not row.status.startswith(("OOM", "error", "skipped"))


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = args.dry_run
        self.cuda = torch.cuda.is_available() and not self.dry
        self.t_start = time.perf_counter()
        self.rows: list[Row] = []
        self.seq_len = 64 if self.dry else args.seq_len
        self.steps = 6 if self.dry else args.steps
        self.warmup = 2 if self.dry else args.warmup
        self.device_name = torch.cuda.get_device_name() if self.cuda else platform.processor() or "cpu"
        gpu = gpu_for_device_name(self.device_name) if self.cuda else None
        self.peak = gpu.bf16_flops if gpu else H100_PEAK
        self.logs = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def depth(self, depth: int) -> int:
        return 2 if self.dry else depth

    def strategy(self, case: Case):
        """(strategy, label, activation checkpointing by the module)"""
        if case.strategy == "DDP":
            return d24_strategy(), "DDP", False
        if case.strategy == "FSDP" and self.cuda:
            return d32_strategy(), "FSDP + checkpointing", False
        if case.strategy == "FSDP":  # FSDP refuses the CPU: the module's activation checkpointing stands in
            return "auto", "checkpointing (no FSDP on CPU)", True
        return "auto", "single device", False

    def train(self, case: Case, micro_batch: int) -> Row:
        depth = self.depth(case.depth)
        strategy, label, activation_checkpointing = self.strategy(case)
        row = Row(case.name, depth, micro_batch, case.compile, label)
        torch.manual_seed(0)
        module = PretrainModule(
            shape=GPTConfig(depth=depth, vocab_size=32768, max_seq_len=self.seq_len),
            # the tiny dry-run models learn visibly in 6 steps at the smoke's rate
            optimizer=OptimizerSettings(max_lr=3e-3 if self.dry else 6e-4, warmup_steps=1),
            compile=case.compile,
            activation_checkpointing=activation_checkpointing,
        )
        timer = StepTimer(self.warmup)
        callbacks = [timer, TokenThroughputMonitor(window_size=2), LearningRateMonitor(logging_interval="step")]
        if self.dry:
            callbacks.append(SimulatedOOM(limit=2))
        logger = CSVLogger(self.logs, name=f"{case.name.replace(' ', '_')}_{micro_batch}")
        trainer = L.Trainer(
            accelerator="gpu" if self.cuda else "cpu",
            devices=1,
            strategy=strategy,
            precision="bf16-mixed",
            gradient_clip_val=1.0,
            max_steps=self.steps,
            max_time=timedelta(seconds=max(10, self.left() - 15)),
            log_every_n_steps=1 if self.dry else 5,
            logger=logger,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        loader = DataLoader(
            SyntheticWindows(micro_batch * self.steps, self.seq_len),
            batch_size=micro_batch,
            drop_last=True,
            pin_memory=self.cuda,
        )
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            trainer.fit(module, loader)
        except Exception as error:  # noqa: BLE001 — every failure becomes a row, the next case runs
            first_line = (str(error).strip().splitlines() or [""])[0][:160]
            row.status = "OOM" if is_oom(error) else f"error: {type(error).__name__}: {first_line}"
        if self.cuda:
            row.peak_alloc_gib = torch.cuda.max_memory_allocated() / 2**30
            row.peak_reserved_gib = torch.cuda.max_memory_reserved() / 2**30
        if not row.status:
            self.measure(row, module, timer, logger)
        del trainer, module, loader
        free_memory()
        return row

    def measure(self, row: Row, module: PretrainModule, timer: StepTimer, logger: CSVLogger) -> None:
        row.first_step_s = timer.first_step_s
        row.losses = [float(loss) for loss in timer.losses]
        if timer.timed_steps:
            row.tokens_per_s = timer.timed_steps * row.micro_batch * self.seq_len / (timer.t1 - timer.t0)
            row.mfu = row.tokens_per_s * module.config.flops_per_token(self.seq_len) / self.peak
        metrics = Path(logger.log_dir) / "metrics.csv"
        if metrics.is_file():
            with metrics.open() as f:
                logged = [r["train/device/mfu"] for r in csv.DictReader(f) if r.get("train/device/mfu")]
            row.monitor_mfu = float(logged[-1]) if logged else None
        finite = all(math.isfinite(loss) for loss in row.losses)
        falls = len(row.losses) >= 2 and min(row.losses[-2:]) < row.losses[0] - (0.01 if self.dry else 0.1)
        row.status = "ok" if finite and falls else ("non-finite loss" if not finite else "loss does not fall")
        if not timer.timed_steps:
            row.status += "; no timed steps (time budget)"

    def run_case(self, case: Case) -> Row | None:
        needs = 5 if self.dry else case.min_seconds
        if self.left() < needs:
            row = Row(case.name, self.depth(case.depth), case.micro_batches[0], case.compile, self.strategy(case)[1])
            row.status = f"skipped: {self.left():.0f} s of the budget left, needs ≈ {needs} s"
            return self.add(row)
        kept = None
        for micro_batch in case.micro_batches:
            row = self.train(case, micro_batch)
            print(f"  tried {case.name} micro-batch {micro_batch}: {row.status} {fmt(row.tokens_per_s, '{:,.0f} tok/s')} "
                  f"{fmt(row.peak_alloc_gib, '{:.1f} GiB peak')}", flush=True)
            if row.status == "OOM":
                kept = kept or row  # reported only if no size fits
                if case.search_up:
                    break  # the previous size was the largest that fits
                continue  # the next, smaller size
            kept = row
            if not case.search_up or not fits(row) or self.left() < case.min_seconds / 2:
                break
        return self.add(kept)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("ROW " + table_line(row), flush=True)
        self.write()
        return row

    def best_micro_batch(self, name: str) -> int | None:
        rows = [r for r in self.rows if r.case == name and fits(r)]
        return rows[-1].micro_batch if rows else None

    def run(self) -> None:
        def sizes(*micro_batches: int) -> list[int]:
            return [1, 2, 4] if self.dry else list(micro_batches)  # dry run: 4 "runs out of memory"

        def config_size(config: dict) -> list[int]:
            return [2] if self.dry else [config["micro_batch"]]

        # Most telling first: the d24 run as configured (compiled, DDP, micro-batch 8), then the search.
        self.run_case(Case("d24 config", 24, config_size(D24_CONFIG), D24_CONFIG["compile"], "DDP", min_seconds=150))
        self.run_case(Case("d24 eager", 24, sizes(4, 8, 16, 32), compile=False, search_up=True))
        self.run_case(Case("d32 config", 32, config_size(D32_CONFIG), D32_CONFIG["compile"], "FSDP", min_seconds=60))
        self.run_case(Case("d8 eager", 8, sizes(16, 32, 64, 128), compile=False, search_up=True))
        d8_size = self.best_micro_batch("d8 eager") or config_size({"micro_batch": 16})[0]
        self.run_case(Case("d8 compiled", 8, [d8_size, max(1, d8_size // 2)], compile=True, min_seconds=90))
        d24_size = self.best_micro_batch("d24 eager")
        if d24_size and (self.dry or d24_size != D24_CONFIG["micro_batch"]):
            self.run_case(Case("d24 compiled", 24, [d24_size, max(1, d24_size // 2)], compile=True, min_seconds=150))

    def header(self) -> list[str]:
        a = self.args
        return [
            f"# gpu_check {date.today()}  {self.device_name}  torch {torch.__version__}  lightning {L.__version__}"
            + (f"  CUDA {torch.version.cuda}" if self.cuda else "  (dry run: CPU, tiny models)"),
            f"# sequence {self.seq_len}, bf16-mixed, {self.steps} steps ({self.warmup} untimed), synthetic tokens; "
            f"MFU against {self.peak / 1e12:g} TFLOP/s; budget {a.budget_s} s, used {time.perf_counter() - self.t_start:.0f} s",
            f"# command: python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}".rstrip(),
            "# aims: d24 MFU > 55 %, d8 MFU > 35 %",
        ]

    def abort(self) -> None:
        """The watchdog: a case hung past the budget (a compile, a collective): report what is done and stop."""
        print(f"gpu_check: still running {self.args.budget_s + ABORT_GRACE_S:.0f} s after the start; stopping", flush=True)
        self.write()
        print("\n".join(["", *self.header(), "", *table(self.rows)]), flush=True)
        os._exit(3)

    def write(self) -> None:
        out = self.args.out
        if not out:
            return
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.md").write_text("\n".join([*self.header(), "", *table(self.rows)]) + "\n")
        (Path(out) / "gpu_check.json").write_text(json.dumps([asdict(r) for r in self.rows], indent=1))


def fmt(value, pattern: str, missing: str = "") -> str:
    return missing if value is None else pattern.format(value)


COLUMNS = "| case | depth | micro-batch | compile | strategy | tokens/s | MFU | monitor MFU | peak alloc GiB | peak reserved GiB | first step s | loss first → last | status |"


def table_line(r: Row) -> str:
    loss = f"{r.losses[0]:.2f} → {r.losses[-1]:.2f}" if r.losses else ""
    cells = [
        r.case, f"d{r.depth}", str(r.micro_batch), "on" if r.compile else "off", r.strategy,
        fmt(r.tokens_per_s, "{:,.0f}"), fmt(r.mfu, "{:.1%}"), fmt(r.monitor_mfu, "{:.1%}"),
        fmt(r.peak_alloc_gib, "{:.1f}"), fmt(r.peak_reserved_gib, "{:.1f}"), fmt(r.first_step_s, "{:.1f}"),
        loss, r.status,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def table(rows: list[Row]) -> list[str]:
    return [COLUMNS, "|" + "---|" * COLUMNS.count(" | ") + "---|", *(table_line(r) for r in rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, few steps")
    parser.add_argument("--budget-s", type=float, default=420, help="seconds for all cases (default 420)")
    parser.add_argument("--steps", type=int, default=13, help="optimizer steps per run (default 13)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (default 3)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="directory for gpu_check.md/.json (default $OUT)")
    args = parser.parse_args(argv)
    if args.dry_run:
        # Dynamo still captures every graph; inductor's CPU code generation (minutes on 2 cores) is skipped.
        compile_ = torch.compile
        torch.compile = lambda *a, **k: compile_(*a, **{**k, "backend": "eager"})
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --dry-run on a CPU", file=sys.stderr)
        return 2
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no tips and device banners per run
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # README "NCCL pitfalls": no NVLS in containers
    check = Check(args)
    print("\n".join(check.header()), flush=True)
    watchdog = threading.Timer(args.budget_s + ABORT_GRACE_S, check.abort)
    watchdog.daemon = True
    watchdog.start()
    check.run()
    watchdog.cancel()
    check.write()
    print("\n".join(["", *check.header(), "", *table(check.rows)]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
