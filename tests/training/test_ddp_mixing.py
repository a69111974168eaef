"""Two DDP ranks on the CPU (gloo) train on disjoint general documents and different aviation sequences,
and a resumed DDP run continues each rank's data exactly."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flightmind.data.mixing import exact_ratio, is_aviation
from flightmind.contracts import load_tokenizer
from tests.training import ddp_mixed_run as script

REPO = Path(__file__).resolve().parents[2]
TAG = re.compile(r"\[doc (\d+)\]")


@pytest.mark.slow
def test_two_ddp_ranks_mix_disjoint_general_documents_and_different_aviation_sequences_and_resume_exactly(
    tmp_path, prepared_dir, tagged_texts, write_parquet_pool
):
    write_parquet_pool(tmp_path / "pool", tagged_texts, files=3, row_group_size=200)  # 3 files, 2 ranks: resharded
    out = tmp_path / "out"
    out.mkdir()
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, script.__file__, prepared_dir, tmp_path / "pool", out],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    ratio = exact_ratio(script.RATIO)
    documents, aviation = [], []
    for rank in range(2):
        rows = torch.load(out / f"rank{rank}.pt")
        assert rows.shape == (script.STEPS * script.BATCH, script.SEQ_LEN + 1)
        general = [row for k, row in enumerate(rows) if not is_aviation(k, ratio)]
        aviation.append({tuple(row.tolist()) for k, row in enumerate(rows) if is_aviation(k, ratio)})
        # Consecutive windows of one reader share a token: together they are its token stream.
        stream = torch.cat([general[0], *(w[1:] for w in general[1:])]).tolist()
        documents.append({int(n) for n in TAG.findall(tokenizer.decode(stream))})
        # Resumed at step STEPS // 2 from the checkpoint rank 0 wrote: each rank continues its own data.
        resumed = torch.load(out / f"rank{rank}-resumed.pt")
        assert torch.equal(resumed, rows[script.STEPS // 2 * script.BATCH :])
    assert len(aviation[0]) == len(aviation[1]) == 7  # floor(24 · 0.3)
    assert not aviation[0] & aviation[1]
    assert min(map(len, documents)) >= 3
    assert not documents[0] & documents[1]
