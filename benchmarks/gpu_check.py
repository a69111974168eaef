"""How fast FlightMind really trains on one GPU, and whether the memory planner is right, in at most 8 minutes.

Trains through the real PretrainModule and a Lightning Trainer (bf16-mixed, gradient clipping, the
throughput and learning-rate monitors, a logger) on synthetic tokens, sequence 2048, each shipped
GPU config with its own micro-batch AND accumulation (an optimizer step as the config takes it):

  d8 config      configs/rtx4060_d8.yaml: compiled per block, micro-batch 8 × accumulation 32, on an
                 emulated RTX 4060 (the card capped at 8 GiB, torch.cuda.set_per_process_memory_fraction)
  d24 config     configs/h100x4_d24.yaml on one GPU: DDP (bucket views, 160 MB buckets), compiled per
                 block, 8 × 8, on an emulated H100 80GB
  d32 config     configs/h100x4_d32.yaml on one GPU: FSDP2 (FSDP2Strategy), compiled per
                 block, 4 × 16; emulated H100 when the plan says one GPU can hold it, else the whole card
  d8 eager       the d8 config eagerly on the emulated RTX 4060: the planner says it does not fit
  d24 eager      the d24 config eagerly, if time is left

Each row: tokens/s and MFU (``GPTConfig.flops_per_token`` against the bf16 peak of
flightmind.training.budget.GPUS), the throughput monitor's MFU, the planned peak (flightmind
plan's, for that micro-batch on one device) beside the measured peak allocated and reserved, the
first optimizer step's seconds (compilation) and whether the loss is finite and falls. The header
records the GPU, its clocks, torch/CUDA/cuDNN versions and the attention kernel SDPA runs. Rows print
as they finish; the table prints last and is written to ``$OUT/gpu_check.md`` (and .json) after every
row. Aims: d24 above 55 % MFU, d8 above 35 %.

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
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import subprocess  # noqa: E402

from flightmind.model import GPTConfig  # noqa: E402
from flightmind.model.attention import kernel_used  # noqa: E402
from flightmind.training.budget import GPUS, gpu_for_device_name  # noqa: E402
from flightmind.training.callbacks import TokenThroughputMonitor  # noqa: E402
from flightmind.training.fsdp2 import FSDP2Strategy  # noqa: E402
from flightmind.training.optimizer import OptimizerSettings  # noqa: E402
from flightmind.training.parallel import ActivationCheckpointing  # noqa: E402
from flightmind.training.plan import GiB, Setup, plan  # noqa: E402
from flightmind.training.pretrain import PretrainModule  # noqa: E402

H100_PEAK = GPUS["h100"].bf16_flops
ABORT_GRACE_S = 40  # past the budget, the watchdog prints the table and exits


# The config cases run what these files configure (tests/test_gpu_check.py holds them equal);
# the configs themselves are not parsed here, since parsing imports their datamodule.
D8_CONFIG = {"file": "configs/rtx4060_d8.yaml", "depth": 8, "micro_batch": 8, "accumulation": 32, "compile": True,
             "checkpointing": "none", "card": "rtx4060"}
D24_CONFIG = {"file": "configs/h100x4_d24.yaml", "depth": 24, "micro_batch": 8, "accumulation": 8, "compile": True,
              "checkpointing": "none", "bucket_cap_mb": 160, "card": "h100"}
D32_CONFIG = {"file": "configs/h100x4_d32.yaml", "depth": 32, "micro_batch": 4, "accumulation": 16, "compile": True,
              "checkpointing": "none", "card": "h100"}


def d24_strategy() -> DDPStrategy:
    return DDPStrategy(gradient_as_bucket_view=True, bucket_cap_mb=D24_CONFIG["bucket_cap_mb"])


def d32_strategy() -> FSDP2Strategy:
    return FSDP2Strategy(data_parallel_size=1, tensor_parallel_size=1)  # the config's FSDP2, on one GPU


@dataclass
class Case:
    name: str
    depth: int
    micro_batches: list[int]
    compile: bool
    strategy: str = "single device"  # or "DDP", "FSDP2": as the h100x4 configs
    search_up: bool = False  # True: try sizes upwards and keep the largest that fits; False: the first that fits
    min_seconds: int = 45  # skipped when less of the budget is left
    accumulation: int = 1
    card: str | None = None  # emulate this card of budget.GPUS (memory cap); None: the whole card
    checkpointing: str = "none"


@dataclass
class Row:
    case: str
    depth: int
    micro_batch: int
    compile: bool
    strategy: str
    accumulation: int = 1
    card: str = ""
    planned_gib: float | None = None
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
        if trainer.global_step == len(self.losses):
            return  # a micro-batch that did not end an optimizer step (accumulation)
        if not self.losses:
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
        self.clocks = gpu_clocks() if self.cuda else "n/a (CPU)"
        device = torch.device("cuda" if self.cuda else "cpu")
        try:
            heads = GPTConfig(depth=24)
            self.attention = kernel_used("auto", heads.n_head, heads.n_kv_head, heads.head_size, device,
                                         torch.bfloat16 if self.cuda else torch.float32, seq_len=256 if self.dry else 2048)
        except RuntimeError as e:
            self.attention = f"none ({str(e)[:80]})"

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t_start)

    def depth(self, depth: int) -> int:
        return 2 if self.dry else depth

    def strategy(self, case: Case):
        """(strategy, label); FSDP2 runs on the CPU too (gloo)."""
        if case.strategy == "DDP":
            return d24_strategy(), "DDP"
        if case.strategy == "FSDP2":
            return d32_strategy(), "FSDP2"
        return "auto", "single device"

    def planned(self, case: Case, depth: int, micro_batch: int) -> float:
        """flightmind plan's peak for this case on one device, in GiB (no margin)."""
        kind = {"DDP": "ddp", "FSDP2": "fsdp"}.get(case.strategy, "single")
        setup = Setup(GPTConfig(depth=depth, vocab_size=32768, max_seq_len=self.seq_len), micro_batch, self.seq_len,
                      accumulation=self.accumulation(case), strategy=kind, compile=case.compile,
                      checkpointing=ActivationCheckpointing(case.checkpointing))
        return plan(setup, None, largest=False).peak / GiB

    def accumulation(self, case: Case) -> int:
        return min(case.accumulation, 2) if self.dry else case.accumulation

    def emulate(self, card: str | None) -> str:
        """Cap this process's share of the GPU at ``card``'s memory; the label for the table."""
        if not self.cuda:
            return card or ""
        total = torch.cuda.get_device_properties(0).total_memory
        fraction = 1.0 if card is None else min(1.0, GPUS[card].memory_gib * GiB / total)
        torch.cuda.set_per_process_memory_fraction(fraction)
        return f"{GPUS[card].name} ({fraction * total / GiB:.0f} GiB)" if card and fraction < 1 else f"whole card ({total / GiB:.0f} GiB)"

    def train(self, case: Case, micro_batch: int) -> Row:
        depth = self.depth(case.depth)
        strategy, label = self.strategy(case)
        accumulation = self.accumulation(case)
        row = Row(case.name, depth, micro_batch, case.compile, label, accumulation, self.emulate(case.card))
        row.planned_gib = self.planned(case, depth, micro_batch)
        torch.manual_seed(0)
        module = PretrainModule(
            shape=GPTConfig(depth=depth, vocab_size=32768, max_seq_len=self.seq_len),
            # the tiny dry-run models learn visibly in 6 steps at the smoke's rate
            optimizer=OptimizerSettings(max_lr=3e-3 if self.dry else 6e-4, warmup_steps=1),
            compile=case.compile,
            activation_checkpointing=ActivationCheckpointing(case.checkpointing),
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
            accumulate_grad_batches=accumulation,
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
            SyntheticWindows(micro_batch * accumulation * self.steps, self.seq_len),
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
        self.emulate(None)
        return row

    def measure(self, row: Row, module: PretrainModule, timer: StepTimer, logger: CSVLogger) -> None:
        row.first_step_s = timer.first_step_s
        row.losses = [float(loss) for loss in timer.losses]
        if timer.timed_steps:
            row.tokens_per_s = timer.timed_steps * row.micro_batch * row.accumulation * self.seq_len / (timer.t1 - timer.t0)
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
                if case.search_up:
                    kept = kept or row  # reported only if no size fits
                    break  # the previous size was the largest that fits
                self.add(row)  # the planner's verdict, checked: this size runs out of memory
                continue  # the next, smaller size
            kept = row
            if not case.search_up or not fits(row) or self.left() < case.min_seconds / 2:
                break
        return self.add(kept) if kept is not None else row  # every size ran out of memory: rows already added

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print("ROW " + table_line(row), flush=True)
        self.write()
        return row

    def best_micro_batch(self, name: str) -> int | None:
        rows = [r for r in self.rows if r.case == name and fits(r)]
        return rows[-1].micro_batch if rows else None

    def run(self) -> None:
        def config_size(config: dict) -> list[int]:
            return [2] if self.dry else [config["micro_batch"]]

        def config_case(name: str, config: dict, strategy: str, compile: bool | None = None, **kwargs) -> Case:
            return Case(name, config["depth"], config_size(config), config["compile"] if compile is None else compile,
                        strategy, accumulation=config["accumulation"], card=config["card"],
                        checkpointing=config["checkpointing"], **kwargs)

        # Each shipped GPU config as configured (micro-batch and accumulation), on the card it is written for.
        self.run_case(config_case("d8 config", D8_CONFIG, "single device", min_seconds=60))
        self.run_case(config_case("d24 config", D24_CONFIG, "DDP", min_seconds=120))
        d32 = config_case("d32 config", D32_CONFIG, "FSDP2", min_seconds=120)
        if self.cuda and self.planned(d32, 32, D32_CONFIG["micro_batch"]) * 1.08 + 1 > GPUS["h100"].memory_gib:
            d32.card = None  # one GPU holds every shard: an 80 GB card cannot, the plan says; use the whole card
        self.run_case(d32)
        # Eager, as configured otherwise: the planner says d8 at micro-batch 8 does not fit 8 GiB eagerly.
        # Then the largest micro-batch the plan gives on the card (dry run: 4 "runs out of memory", 2 fits).
        eager = config_case("d8 eager", D8_CONFIG, "single device", compile=False, min_seconds=45)
        if self.dry:
            eager.micro_batches = [4, 2]
        else:
            setup = Setup(GPTConfig(depth=8, vocab_size=32768, max_seq_len=self.seq_len), 8, self.seq_len, compile=False)
            largest = plan(setup, GPUS["rtx4060"]).largest_micro_batch
            eager.micro_batches += [largest] if largest and largest < 8 else []
        self.run_case(eager)
        self.run_case(config_case("d24 eager", D24_CONFIG, "DDP", compile=False, min_seconds=90))

    def header(self) -> list[str]:
        a = self.args
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return [
            f"# gpu_check {date.today()}  {self.device_name}  torch {torch.__version__}  lightning {L.__version__}"
            + (f"  CUDA {torch.version.cuda}  cuDNN {cudnn}" if self.cuda else "  (dry run: CPU, tiny models)"),
            f"# clocks: {self.clocks}; attention: SDPA kernel {self.attention} (model.shape.attention=auto, bf16, d24's heads)",
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


def gpu_clocks() -> str:
    """SM and memory clocks now and at most, from nvidia-smi (absent: say so)."""
    query = "clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown (no nvidia-smi)"
    sm, sm_max, mem, mem_max, power = (v.strip() for v in out.split(","))
    return f"SM {sm} (max {sm_max}), memory {mem} (max {mem_max}), power limit {power}"


def fmt(value, pattern: str, missing: str = "") -> str:
    return missing if value is None else pattern.format(value)


COLUMNS = ("| case | depth | micro-batch × accumulation | compile | strategy | card | tokens/s | MFU | monitor MFU | "
           "planned peak GiB | peak alloc GiB | peak reserved GiB | first step s | loss first → last | status |")


def table_line(r: Row) -> str:
    loss = f"{r.losses[0]:.2f} → {r.losses[-1]:.2f}" if r.losses else ""
    cells = [
        r.case, f"d{r.depth}", f"{r.micro_batch} × {r.accumulation}", "on" if r.compile else "off", r.strategy, r.card,
        fmt(r.tokens_per_s, "{:,.0f}"), fmt(r.mfu, "{:.1%}"), fmt(r.monitor_mfu, "{:.1%}"),
        fmt(r.planned_gib, "{:.1f}"), fmt(r.peak_alloc_gib, "{:.1f}"), fmt(r.peak_reserved_gib, "{:.1f}"), fmt(r.first_step_s, "{:.1f}"),
        loss, r.status,
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def table(rows: list[Row]) -> list[str]:
    return [COLUMNS, "|" + "---|" * COLUMNS.count(" | ") + "---|", *(table_line(r) for r in rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, few steps")
    parser.add_argument("--budget-s", type=float, default=420, help="seconds for all cases (default 420)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run, each of the config's accumulation (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
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
