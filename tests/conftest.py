import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """The demo corpus prepared with a small vocabulary: real shards for training tests."""
    from flightmind.data.demo import build_demo_corpus
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


@pytest.fixture(autouse=True)
def _quiet_tokenizers(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))


def flightmind(*args, cwd):
    """`flightmind ARGS…` in a subprocess, running this checkout's package whatever is installed."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "flightmind.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The README's smoke command, offline, from an empty directory; run once per test session.

    Tests that only read its outputs (event files, checkpoints) share it; tests that add to it
    (a resumed run) must leave lightning_logs/version_0 and best.ckpt as they are.
    """
    cwd = tmp_path_factory.mktemp("smoke")
    result = flightmind("fit", "-c", REPO / "configs" / "smoke.yaml", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, result
