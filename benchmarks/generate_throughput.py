"""Decoding speed of `flightmind generate`: tokens per second with the KV cache and without it.

    python benchmarks/generate_throughput.py [--depth 4] [--new-tokens 512] [--reps 3] [--threads N]

A d4 GPT (vocabulary 32,768, max_seq_len 2048, random weights: speed does not depend on what the
model learned) continues a 16-token prompt greedily for --new-tokens tokens on the CPU, through
`flightmind.model.generate.generate`, the loop `flightmind generate` runs (the command adds only
the decoding of tokens to text). Without the cache every token recomputes the whole context;
with it, every token is one position. Both must produce the same tokens (checked). Each figure is
the median of --reps runs, the two sides alternating so that a busy spell on a shared machine hits
both alike. On a CPU shared with other programs, --threads 1 gives steadier figures: a parallel
kernel waits for its slowest thread, and a busy machine deschedules threads.
"""

import argparse
import statistics
import sys
import time

from _common import REPO_ROOT, QuietCPUs, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

import torch  # noqa: E402

from flightmind.model import GPT, GPTConfig  # noqa: E402
from flightmind.model.generate import generate  # noqa: E402


def timed(model: GPT, prompt: list[int], new_tokens: int, use_cache: bool) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = list(generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache))
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3, help="timed runs per side; the median is reported")
    parser.add_argument("--max-wait", type=float, default=30, help="seconds to wait for idle CPUs before each timed run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = GPTConfig.from_depth(args.depth, max_seq_len=2048)
    model = GPT(config).eval()
    prompt = torch.randint(5, config.vocab_size, (16,)).tolist()
    timed(model, prompt, 8, use_cache=True)  # warm-up: first-call allocations
    seconds = {True: [], False: []}
    outputs = {}
    quiet = QuietCPUs(args.max_wait)
    for _ in range(args.reps):
        for use_cache in (True, False):
            quiet.wait()
            elapsed, tokens = timed(model, prompt, args.new_tokens, use_cache)
            seconds[use_cache].append(elapsed)
            outputs[use_cache] = tokens
            print(f"cache={use_cache}: {elapsed:.2f} s", file=sys.stderr)
    assert outputs[True] == outputs[False] and len(outputs[True]) == args.new_tokens, "cached and uncached differ"

    speed = {use_cache: args.new_tokens / statistics.median(s) for use_cache, s in seconds.items()}
    lines = [
        *report_header(
            "generate throughput: greedy continuation with and without the KV cache (tokens/s, median)",
            packages=("torch",),
            machine_notes=f", CPU, {torch.get_num_threads()} torch threads",
        ),
        f"model: d{config.depth} ({config.num_params() / 1e6:.1f}M parameters), vocab {config.vocab_size:,}, "
        f"fp32; prompt 16 tokens + {args.new_tokens} new; {args.reps} reps; identical tokens both ways: yes",
        "",
        f"{'':<10} {'tokens/s':>10} {'seconds (each rep)':>30}",
        f"{'KV cache':<10} {speed[True]:>10.1f} {', '.join(f'{s:.2f}' for s in seconds[True]):>30}",
        f"{'no cache':<10} {speed[False]:>10.1f} {', '.join(f'{s:.2f}' for s in seconds[False]):>30}",
        f"ratio (cache / no cache): {speed[True] / speed[False]:.1f}",
        "",
        quiet.note(),
    ]
    write_report(lines, "generate_throughput.txt")


if __name__ == "__main__":
    main()
