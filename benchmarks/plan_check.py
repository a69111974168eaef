"""The memory planner against memory measured on the CPU, and the compiled/eager activation factor.

Each case runs in a fresh process with glibc's mmap threshold fixed at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``), so that every tensor of consequence is its own mapping, returned to
the system when freed: the resident set then follows live tensor memory. Measured:

- static: resident growth from before the model is built to after the first fused AdamW step
  (weights, gradients, optimizer state);
- transient: the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) of one more
  micro-batch's forward and backward, above the resident set before it. A compiled case first runs
  one micro-batch (compilation), then measures the second.

The planner's prediction for the same setup (flightmind.training.plan) is printed beside it; its
compiled factor (``COMPILED_ACTIVATIONS``) is the measured compiled/eager transient ratio of the
block activations here (Inductor's CPU backend fuses and partitions as its GPU backend does).

    python benchmarks/plan_check.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MEASURE = r"""
import json, os, resource, sys
import torch
from flightmind.model import GPTConfig
from flightmind.training.parallel import ActivationCheckpointing, compile_blocks
from flightmind.training.plan import Setup, build_traced_model
from flightmind.training.causal_lm import cross_entropy

spec = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) * 1024

setup = Setup(GPTConfig(**spec["shape"]), spec["micro_batch"], spec["seq_len"], precision=spec["precision"],
              compile=spec["compile"], checkpointing=ActivationCheckpointing(**spec["checkpointing"]), accelerator="cpu")
# warm-up on a tiny model: thread pools, oneDNN, autograd's first allocations
warm = build_traced_model(Setup(GPTConfig(depth=1, vocab_size=64, max_seq_len=16), 1, 16, precision=spec["precision"]))
warm(torch.randint(0, 64, (1, 16))).float().sum().backward()
del warm
mixed = "mixed" in setup.precision

def micro_batch(model, loss_fn):
    ids = torch.randint(0, setup.config.vocab_size, (setup.micro_batch, setup.seq_len + 1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
        logits = model(ids[:, :-1])
    loss = loss_fn(logits, ids[:, 1:])
    del logits
    loss.backward()

before = rss()
model = build_traced_model(setup).train()
for p in model.parameters():
    p.grad = torch.zeros_like(p)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
optimizer.step()
static = rss() - before
loss_fn = cross_entropy
if setup.compile:
    compile_blocks(model)
    loss_fn = torch.compile(cross_entropy)
    micro_batch(model, loss_fn)  # compiles
    micro_batch(model, loss_fn)  # the autograd and allocator state of a steady micro-batch
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
base = rss()
micro_batch(model, loss_fn)
print("RESULT", json.dumps({"static": static, "transient": hwm() - base}))
"""

CASES = [
    # (name, shape, micro_batch, seq_len, precision, compile, checkpointing)
    ("d4 fp32", dict(depth=4, vocab_size=4096, max_seq_len=256), 8, 256, "32-true", False, {}),
    ("d4 bf16-mixed", dict(depth=4, vocab_size=4096, max_seq_len=256), 8, 256, "bf16-mixed", False, {}),
    ("d4 fp32 full ckpt", dict(depth=4, vocab_size=4096, max_seq_len=256), 8, 256, "32-true", False, {"mode": "full"}),
    ("d4 fp32 selective", dict(depth=4, vocab_size=4096, max_seq_len=256), 8, 256, "32-true", False, {"mode": "selective"}),
    ("d2 fp32 vocab 16k", dict(depth=2, vocab_size=16384, max_seq_len=128), 16, 128, "32-true", False, {}),
    ("d4 fp32 compiled", dict(depth=4, vocab_size=4096, max_seq_len=256), 8, 256, "32-true", True, {}),
]


def spec(case) -> dict:
    name, shape, micro_batch, seq_len, precision, compile, checkpointing = case
    return dict(name=name, shape=shape, micro_batch=micro_batch, seq_len=seq_len, precision=precision,
                compile=compile, checkpointing=checkpointing)


def measure(case_spec: dict) -> dict:
    """Static and transient bytes measured in a fresh process (see the module docstring)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "1"}
    result = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(case_spec)], env=env, capture_output=True,
                            text=True, timeout=900)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def predict(case_spec: dict) -> dict:
    from flightmind.model import GPTConfig
    from flightmind.training.parallel import ActivationCheckpointing
    from flightmind.training.plan import Setup, plan

    setup = Setup(GPTConfig(**case_spec["shape"]), case_spec["micro_batch"], case_spec["seq_len"],
                  precision=case_spec["precision"], compile=case_spec["compile"],
                  checkpointing=ActivationCheckpointing(**case_spec["checkpointing"]), accelerator="cpu")
    p = plan(setup, None)
    static = sum(p.parts[k] for k in ("parameters", "gradients", "AdamW state"))
    return {"static": static, "transient": p.peak - static, "parts": p.parts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="directory for plan_check.txt")
    parser.add_argument("--cases", nargs="*", help="names of the cases to run (default: all)")
    args = parser.parse_args(argv)
    import torch

    lines = [
        f"# planner vs measured on the CPU (resident memory, mmap threshold 64 KiB); torch {torch.__version__}",
        "# command: python benchmarks/plan_check.py",
        "| case | static planned MiB | static measured MiB | transient planned MiB | transient measured MiB | total planned/measured |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    results = {}
    for case in CASES:
        s = spec(case)
        if args.cases and s["name"] not in args.cases:
            continue
        measured, planned = measure(s), predict(s)
        results[s["name"]] = {"measured": measured, "planned": {k: v for k, v in planned.items() if k != "parts"}}
        ratio = (planned["static"] + planned["transient"]) / (measured["static"] + measured["transient"])
        mib = lambda v: f"{v / 2**20:,.1f}"  # noqa: E731
        lines.append(f"| {s['name']} | {mib(planned['static'])} | {mib(measured['static'])} | {mib(planned['transient'])} "
                     f"| {mib(measured['transient'])} | {ratio:.3f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    print(json.dumps(results))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "plan_check.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
