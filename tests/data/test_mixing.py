"""Aviation and general sequences mixed at an exact ratio, in micro-batches that resume exactly."""

import itertools
from pathlib import Path
import json
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch

from flightmind.data.datamodule import PretrainDataModule
from flightmind.data.mixing import MixedBatches, MixedLoader, aviation_count, exact_ratio, is_aviation
from flightmind.data.sequences import PackedSequences, ResumableDataLoader, StreamSampler
from flightmind.data.streaming import GeneralPool, open_general_pool
from flightmind.errors import FlightMindError

SEQ_LEN = 16
AVIATION_BASE = 2000  # synthetic aviation tokens are ≥ 2000; the tokenizer's ids are < 1024


@pytest.mark.parametrize("ratio", [0, 0.3, 0.5, 1])
def test_after_any_number_of_sequences_the_aviation_count_is_within_one_of_the_ratio(ratio):
    r = exact_ratio(ratio)
    flags = [is_aviation(k, r) for k in range(10_000)]
    counts = np.cumsum([0, *flags])
    assert all(abs(counts[k] - ratio * k) < 1 for k in range(len(counts)))
    assert all(counts[k] == aviation_count(k, r) for k in range(len(counts)))
    per_batch = {sum(flags[i : i + 8]) for i in range(0, len(flags), 8)}
    expected = {0: {0}, 0.3: {2, 3}, 0.5: {4}, 1: {8}}[ratio]
    assert per_batch == expected


def test_ratios_are_exact_fractions_and_checked():
    assert exact_ratio(0.3) == exact_ratio(0.30000000000000004) and exact_ratio(0.3).denominator == 10
    assert aviation_count(10, exact_ratio(0.3)) == 3  # float arithmetic would say floor(2.9999999999999996) = 2
    with pytest.raises(FlightMindError, match="between 0 and 1"):
        exact_ratio(1.5)


@pytest.fixture
def aviation_shard(tmp_path):
    path = tmp_path / "aviation.bin"
    (AVIATION_BASE + np.arange(50 * SEQ_LEN + 1) % 1000).astype(np.uint16).tofile(path)
    return PackedSequences(path, SEQ_LEN)  # 50 windows


@pytest.fixture(scope="module")
def general_file(prepared_dir):
    path = prepared_dir.parent / "corpus" / "general" / "python_stdlib_docstrings.jsonl"
    if not path.is_file():
        pytest.skip("this Python ships no standard-library sources, so the demo corpus has no general part")
    return str(path)


def loader(prepared_dir, aviation, general_file, *, ratio, workers=0, length=50, world_size=1, rank=0):
    stream = open_general_pool(GeneralPool(path="json", data_files=general_file, shuffle_block=40), seed=3, shuffle=False)
    data = MixedBatches(
        aviation, stream, prepared_dir / "tokenizer.json", length=length, batch_size=8, ratio=exact_ratio(ratio),
        seed=3, shuffle=False, rank=rank, world_size=world_size, workers=workers,
    )
    return MixedLoader(data, num_workers=workers, persistent_workers=workers > 0)


