"""General-pool streaming against bare `Tokenizer.encode_batch`, and the mixed loader against a d4 CPU step.

    python benchmarks/streaming_throughput.py [--repeat 32] [--reps 3] [--workers 0 1 2]

Corpus: /work/shared/data/{aviation,general}/*.jsonl (../shared/data from the repo root), repeated
--repeat times and written as 4 local parquet files (row groups of 500 documents); a 32,768-token
BPE is trained on it once beforehand.

1. Packer, tokens/s. `MixedLoader` at aviation_ratio 0 (the general stream alone) with N DataLoader
   workers (N readers, each with its own row groups; N=0: the main process), micro-batches of
   8 × 2,049 tokens, shuffle buffer 10,000: the training path end to end, start-up included
   (workers, opening the pool, filling the buffer). Tokens are windows × seq_len delivered over ~95 %
   of one pass.
   encode_batch, tokens/s: one bare `encode_batch` over the same documents in a fresh process with
   RAYON_NUM_THREADS=N (N=0: rayon's default pool, which the packer also gets in the main process),
   counting ids plus one separator per document, as the packed stream holds them.
   The ratio packer / encode_batch is the share of the tokenizer's own speed that streaming
   delivers; the aim is at least 0.8. "first s" is the time to the first micro-batch (start-up and
   the first fill of 256 ready windows); "ratio after" leaves it out: the rate of a long run, where
   start-up weighs nothing (this corpus is one pass of a few seconds).
2. Mixed loader against training. `MixedLoader` at aviation_ratio 0.30 (aviation shards prepared from
   the same corpus), 2,000 micro-batches of 8 × 257 as in smoke.yaml, sequences/s, against the
   sequences/s the fastest of 8 d4 steps (forward, backward, AdamW) consumes on this CPU with its
   default threads. Above 1, the loader is not what the step waits for (with N ≥ 1 the workers then
   share the cores with the step).

Each figure is the median of --reps runs, each started once the CPUs are idle (see --max-wait).
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, SHARED_DATA, QuietCPUs, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flightmind.data.documents import iter_documents  # noqa: E402
from flightmind.data.mixing import MixedBatches, MixedLoader, exact_ratio  # noqa: E402
from flightmind.data.prepare import prepare  # noqa: E402
from flightmind.data.sequences import PackedSequences  # noqa: E402
from flightmind.data.streaming import GeneralPool, open_general_pool  # noqa: E402
from flightmind.data.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402
from flightmind.model import GPT, GPTConfig  # noqa: E402

BATCH, SEQ_LEN, SMOKE_SEQ_LEN = 8, 2048, 256
MIXED_BATCHES = 2000  # 16,000 sequences: start-up (workers, buffer) weighs little


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


def mixed_loader(files, tokenizer_path, aviation, *, ratio, workers, length, shuffle=True) -> MixedLoader:
    stream = open_general_pool(GeneralPool(path="parquet", data_files=files), readers=max(1, workers), seed=0, shuffle=shuffle)
    data = MixedBatches(
        aviation, stream, tokenizer_path, length=length, batch_size=BATCH, ratio=exact_ratio(ratio),
        seed=0, shuffle=shuffle, workers=workers,
    )
    return MixedLoader(data, num_workers=workers)


def time_loader(loader: MixedLoader) -> tuple[float, float]:
    """Seconds from iter() (start-up included) to the last batch, and to the first."""
    start = time.perf_counter()
    first = None
    for _ in loader:
        first = first or time.perf_counter() - start
    return time.perf_counter() - start, first


def time_d4_step(reps: int = 8) -> float:
    """Seconds of the fastest d4 training step (forward, backward, AdamW) on a micro-batch of 8 × 256:
    the hungriest the loader has to keep up with."""
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
        if i >= 2:  # the first steps allocate
            seconds.append(time.perf_counter() - start)
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=32, help="copies of the corpus (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per figure; the median is reported")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-wait", type=float, default=30, help="seconds to wait for idle CPUs before each timed run")
    parser.add_argument("--encode-only", nargs="+", metavar=("TOKENIZER", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.encode_only:
        encode_only(args.encode_only[0], args.encode_only[1:])
        return

    lines = report_header(
        "streaming throughput: general-pool packer vs bare Tokenizer.encode_batch; mixed loader vs a d4 CPU step",
        packages=("torch", "tokenizers", "datasets", "pyarrow"),
    )
    quiet = QuietCPUs(args.max_wait)
    idle = quiet.wait

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files, aviation_files = corpus(scratch, args.repeat)
        texts = itertools.chain.from_iterable(pq.read_table(f, columns=["text"]).column("text").to_pylist() for f in files)
        tokenizer_path = scratch / "tokenizer.json"
        save_tokenizer(train_tokenizer(texts, 32768), tokenizer_path)
        corpus_bytes = sum(Path(f).stat().st_size for f in files)
        lines.append(
            f"corpus: {SHARED_DATA}/*/*.jsonl x {args.repeat} as 4 parquet files ({corpus_bytes / 2**20:.1f} MiB, "
            f"row groups of 500); 32,768-token BPE; {args.reps} reps"
        )
        prepare(aviation_files, scratch / "aviation", tokenizer=tokenizer_path, val_fraction=0, progress=False)
        shard = scratch / "aviation" / "train.bin"
        lines += ["", "1. packer (MixedLoader at ratio 0, 8 x 2049, shuffle buffer 10,000, start-up included) vs encode_batch, tokens/s",
                  f"{'N':>3} {'tokens':>11} {'packer tok/s':>13} {'encode_batch tok/s':>19} {'ratio':>6} {'first s':>8} {'ratio after':>12}"]
        for workers in args.workers:
            raw, ours, firsts = [], [], []
            for _ in range(args.reps):
                idle()
                result = time_encode_batch(tokenizer_path, files, workers)
                raw.append(result["seconds"])
                total = result["tokens"]
                length = int(0.95 * total / (BATCH * SEQ_LEN))
                loader = mixed_loader(files, tokenizer_path, PackedSequences(shard, SEQ_LEN), ratio=0, workers=workers, length=length)
                idle()
                seconds, first = time_loader(loader)
                ours.append(seconds)
                firsts.append(first)
            raw_rate = total / statistics.median(raw)
            our_rate = length * BATCH * SEQ_LEN / statistics.median(ours)
            first = statistics.median(firsts)
            after = (length - 1) * BATCH * SEQ_LEN / (statistics.median(ours) - first)
            lines.append(
                f"{workers:>3} {total:>11,} {our_rate:>13,.0f} {raw_rate:>19,.0f} {our_rate / raw_rate:>6.2f} "
                f"{first:>8.2f} {after / raw_rate:>12.2f}"
            )
            print(lines[-1], flush=True)

        aviation = PackedSequences(shard, SMOKE_SEQ_LEN)
        idle()
        step = time_d4_step()
        consumed = BATCH / step
        lines += ["", f"2. mixed loader (ratio 0.30, {MIXED_BATCHES:,} x 8 x 257) vs the fastest d4 step on 8 x 256 ({step * 1000:.0f} ms: {consumed:.1f} sequences/s)",
                  f"{'N':>3} {'loader seq/s':>13} {'loader / step':>14}"]
        for workers in args.workers:
            seconds = []
            for _ in range(args.reps):
                loader = mixed_loader(files, tokenizer_path, aviation, ratio=0.3, workers=workers, length=MIXED_BATCHES)
                idle()
                seconds.append(time_loader(loader)[0])
            rate = MIXED_BATCHES * BATCH / statistics.median(seconds)
            lines.append(f"{workers:>3} {rate:>13,.0f} {rate / consumed:>14.1f}")
            print(lines[-1], flush=True)
    lines += ["", quiet.note()]
    write_report(lines, "streaming_throughput.txt")

if __name__ == "__main__":
    main()
