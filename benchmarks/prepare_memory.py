"""Peak memory of `flightmind prepare`: does it stay flat as the corpus grows?

    python benchmarks/prepare_memory.py [--workers 2] [--copies 4 16]

Runs `python -m flightmind.data.prepare` as a child process on the corpus
(/work/shared/data/{aviation,general}/*.jsonl, 4 files) and on one file holding --copies copies
of it, and reports the peak resident memory of the whole process tree (the main process plus its
tokenizing workers), sampled from /proc every 10 ms, and the largest single process (ru_maxrss of
the reaped children). Both modes are measured: with a given tokenizer (the streaming tokenizing
pass alone) and training the tokenizer first (BPE training keeps one count per distinct word, so it
grows with the vocabulary of the corpus, not with repeated text). Ratios near 1 mean memory does
not grow with corpus size.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, SHARED_DATA, report_header, write_report

sys.path.insert(0, str(REPO_ROOT))  # this checkout's flightmind

from flightmind.data.documents import iter_documents  # noqa: E402
from flightmind.data.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def process_tree(root: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except OSError:  # the process just ended
        return 0


# A small parent whose RUSAGE_CHILDREN covers exactly the measured command and its workers.
REPORT_MAXRSS = (
    "import json, resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr)"
)


def measure(command: list[str]) -> dict:
    """Run command; return the peak summed RSS of its process tree and the largest process's ru_maxrss."""
    start = time.perf_counter()
    # A file, not a pipe: nobody reads the progress bar while the command runs.
    stderr_file = tempfile.TemporaryFile()
    child = subprocess.Popen([sys.executable, "-c", REPORT_MAXRSS, *command], cwd=REPO_ROOT, stderr=stderr_file)
    peak_tree, peak_processes = 0, 0
    while child.poll() is None:
        pids = process_tree(child.pid)[1:]
        peak_tree = max(peak_tree, sum(resident_bytes(pid) for pid in pids))
        peak_processes = max(peak_processes, len(pids))
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    stderr_file.seek(0)
    stderr = stderr_file.read().decode(errors="replace")
    if child.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{stderr}")
    return {
        "tree": peak_tree,
        "largest": json.loads(stderr.strip().splitlines()[-1]) * 1024,
        "processes": peak_processes,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--copies", type=int, nargs="+", default=[4, 16], help="sizes of the grown corpus, in copies")
    args = parser.parse_args()

    sources = sorted(SHARED_DATA.glob("aviation/*.jsonl")) + sorted(SHARED_DATA.glob("general/*.jsonl"))
    if not sources:
        sys.exit(f"no corpus at {SHARED_DATA}")
    lines = [
        *report_header(
            "prepare memory: peak resident memory of `python -m flightmind.data.prepare` (main + workers)",
            packages=("torch", "tokenizers"),
        ),
        "",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        corpus = b"".join(path.read_bytes() for path in sources)
        grown = {}
        for copies in args.copies:
            grown[copies] = scratch / f"corpus_x{copies}.jsonl"
            grown[copies].write_bytes(corpus * copies)
        tokenizer_path = scratch / "tokenizer.json"
        save_tokenizer(train_tokenizer((doc.text for path in sources for doc in iter_documents(path)), 32768), tokenizer_path)

        header = f"{'mode':<20} {'input':<22} {'MiB in':>7} {'tree peak MiB':>14} {'largest MiB':>12} {'procs':>6} {'s':>6} {'ratio':>6}"
        lines.append(header)
        for mode, extra in [("given tokenizer", ["--tokenizer", str(tokenizer_path)]), ("training tokenizer", [])]:
            baseline = None
            for label, inputs in [("corpus (4 files)", sources), *((f"{c} copies (1 file)", [grown[c]]) for c in args.copies)]:
                command = [
                    sys.executable, "-m", "flightmind.data.prepare", "--input", *map(str, inputs),
                    "--out", str(scratch / "out"), "--workers", str(args.workers), *extra,
                ]
                result = measure(command)
                baseline = baseline or result["tree"]
                size = sum(path.stat().st_size for path in inputs) / 2**20
                lines.append(
                    f"{mode:<20} {label:<22} {size:>7.1f} {result['tree'] / 2**20:>14.0f} {result['largest'] / 2**20:>12.0f} "
                    f"{result['processes']:>6} {result['seconds']:>6.1f} {result['tree'] / baseline:>6.2f}"
                )
                print(lines[-1], file=sys.stderr)
    lines += [
        "",
        "tree peak: the largest sum of RSS over the main process and all its descendants (sampled every 10 ms);",
        "pages shared between forked workers count once per process, so this overstates the real footprint.",
        "largest: the largest ru_maxrss of a single process of the tree (a forked worker's includes the pages it",
        "shares with the main process). procs: main + workers (+ the resource tracker, if any).",
        "ratio: tree peak against the 4-file corpus in the same mode.",
    ]
    write_report(lines, "prepare_memory.txt")


if __name__ == "__main__":
    main()
