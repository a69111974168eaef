"""Two DDP ranks on the CPU (gloo, forked from this process) train on disjoint general documents and different aviation sequences,
a resumed DDP run continues each rank's data exactly, and a run resumed on another number of ranks
repeats and skips nothing."""

import itertools
import os
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from flightmind.contracts import eot_id, load_tokenizer
from flightmind.data.mixing import exact_ratio, is_aviation
from flightmind.data.prepare import encode_documents
from flightmind.data.sequences import PackedSequences, StreamSampler
from flightmind.data.streaming import GeneralPool, open_general_pool, rebalance
from tests.training import ddp_mixed_run as script

TAG = re.compile(r"\[doc (\d+)\]")


@pytest.mark.slow
def test_two_ddp_ranks_mix_disjoint_general_documents_and_different_aviation_sequences_and_resume_exactly(
    tmp_path, prepared_dir, tagged_texts, write_parquet_pool
):
    write_parquet_pool(tmp_path / "pool", tagged_texts, files=3, row_group_size=200)  # 3 files, 2 ranks: resharded
    out = tmp_path / "out"
    out.mkdir()
    launch(tmp_path, prepared_dir, tmp_path / "pool", out)

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
    assert min(map(len, documents)) >= 2  # long wikitext articles on one rank: a few documents
    assert not documents[0] & documents[1]


def launch(cwd, prepared_dir, pool_dir, out, *rest):
    """`python ddp_mixed_run.py PREPARED_DIR POOL_DIR OUT_DIR [DEVICES NAME [CHECKPOINT]]` in this process
    (its 2-rank runs fork their ranks)."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        script.main(Path(prepared_dir), Path(pool_dir), Path(out), *map(str, rest))
    finally:
        os.chdir(before)


@pytest.mark.slow
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_mixed_run_resumed_on_another_number_of_ranks_repeats_and_skips_nothing(
    tmp_path, prepared_dir, demo_tagged_texts, write_parquet_pool, before, after
):
    tagged_texts = demo_tagged_texts  # any machine has them
    files = write_parquet_pool(tmp_path / "pool", tagged_texts, files=3, row_group_size=20)
    out = tmp_path / "out"
    out.mkdir()
    half = script.STEPS // 2
    launch(tmp_path, prepared_dir, tmp_path / "pool", out, before, "first")
    launch(tmp_path, prepared_dir, tmp_path / "pool", out, after, "second", out / "first" / f"step_{half}.ckpt")
    [final] = torch.load(out / "second" / f"step_{script.STEPS}.ckpt", weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert final["layout"]["world_size"] == after and final["micro_batches"] == script.STEPS

    # (rows, first sequence index) of every rank: the first run up to its step-`half` checkpoint, then the resumed run.
    runs = [(torch.load(out / f"first-rank{r}.pt")[: half * script.BATCH], 0) for r in range(before)]
    runs += [(torch.load(out / f"second-rank{r}.pt"), half * script.BATCH) for r in range(after)]
    ratio = exact_ratio(script.RATIO)
    aviation, general = [], []
    for rows, first in runs:
        assert len(rows) == half * script.BATCH
        aviation += [tuple(row.tolist()) for k, row in enumerate(rows, start=first) if is_aviation(k, ratio)]
        general.append([row for k, row in enumerate(rows, start=first) if not is_aviation(k, ratio)])

    # Aviation: positions 0 … A-1 of the one global stream, whatever the number of ranks.
    windows = PackedSequences(prepared_dir / "train.bin", script.SEQ_LEN)
    order = StreamSampler(windows, length=0, seed=script.SEED, shuffle=True)
    assert final["aviation_next"] == len(aviation) == before * 3 + after * 4  # floor(12 · 0.3), floor(24 · 0.3) − 3
    assert Counter(aviation) == Counter(tuple(windows[order.window(p)].tolist()) for p in range(len(aviation)))

    # General: the windows trained on plus what the readers have left of pass 0 hold every token of the
    # pool once, and no document id shows up twice.
    tokenizer_path = prepared_dir / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_path)
    stream = open_general_pool(GeneralPool(path="parquet", data_files=files, **script.GENERAL), seed=script.SEED, shuffle=True)
    [rest] = rebalance([state for rank in final["readers"] for state in rank], 1)
    batches = stream.reader(0, 1, script.SEQ_LEN, tokenizer_path, rest).batches()
    left = [int(t) for b in itertools.takewhile(lambda b: b.epoch == 0, batches) for t in b.tokens]
    consumed = Counter(t for g in general for w in g for t in w[:-1].tolist())
    assert consumed + Counter(left) == Counter(encode_documents(tokenizer, tagged_texts, eot_id(tokenizer)).tolist())
    # Consecutive windows of one reader share a token: together they are its token stream.
    streams = [torch.cat([g[0], *(w[1:] for w in g[1:])]).tolist() for g in general if g]
    ids = [int(n) for tokens in [*streams, left] for n in TAG.findall(tokenizer.decode(tokens))]
    assert len(ids) == len(set(ids))
    assert len(set(range(len(tagged_texts))) - set(ids)) <= before + after  # a tag cut where a reader stopped
