"""How long a checkpoint save holds training up: synchronous against ``checkpoint.asynchronous``.

A real checkpoint of a model after one AdamW step (weights, both moments, the loop's metadata) is
saved through ``AtomicCheckpointIO`` as ``flightmind fit`` saves it. Synchronous: the call returns
when the file is written, fsynced and renamed. Asynchronous: when the tensors are copied to host
memory (reused buffers after the first save); the write goes on in the background, timed to its end
too. Median of ``--repeat`` saves each, after one untimed save per mode (first allocation):

    python benchmarks/checkpoint_save.py --depth 8 --repeat 3     # d8: 50M parameters, ≈ 0.6 GB
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import QuietCPUs, report_header, write_report  # noqa: E402

from flightmind.model import GPT, GPTConfig  # noqa: E402
from flightmind.training.checkpoint_io import AtomicCheckpointIO  # noqa: E402


def checkpoint_of(depth: int) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=depth, vocab_size=32768, max_seq_len=256))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randint(0, 32768, (1, 16))).float().mean().backward()
    optimizer.step()
    return {
        "global_step": 1,
        "state_dict": model.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "model_config": model.config.to_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"completed": 0}}}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary directory)")
    parser.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for a quiet CPU before each run")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="flightmind-ckpt-bench-", dir=args.dir))
    checkpoint = checkpoint_of(args.depth)
    size_on_disk = None
    quiet = QuietCPUs(args.max_wait)
    blocked: dict[str, list[float]] = {"synchronous": [], "asynchronous": []}
    until_written: list[float] = []
    for mode in blocked:
        io = AtomicCheckpointIO(asynchronous=mode == "asynchronous")
        for i in range(args.repeat + 1):
            path = directory / f"step_{i}.ckpt"
            quiet.wait()
            start = time.perf_counter()
            io.save_checkpoint(checkpoint, path)
            returned = time.perf_counter()
            io.wait()
            done = time.perf_counter()
            size_on_disk = path.stat().st_size
            path.unlink()
            if i:  # the first save of each mode allocates (host buffers, page cache)
                blocked[mode].append(returned - start)
                if mode == "asynchronous":
                    until_written.append(done - start)
        io.teardown()
    directory.rmdir()
    sync, asynchronous = (statistics.median(blocked[m]) for m in blocked)
    lines = report_header(
        "checkpoint save: time training is held up, synchronous against checkpoint.asynchronous",
        packages=("torch", "lightning"),
        machine_notes=f", {torch.get_num_threads()} torch threads",
    )
    lines += [
        f"d{args.depth}: {sum(t.numel() for t in checkpoint['state_dict'].values()):,} parameters, "
        f"checkpoint {size_on_disk / 1e9:.2f} GB on disk; median of {args.repeat} saves per mode",
        quiet.note(),
        "",
        f"{'':34}{'seconds':>10}",
        f"{'synchronous save (blocks)':34}{sync:10.3f}",
        f"{'asynchronous save (blocks)':34}{asynchronous:10.3f}",
        f"{'asynchronous, until written':34}{statistics.median(until_written):10.3f}",
        f"{'ratio blocked (async / sync)':34}{asynchronous / sync:10.3f}",
    ]
    write_report(lines, "checkpoint_save.txt")


if __name__ == "__main__":
    main()
