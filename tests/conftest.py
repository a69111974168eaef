import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# One intra-op thread per process, set before torch is imported (here, and inherited by every
# subprocess and rank): the suite's processes share 2 cores with DataLoader workers, other ranks and
# other jobs, and two OpenMP threads that must meet at every op's barrier slow down several-fold as soon
# as one of them waits for a core (a 2-worker smoke run: 95 s at 2 threads, 24 s at 1, load 3.8).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(os.environ.get("FLIGHTMIND_SHARED_DATA") or REPO.parent / "shared" / "data")  # a worktree may set it


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """The demo corpus prepared with a small vocabulary: real shards for training tests."""
    from flightmind.demo.corpus import build_demo_corpus
    from flightmind.data.prepare import prepare

    root = tmp_path_factory.mktemp("prepared")
    corpus = build_demo_corpus(root / "corpus", aviation_docs=300, general_docs=100)
    prepare(
        [*corpus["aviation"], *corpus["general"]],
        root / "data",
        vocab_size=1024,
        val_fraction=0.05,
        workers=1,
        progress=False,
    )
    return root / "data"


@pytest.fixture(scope="session")
def chat_tokenizer_path(tmp_path_factory) -> Path:
    """A small BPE (vocab 512, the five special tokens at ids 0–4) trained on synthetic commands."""
    from flightmind.data.commands import generate_commands
    from flightmind.data.tokenizer import save_tokenizer, train_tokenizer

    texts = [m["content"] for record in generate_commands(600, seed=7) for m in record["messages"]]
    path = tmp_path_factory.mktemp("chat_tokenizer") / "tokenizer.json"
    save_tokenizer(train_tokenizer(texts, vocab_size=512), path)
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The README's smoke command, offline, from an empty directory; run once per test session.

    Tests that only read its outputs (event files, checkpoints) share it; tests that add to it (a
    resumed run) must leave lightning_logs/version_0 and best.ckpt as they are, and tests that train
    from its checkpoint copy what they need into a directory of their own."""
    from tests.helpers import flightmind

    cwd = tmp_path_factory.mktemp("smoke")
    result = flightmind("fit", "-c", REPO / "configs" / "smoke.yaml", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result


@pytest.fixture(autouse=True)
def _quiet_tokenizers(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))


@pytest.fixture(scope="session")
def tagged_texts(shared_data) -> list[str]:
    """Every document of ../shared/data (aviation and general), each opening with the tag "[doc N]"."""
    from flightmind.data.documents import iter_documents

    texts = [doc.text for path in sorted(shared_data.glob("*/*.jsonl")) for doc in iter_documents(path)]
    return [f"[doc {i}] {text}" for i, text in enumerate(texts)]


@pytest.fixture(scope="session")
def write_parquet_pool():
    """write(directory, texts, files, row_group_size) -> the paths of `files` parquet files holding the
    texts in order (column "text", plus "id"), as a local stand-in for a hub dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(directory: Path, texts: list, files: int = 3, row_group_size: int = 300) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        per_file = -(-len(texts) // files)
        paths = []
        for n in range(files):
            chunk = texts[n * per_file : (n + 1) * per_file]
            path = directory / f"part-{n:02d}.parquet"
            table = pa.table({"id": list(range(n * per_file, n * per_file + len(chunk))), "text": chunk})
            pq.write_table(table, path, row_group_size=row_group_size)
            paths.append(str(path))
        return paths

    return write


@pytest.fixture(scope="session")
def demo_tagged_texts(prepared_dir) -> list[str]:
    """Every document of the generated demo corpus behind ``prepared_dir``, each opening with the tag
    "[doc N]": tagged documents on any machine (a fresh clone has no ../shared)."""
    from flightmind.data.documents import iter_documents

    paths = sorted((prepared_dir.parent / "corpus").glob("*/*.jsonl"))
    return [f"[doc {i}] {doc.text}" for i, doc in enumerate(d for path in paths for d in iter_documents(path))]