@pytest.mark.parametrize("ratio", [0, 0.3, 0.5, 1])
def test_the_loader_mixes_exactly_the_planned_sequences(prepared_dir, aviation_shard, general_file, ratio):
    mixed = loader(prepared_dir, aviation_shard, general_file, ratio=ratio, length=400)  # 3,200 sequences
    stream = mixed.dataset.general
    expected_general = iter(stream.reader(0, 1, SEQ_LEN, prepared_dir / "tokenizer.json"))
    k = 0
    for batch in mixed:
        assert batch.shape == (8, SEQ_LEN + 1) and batch.dtype == torch.int64
        for row in batch:
            if is_aviation(k, exact_ratio(ratio)):
                # Positions 0, 1, 2 … of the aviation stream (no shuffling), wrapping after 50 windows.
                assert torch.equal(row, aviation_shard[aviation_count(k, exact_ratio(ratio)) % 50])
            else:
                assert row.max() < AVIATION_BASE
                assert np.array_equal(row.numpy(), next(expected_general))
            k += 1
        assert abs(mixed.aviation_sequences - ratio * mixed.sequences) < 1
    assert k == mixed.sequences == 3200
    assert mixed.aviation_sequences == int(3200 * ratio)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_loader_continues_with_the_same_batches(prepared_dir, aviation_shard, general_file, workers):
    full = [b.clone() for b in loader(prepared_dir, aviation_shard, general_file, ratio=0.3, workers=workers, length=30)]
    first = loader(prepared_dir, aviation_shard, general_file, ratio=0.3, workers=workers, length=30)
    head = [b.clone() for b in itertools.islice(first, 13)]  # stops between the workers' turns
    state = first.state_dict()
    assert state["micro_batches"] == 13 and state["sequences"] == 104 and state["aviation_sequences"] == 31
    assert len(state["readers"]) == 1 and len(state["readers"][0]) == max(1, workers)  # [rank][worker]

    resumed = loader(prepared_dir, aviation_shard, general_file, ratio=0.3, workers=workers, length=30)
    resumed.load_state_dict(state)
    assert len(resumed) == 30  # Lightning counts the consumed batches itself
    tail = list(resumed)
    assert len(tail) == 17
    for i, (a, b) in enumerate(zip(head + tail, full, strict=True)):
        assert torch.equal(a, b), f"micro-batch {i} differs"


# ---------------------------------------------------------------------------------------------
# Resuming on another number of ranks or workers


def run_ranks(prepared_dir, aviation, general_file, monkeypatch, *, world_size, workers, batches, state=None):
    """Every rank's loader (in this process), resumed from ``state``, for ``batches`` micro-batches:
    (rows of all ranks, the checkpoint's loader state as rank 0 would write it)."""
    loaders = [
        loader(prepared_dir, aviation, general_file, ratio=0.3, workers=workers, world_size=world_size, rank=rank, length=40)
        for rank in range(world_size)
    ]
    rows = []
    for mixed in loaders:
        if state is not None:
            mixed.load_state_dict(state)
        rows += [row for batch in itertools.islice(mixed, batches) for row in batch.clone()]
    monkeypatch.setattr("flightmind.data.mixing._gather", lambda value, world_size: [value])  # one rank at a time here
    states = [mixed.state_dict() for mixed in loaders]
    return rows, {**states[0], "readers": [s["readers"][0] for s in states]}


@pytest.mark.parametrize("before, after", [((1, 2), (1, 0)), ((1, 0), (1, 2)), ((2, 0), (1, 0)), ((1, 0), (2, 0))])
def test_a_loader_resumed_on_another_layout_repeats_and_skips_nothing(
    prepared_dir, aviation_shard, demo_tagged_texts, tmp_path, monkeypatch, before, after
):
    from flightmind.contracts import eot_id, load_tokenizer
    from flightmind.data.documents import iter_documents
    from flightmind.data.prepare import encode_documents
    from flightmind.data.streaming import rebalance

    # The demo corpus in blocks of 20 lines: the run stays inside pass 0.
    general_file = str(tmp_path / "general.jsonl")
    Path(general_file).write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_tagged_texts))
    monkeypatch.setattr("flightmind.data.streaming.JSON_LINES_PER_UNIT", 20)
    (w0, k0), (w1, k1) = before, after
    first, state = run_ranks(prepared_dir, aviation_shard, general_file, monkeypatch, world_size=w0, workers=k0, batches=12)
    assert state["micro_batches"] == 12 and state["aviation_next"] == w0 * aviation_count(96, exact_ratio(0.3))
    second, final = run_ranks(prepared_dir, aviation_shard, general_file, monkeypatch, world_size=w1, workers=k1, batches=10, state=state)
    assert final["micro_batches"] == 22 and final["aviation_base"] == state["aviation_next"]
    rows = first + second

    # Aviation: global stream positions 0 … A-1 exactly (no shuffling: window p mod 50), whatever the ranks.
    aviation = Counter(int(row[0]) for row in rows if row[0] >= AVIATION_BASE)
    positions = final["aviation_next"]
    assert sum(aviation.values()) == positions
    assert aviation == Counter(int(aviation_shard[p % 50][0]) for p in range(positions))

    # General: what the windows consumed plus what the readers have left of pass 0 is pass 0, each token once.
    tokenizer_path = prepared_dir / "tokenizer.json"
    consumed = Counter(t for row in rows if row[0] < AVIATION_BASE for t in row[:-1].tolist())
    states = [s for rank in final["readers"] for s in rank]
    stream = open_general_pool(GeneralPool(path="json", data_files=general_file, shuffle_block=40), seed=3, shuffle=False)
    [rest] = rebalance(states, 1)
    for batch in itertools.takewhile(lambda b: b.epoch == 0, stream.reader(0, 1, SEQ_LEN, tokenizer_path, rest).batches()):
        consumed.update(batch.tokens.tolist())
    tokenizer = load_tokenizer(tokenizer_path)
    texts = [document.text for document in iter_documents(general_file)]
    assert consumed == Counter(encode_documents(tokenizer, texts, eot_id(tokenizer)).tolist())


