"""Memory of the next-token loss, eager against compiled (``PretrainModule(compile=True)`` compiles it).

Eager, ``cross_entropy(logits.float())`` materializes fp32 copies of the logits (the upcast, the
log-probabilities, their gradient); compiled, one fused kernel reads the bf16 logits and writes their
bf16 gradient. Each mode runs in a fresh process on the CPU and reports how much its peak resident
memory grows during one forward + backward of the loss; the loss values must agree.

    python benchmarks/loss_memory.py [--positions 4096] [--vocab 32768]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

from _common import REPO_ROOT, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

import torch  # noqa: E402

from flightmind.training.causal_lm import cross_entropy  # noqa: E402


def measure(mode: str, positions: int, vocab: int) -> None:
    loss_fn = torch.compile(cross_entropy) if mode == "compiled" else cross_entropy
    if mode == "compiled":  # compile first, on small inputs, so that compilation is not counted
        for n in (8, 16):
            loss_fn(torch.randn(1, n, vocab, dtype=torch.bfloat16, requires_grad=True), torch.randint(0, vocab, (1, n))).backward()
    torch.manual_seed(0)
    logits = torch.randn(1, positions, vocab, dtype=torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab, (1, positions))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = loss_fn(logits, targets)
    loss.backward()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    print(f"{grown / 1024:.0f} {loss.item():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--mode", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return measure(args.mode, args.positions, args.vocab)
    results = {}
    for mode in ("eager", "compiled"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--positions", str(args.positions), "--vocab", str(args.vocab)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        results[mode] = (float(out[-2]), float(out[-1]))
    logits_mib = args.positions * args.vocab * 2 / 2**20
    lines = report_header("loss memory: next-token loss, eager against compiled, on the CPU", packages=("torch",))
    lines += [
        f"{args.positions} positions × {args.vocab} vocabulary: bf16 logits {logits_mib:.0f} MiB",
        "",
        f"{'loss':<10}{'peak growth (MiB)':>20}{'bytes per logit':>18}{'loss value':>14}",
        *(
            f"{mode:<10}{mib:>20.0f}{mib * 2**20 / (args.positions * args.vocab):>18.1f}{value:>14.6f}"
            for mode, (mib, value) in results.items()
        ),
        f"ratio (eager / compiled): {results['eager'][0] / results['compiled'][0]:.1f}",
    ]
    write_report(lines, "loss_memory.txt")

if __name__ == "__main__":
    main()
