"""General-pool streaming before and after a change (default: the commit before the exact stream),
against bare `Tokenizer.encode_batch` and a d4 CPU step, all measured in one run.

    python benchmarks/streaming_throughput.py [--before REV] [--repeat 8] [--reps 3] [--workers 0 2]

Corpus: /work/shared/data/{aviation,general}/*.jsonl (../shared/data from the repo root, or
$FLIGHTMIND_SHARED_DATA), repeated --repeat times and written as 4 local parquet files (row groups of
500 documents); a 32,768-token BPE is trained on it once beforehand. The `flightmind` package of --before
is extracted with `git archive`; every timed run is a fresh process importing one of the two trees,
before and after alternating, so that both see the same load.

1. Packer, tokens/s. `MixedLoader` at aviation_ratio 0 (the general stream alone) with N DataLoader
   workers (N=0: the main process), micro-batches of 8 × 2,049 tokens, shuffling on with the default
   10,000 documents (before: each reader's shuffle buffer; after: the block size), over ~95 % of one
   pass, start-up included. "first s": time from iter() to the first micro-batch. encode_batch tok/s:
   one bare `encode_batch` over the same documents with RAYON_NUM_THREADS=N (N=0: rayon's default).
2. Mixed loader, sequences/s: `MixedLoader` at 0.30 (aviation shards prepared from the same corpus),
   2,000 micro-batches of 8 × 257 as in smoke.yaml, against the sequences/s the fastest of 8 d4 steps
   consumes on this CPU.

Each figure is the median of --reps runs. The load average is printed: on a shared machine the figures
are noisy; compare the after/before ratios, measured side by side.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, SHARED_DATA, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flightmind.data.documents import iter_documents  # noqa: E402
from flightmind.data.prepare import prepare  # noqa: E402
from flightmind.data.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402
from flightmind.model import GPT, GPTConfig  # noqa: E402

BATCH, SEQ_LEN, SMOKE_SEQ_LEN = 8, 2048, 256
MIXED_BATCHES = 2000

# Run in a fresh process whose PYTHONPATH holds one of the two trees; prints {"seconds", "first"}.
CHILD = r"""
import inspect, json, sys, time
from flightmind.data.mixing import MixedBatches, MixedLoader, exact_ratio
from flightmind.data.sequences import PackedSequences
from flightmind.data.streaming import GeneralPool, open_general_pool

args = json.loads(sys.argv[1])
workers = args["workers"]
extra = {"readers": max(1, workers)} if "readers" in inspect.signature(open_general_pool).parameters else {}
start = time.perf_counter()
stream = open_general_pool(GeneralPool(path="parquet", data_files=args["files"]), seed=0, shuffle=True, **extra)
data = MixedBatches(
    PackedSequences(args["shard"], args["seq_len"]), stream, args["tokenizer"], length=args["length"],
    batch_size=8, ratio=exact_ratio(args["ratio"]), seed=0, shuffle=True, workers=workers,
)
first = None
for _ in MixedLoader(data, num_workers=workers):
    first = first or time.perf_counter() - start