def test_a_position_from_another_layout_is_refused(prepared_dir, aviation_shard, general_file):
    saved = loader(prepared_dir, aviation_shard, general_file, ratio=0.3, workers=0)
    next(iter(saved))
    other = loader(prepared_dir, aviation_shard, general_file, ratio=0.5, workers=0)
    with pytest.raises(FlightMindError, match=r"aviation_ratio '3/10' → '1/2'.*resume with the data\.aviation_ratio"):
        other.load_state_dict(saved.state_dict())


def test_switching_between_pure_and_mixed_data_on_resume_is_refused(prepared_dir, aviation_shard, general_file):
    mixed = loader(prepared_dir, aviation_shard, general_file, ratio=0.3)
    pure = ResumableDataLoader(aviation_shard, batch_size=8, sampler=StreamSampler(aviation_shard, 64, seed=0))
    with pytest.raises(FlightMindError, match=r"trained on the aviation shards alone .*start a new run"):
        mixed.load_state_dict(pure.state_dict())
    with pytest.raises(FlightMindError, match=r"trained on aviation and general data mixed .*data\.general"):
        pure.load_state_dict(mixed.state_dict())


def test_an_error_in_a_worker_reaches_the_main_process_as_one_clear_message(prepared_dir, aviation_shard, general_file, monkeypatch):
    mixed = loader(prepared_dir, aviation_shard, general_file, ratio=0.3, workers=2)

    def unreachable(*args):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr("flightmind.data.streaming.read_unit", unreachable)  # the forked workers inherit it
    mixed.dataset.general.retry_attempts = 0
    with pytest.raises(FlightMindError) as failure:
        next(iter(mixed))
    message = str(failure.value)
    assert message.startswith("the general pool json (train) from ") and "Traceback" not in message
    assert "failed once at reader 0 of 2, pass 0, block 0, " in message
    assert "(ConnectionError: network is unreachable)" in message


def test_without_a_general_pool_or_at_ratio_one_nothing_is_streamed(prepared_dir, tmp_path):
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False)
    missing = {"path": "parquet", "data_files": str(tmp_path / "never-opened.parquet")}
    for data in (
        PretrainDataModule(prepared_dir, seq_len=64, batch_size=4, num_workers=0, aviation_ratio=1.0, general=missing),
        PretrainDataModule(prepared_dir, seq_len=64, batch_size=4, num_workers=0, general=None),
    ):
        data.trainer = trainer
        data.setup("fit")
        assert not data.mixes and data.general_stream is None
        assert isinstance(data.train_dataloader(), ResumableDataLoader)
