"""How many graphs torch.compile makes of the GPT under DDP: whole-model against per-block compile.

Dynamo's DDP optimizer cuts a compiled graph wherever DDP's gradient buckets end (the first bucket
is 1 MiB), so a whole-model compile under DDP becomes many small graphs (less fusion, longer
compile). Per-block compile (flightmind.training.parallel.compile_blocks) traces one block, which
every block reuses; with buckets at least a block's fp32 gradients it is cut once (the first bucket).
Counted with Dynamo's ``CompileCounter`` backend (graphs handed to the backend; nothing is compiled),
one gloo process, one forward and backward on the CPU at sequence 16:

    python benchmarks/ddp_graphs.py --depth 24 [--out benchmarks/results]     # ≈ 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from flightmind.model import GPT, GPTConfig  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_gloo() -> None:
    """A one-process gloo group: DDP (and so Dynamo's DDP optimizer) needs one."""
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        dist.init_process_group("gloo", rank=0, world_size=1)


def count_graphs(config: GPTConfig, per_block: bool, bucket_cap_mb: float, seq_len: int = 16) -> int:
    """Graphs Dynamo hands to the backend for one forward + backward of the DDP-wrapped GPT."""
    from torch._dynamo.testing import CompileCounter

    init_gloo()
    torch._dynamo.reset()
    counter = CompileCounter()
    model = GPT(config)
    if per_block:
        for block in model.blocks:
            block.compile(backend=counter)
    else:
        model.compile(backend=counter)
    ddp = DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    ddp(torch.randint(0, config.vocab, (1, seq_len))).float().mean().backward()
    return counter.frame_count


def block_gradient_mb(config: GPTConfig) -> float:
    """fp32 gradient MiB of one block: the bucket size that keeps a block's graph whole."""
    block = (config.matmul_params() - config.vocab * config.dim) // config.n_layer + 2 * config.dim
    return block * 4 / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=24)
    parser.add_argument("--buckets", type=float, nargs="+", default=[25, 100, 160, 250])
    parser.add_argument("--out", help="directory for ddp_graphs.txt")
    parser.add_argument("--compile", choices=["whole", "block", "both"], default="both")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "BUCKET_MB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = GPTConfig.from_depth(args.depth, max_seq_len=64)
    if args.one:  # one count, in this (fresh) process
        print("GRAPHS", count_graphs(config, args.one[0] == "block", float(args.one[1])))
        return 0
    lines = [
        f"# graphs of d{args.depth} under DDP (one block: {block_gradient_mb(config):.0f} MiB of fp32 gradients); "
        f"torch {torch.__version__}; python benchmarks/ddp_graphs.py --depth {args.depth}",
        "| compile | bucket_cap_mb | graphs |",
        "|---|---:|---:|",
    ]
    for per_block in {"whole": (False,), "block": (True,), "both": (False, True)}[args.compile]:
        for bucket in args.buckets:
            # A fresh process per count: a d24 model and its gradients are 7.6 GB.
            command = [sys.executable, __file__, "--depth", str(args.depth), "--one", "block" if per_block else "whole", str(bucket)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            graphs = next(line.split()[1] for line in out.splitlines() if line.startswith("GRAPHS"))
            lines.append(f"| {'per block' if per_block else 'whole model'} | {bucket:g} | {graphs} |")
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "ddp_graphs.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