print(json.dumps({"seconds": time.perf_counter() - start, "first": first}))
"""


def corpus(directory: Path, repeat: int) -> tuple[list[str], list[Path]]:
    """(parquet files of all documents × repeat, the aviation JSONL files × repeat)."""
    sources = sorted(SHARED_DATA.glob("aviation/*.jsonl")) + sorted(SHARED_DATA.glob("general/*.jsonl"))
    if not sources:
        sys.exit(f"no corpus at {SHARED_DATA}")
    texts = [doc.text for path in sources for doc in iter_documents(path)] * repeat
    files = []
    per_file = -(-len(texts) // 4)
    for n in range(4):
        path = directory / f"part-{n}.parquet"
        pq.write_table(pa.table({"text": texts[n * per_file : (n + 1) * per_file]}), path, row_group_size=500)
        files.append(str(path))
    aviation = []
    for source in sources:
        if source.parent.name == "aviation":
            copy = directory / source.name
            copy.write_bytes(source.read_bytes() * repeat)
            aviation.append(copy)
    return files, aviation


def extract(revision: str, directory: Path) -> Path:
    """The flightmind package of ``revision`` under ``directory``."""
    archive = subprocess.run(["git", "archive", revision, "flightmind"], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    directory.mkdir()
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def run_child(tree: Path, **args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), TOKENIZERS_PARALLELISM="true")
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True, text=True, cwd=tree)
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def encode_only(tokenizer_path: str, files: list[str]) -> None:
    """Child process: time one bare encode_batch; RAYON_NUM_THREADS is already in the environment."""
    texts = [text for file in files for text in pq.read_table(file, columns=["text"]).column("text").to_pylist()]
    tokenizer = tokenizers.Tokenizer.from_file(tokenizer_path)
    tokenizer.encode_batch(["start rayon's thread pool"] * 64)
    start = time.perf_counter()
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(encoding.ids) for encoding in encodings) + len(texts)  # + one separator each
    print(json.dumps({"seconds": seconds, "tokens": tokens}))


def time_encode_batch(tokenizer_path: Path, files: list[str], workers: int) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true")
    env.pop("RAYON_NUM_THREADS", None)
    if workers:
        env["RAYON_NUM_THREADS"] = str(workers)
    command = [sys.executable, __file__, "--encode-only", str(tokenizer_path), *files]
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)


def time_d4_step(reps: int = 8) -> float:
    """Seconds of the fastest d4 training step (forward, backward, AdamW) on a micro-batch of 8 × 256."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(4, max_seq_len=SMOKE_SEQ_LEN))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, 32768, (BATCH, SMOKE_SEQ_LEN + 1))
    seconds = []
    for i in range(reps + 2):
        start = time.perf_counter()
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            seconds.append(time.perf_counter() - start)
    return min(seconds)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="a5b4197", help="the revision to compare with (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=8, help="copies of the corpus (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--encode-only", nargs="+", metavar=("TOKENIZER", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encode_only:
        encode_only(args.encode_only[0], args.encode_only[1:])
        return

    lines = report_header(
        f"streaming throughput, before ({args.before}) and after (this tree): general-pool packer vs encode_batch; mixed loader vs a d4 CPU step",
        packages=("torch", "tokenizers", "datasets", "pyarrow"),
    )
    lines.append(f"load average (1/5/15 min) at start: {load()} on {os.cpu_count()} CPUs shared with other programs: figures are noisy, ratios side by side less so")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        trees = {"before": extract(args.before, scratch / "before"), "after": REPO_ROOT}
        files, aviation_files = corpus(scratch, args.repeat)
        texts = itertools.chain.from_iterable(pq.read_table(f, columns=["text"]).column("text").to_pylist() for f in files)
        tokenizer_path = scratch / "tokenizer.json"
        save_tokenizer(train_tokenizer(texts, 32768), tokenizer_path)
        corpus_bytes = sum(Path(f).stat().st_size for f in files)
        lines.append(
            f"corpus: {SHARED_DATA}/*/*.jsonl x {args.repeat} as 4 parquet files ({corpus_bytes / 2**20:.1f} MiB, "
            f"row groups of 500); 32,768-token BPE; {args.reps} reps, before and after alternating"
        )
        prepare(aviation_files, scratch / "aviation", tokenizer=tokenizer_path, val_fraction=0, progress=False)
        shard = str(scratch / "aviation" / "train.bin")
        common = dict(files=files, shard=shard, tokenizer=str(tokenizer_path))

        lines += ["", "1. packer (MixedLoader at ratio 0, 8 x 2049, shuffling on, start-up included), tokens/s",
                  f"{'N':>3} {'tokens':>10} {'encode_batch':>13} {'before':>10} {'after':>10} {'after/before':>13} "
                  f"{'first s before':>15} {'first s after':>14}"]
        for workers in args.workers:
            raw, runs = [], {"before": [], "after": []}
            for _ in range(args.reps):
                result = time_encode_batch(tokenizer_path, files, workers)
                raw.append(result["seconds"])
                total = result["tokens"]
                length = int(0.95 * total / (BATCH * SEQ_LEN))
                for name, tree in trees.items():
                    runs[name].append(run_child(tree, workers=workers, ratio=0, seq_len=SEQ_LEN, length=length, **common))
            rate = {name: length * BATCH * SEQ_LEN / statistics.median(r["seconds"] for r in found) for name, found in runs.items()}
            first = {name: statistics.median(r["first"] for r in found) for name, found in runs.items()}
            lines.append(
                f"{workers:>3} {total:>10,} {total / statistics.median(raw):>13,.0f} {rate['before']:>10,.0f} {rate['after']:>10,.0f} "
                f"{rate['after'] / rate['before']:>13.2f} {first['before']:>15.2f} {first['after']:>14.2f}"
            )
            print(lines[-1], flush=True)

        step = time_d4_step()
        consumed = BATCH / step
        lines += ["", f"2. mixed loader (ratio 0.30, {MIXED_BATCHES:,} x 8 x 257), sequences/s; the fastest d4 step on 8 x 256 "
                  f"takes {step * 1000:.0f} ms ({consumed:.1f} sequences/s)",
                  f"{'N':>3} {'before':>10} {'after':>10} {'after/before':>13} {'after / step':>13}"]
        for workers in args.workers:
            runs = {"before": [], "after": []}
            for _ in range(args.reps):
                for name, tree in trees.items():
                    runs[name].append(run_child(tree, workers=workers, ratio=0.3, seq_len=SMOKE_SEQ_LEN, length=MIXED_BATCHES, **common))
            rate = {name: MIXED_BATCHES * BATCH / statistics.median(r["seconds"] for r in found) for name, found in runs.items()}
            lines.append(f"{workers:>3} {rate['before']:>10,.0f} {rate['after']:>10,.0f} {rate['after'] / rate['before']:>13.2f} {rate['after'] / consumed:>13.1f}")
            print(lines[-1], flush=True)
    lines += ["", f"load average (1/5/15 min) at the end: {load()}"]
    write_report(lines, "streaming_throughput.txt")


if __name__ == "__main__":
    main()
