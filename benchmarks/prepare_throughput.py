"""Tokens per second of `flightmind prepare` against bare `Tokenizer.encode_batch`, same texts, same cores.

    python benchmarks/prepare_throughput.py [--repeat 16] [--reps 5] [--workers 1 2]

The corpus is /work/shared/data/{aviation,general}/*.jsonl (../shared/data from the repo root),
each file repeated --repeat times so that fixed costs (starting worker processes, loading the
tokenizer) weigh what they would on a real corpus. A 32,768-token BPE is trained once beforehand.

- prepare: the whole `prepare()` call (reading, validation, split, tokenizing in N worker
  processes, writing and syncing shards and meta.json), given the trained tokenizer.
- encode_batch: one `encode_batch` call over the same valid texts, in a fresh process with
  RAYON_NUM_THREADS=N (rayon reads it once, when its thread pool starts). Its BPE cache starts
  cold, as in prepare's fresh workers.

Both count the document tokens only (not the <|endoftext|> separators prepare adds). The two sides
alternate, each run waiting (up to --max-wait s) for the CPUs to be idle first, because a shared
machine's other work would otherwise land on one side only. tok/s are medians over --reps runs;
ratio is the median of the per-pair ratios prepare / encode_batch (aim: at least 0.9).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, SHARED_DATA, QuietCPUs, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

import tokenizers  # noqa: E402

from flightmind.data.documents import iter_documents  # noqa: E402
from flightmind.data.prepare import prepare  # noqa: E402
from flightmind.data.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402


def repeated_corpus(directory: Path, repeat: int) -> list[Path]:
    sources = sorted(SHARED_DATA.glob("aviation/*.jsonl")) + sorted(SHARED_DATA.glob("general/*.jsonl"))
    if not sources:
        sys.exit(f"no corpus at {SHARED_DATA}")
    copies = []
    for source in sources:
        copy = directory / source.name
        data = source.read_bytes()
        copy.write_bytes(data * repeat)
        copies.append(copy)
    return copies


def encode_only(tokenizer_path: str, inputs: list[str]) -> None:
    """Child process: time one bare encode_batch; RAYON_NUM_THREADS is already in the environment."""
    texts = [doc.text for path in inputs for doc in iter_documents(path)]
    tokenizer = tokenizers.Tokenizer.from_file(tokenizer_path)
    tokenizer.encode_batch(["start rayon's thread pool"] * 64)  # outside the timing; the BPE cache stays cold, as in prepare's fresh workers
    start = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": sum(len(encoding.ids) for encoding in encodings), "documents": len(texts)}))


def time_encode_batch(tokenizer_path: Path, inputs: list[Path], workers: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers), TOKENIZERS_PARALLELISM="true")
    command = [sys.executable, __file__, "--encode-only", str(tokenizer_path), *map(str, inputs)]
    result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def time_prepare(tokenizer_path: Path, inputs: list[Path], workers: int, out: Path) -> dict:
    start = time.perf_counter()
    meta = prepare(inputs, out, tokenizer=tokenizer_path, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    documents = meta["train"]["documents"] + meta["val"]["documents"]
    return {"seconds": seconds, "tokens": meta["total_tokens"] - documents, "documents": documents}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=16, help="copies of each corpus file (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-wait", type=float, default=60, help="seconds to wait for idle CPUs before each timed run")
    parser.add_argument("--encode-only", nargs="+", metavar=("TOKENIZER", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encode_only:
        encode_only(args.encode_only[0], args.encode_only[1:])
        return

    lines = report_header(
        "prepare throughput: flightmind prepare vs bare Tokenizer.encode_batch (tokens/s, median)",
        packages=("torch", "tokenizers"),
    )
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        inputs = repeated_corpus(scratch, args.repeat)
        corpus_bytes = sum(path.stat().st_size for path in inputs)
        tokenizer_path = scratch / "tokenizer.json"
        save_tokenizer(train_tokenizer((doc.text for path in inputs for doc in iter_documents(path)), 32768), tokenizer_path)
        lines.append(
            f"corpus: {len(inputs)} files from {SHARED_DATA} x {args.repeat} = {corpus_bytes / 2**20:.1f} MiB; "
            f"32,768-token BPE; {args.reps} reps"
        )
        lines.append("")
        lines.append(f"{'N':>3} {'documents':>10} {'tokens':>11} {'prepare tok/s':>14} {'encode_batch tok/s':>19} {'ratio':>6}")
        quiet, runs = QuietCPUs(args.max_wait), []
        for workers in args.workers:
            raw_seconds, our_seconds = [], []
            for rep in range(args.reps):
                # Alternate the two sides so that a busy spell on a shared machine hits both alike.
                quiet.wait()
                raw = time_encode_batch(tokenizer_path, inputs, workers)
                quiet.wait()
                ours = time_prepare(tokenizer_path, inputs, workers, scratch / "out")
                assert raw["tokens"] == ours["tokens"] and raw["documents"] == ours["documents"], (raw, ours)
                raw_seconds.append(raw["seconds"])
                our_seconds.append(ours["seconds"])
            raw_speed = raw["tokens"] / statistics.median(raw_seconds)
            our_speed = ours["tokens"] / statistics.median(our_seconds)
            ratio = statistics.median(r / o for r, o in zip(raw_seconds, our_seconds))
            lines.append(
                f"{workers:>3} {ours['documents']:>10,} {ours['tokens']:>11,} {our_speed:>14,.0f} {raw_speed:>19,.0f} "
                f"{ratio:>6.2f}"
            )
            runs.append(
                f"N={workers}: prepare s {' '.join(f'{x:.2f}' for x in our_seconds)} | "
                f"encode_batch s {' '.join(f'{x:.2f}' for x in raw_seconds)}"
            )
            print(lines[-1], runs[-1], sep="\n", file=sys.stderr)
        lines += ["", "runs, in order (pairs alternate encode_batch, prepare):", *runs, ""]
        lines.append(quiet.note())
    write_report(lines, "prepare_throughput.txt")


if __name__ == "__main__":
    main()
