"""The general pool streamed through `datasets`: sharding, packing, positions, faults, start-up checks."""

import itertools
import json
import logging
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flightmind.data.prepare import prepare
from flightmind.data.sequences import PackedSequences
from flightmind.data.streaming import DOCUMENTS_PER_READ, GeneralPool, is_transient, open_general_pool
from flightmind.contracts import load_tokenizer
from flightmind.errors import FlightMindError

TAG = re.compile(r"\[doc (\d+)\]")


def tags(tokenizer, tokens) -> list[int]:
    """The document tags in a run of tokens (the separators decode to nothing)."""
    return [int(n) for n in TAG.findall(tokenizer.decode(np.asarray(tokens).tolist()))]


def write_jsonl_pool(directory, texts, files=3):
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(texts) // files)
    paths = []
    for n in range(files):
        path = directory / f"part-{n:02d}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[n * per_file : (n + 1) * per_file]))
        paths.append(str(path))
    return paths


def stream_of(files, readers=1, shuffle=False, seed=0, fmt="parquet", **pool):
    return open_general_pool(GeneralPool(path=fmt, data_files=files, **pool), readers=readers, seed=seed, shuffle=shuffle)


# ---------------------------------------------------------------------------------------------
# Sharding


class FirstPass(IterableDataset):
    """In each DataLoader worker: (reader index, tags of the documents that reader reads in pass 0)."""

    def __init__(self, stream, rank, workers, tokenizer_path):
        self.stream, self.rank, self.workers, self.tokenizer_path = stream, rank, workers, tokenizer_path

    def __iter__(self):
        index = self.rank * self.workers + get_worker_info().id
        tokenizer = load_tokenizer(self.tokenizer_path)
        found = []
        for batch in self.stream.reader(index, 64, self.tokenizer_path).batches():
            if batch.epoch > 0:
                break
            found += tags(tokenizer, batch.tokens)
        yield index, found


@pytest.mark.parametrize("fmt, strategy", [("parquet", "shards"), ("json", "examples")])
def test_two_ranks_of_two_workers_read_disjoint_documents_covering_the_pool(
    tmp_path, tagged_texts, prepared_dir, write_parquet_pool, fmt, strategy
):
    # 3 files for 4 readers: parquet splits into row groups (enough shards to own), JSON cannot.
    if fmt == "parquet":
        files = write_parquet_pool(tmp_path, tagged_texts, files=3, row_group_size=400)
    else:
        files = write_jsonl_pool(tmp_path, tagged_texts, files=3)
    per_reader = {}
    for rank in range(2):
        stream = stream_of(files, readers=4, shuffle=True, seed=11, fmt=fmt, shuffle_buffer=500)
        assert stream.strategy == strategy
        loader = DataLoader(FirstPass(stream, rank, 2, prepared_dir / "tokenizer.json"), batch_size=None, num_workers=2)
        per_reader.update(dict(loader))
    assert sorted(per_reader) == [0, 1, 2, 3]
    for found in per_reader.values():
        assert len(found) > 100 and len(set(found)) == len(found)
    for a, b in itertools.combinations(per_reader.values(), 2):
        assert not set(a) & set(b)
    assert sorted(itertools.chain(*per_reader.values())) == list(range(len(tagged_texts)))


# ---------------------------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_stream_windows_equal_the_windows_of_a_prepared_shard(tmp_path, tagged_texts, prepared_dir, write_parquet_pool, fmt):
    bad = ["", "a bell \x07 rings", None]  # skipped by prepare's rules: empty, control_chars, not_string
    # Short reports, a text holding the separator itself (tokenized per read), long articles.
    texts = tagged_texts[:200] + bad + ["a text with <|endoftext|> inside"] + tagged_texts[200:300] + tagged_texts[-20:]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenizer = prepared_dir / "tokenizer.json"
    prepare([jsonl], tmp_path / "prepared", tokenizer=tokenizer, val_fraction=0, workers=1, progress=False)
    expected = PackedSequences(tmp_path / "prepared" / "train.bin", seq_len=64)

    files = write_parquet_pool(tmp_path / "pool", texts, files=2, row_group_size=90) if fmt == "parquet" else [str(jsonl)]
    reader = stream_of(files, fmt=fmt).reader(0, 64, tokenizer)
    windows = iter(reader)
    got = [next(windows) for _ in range(len(expected))]
    assert len(expected) > 1000
    for i, window in enumerate(got):
        assert window.shape == (65,) and np.array_equal(window, expected[i].numpy()), f"window {i} differs"

    skipped = {}
    for batch in stream_of(files, fmt=fmt).reader(0, 64, tokenizer).batches():
        if batch.epoch > 0:
            break
        for reason, n in batch.skipped.by_reason.items():
            skipped[reason] = skipped.get(reason, 0) + n
    assert skipped == {"empty": 1, "control_chars": 1, "not_string": 1}


# ---------------------------------------------------------------------------------------------
# Positions


def test_a_reader_resumes_exactly_without_shuffling_also_across_passes(tmp_path, tagged_texts, prepared_dir, write_parquet_pool):
    files = write_parquet_pool(tmp_path, tagged_texts[:90], files=2, row_group_size=20)
    stream = stream_of(files, ready_sequences=3)
    tokenizer = prepared_dir / "tokenizer.json"
    reader = stream.reader(0, 32, tokenizer)
    windows, states = [], []
    for window in itertools.islice(reader, 3000):
        windows.append(window)
        states.append(reader.state_dict())
    assert states[-1]["epoch"] >= 2  # the 90 documents went round at least twice
    for cut in (0, 1, 17, 400, 1234, 2500):
        state = torch.load(_saved(tmp_path, states[cut]), weights_only=True)  # as a checkpoint holds it
        resumed = itertools.islice(stream.reader(0, 32, tokenizer, state), 200)
        assert all(np.array_equal(a, b) for a, b in zip(resumed, windows[cut + 1 : cut + 201], strict=True)), cut


def _saved(tmp_path, state):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return path


def test_with_shuffling_a_resume_repeats_nothing_and_skips_at_most_the_buffer(tmp_path, tagged_texts, prepared_dir, write_parquet_pool):
    texts = tagged_texts[:900]
    files = write_parquet_pool(tmp_path, texts, files=3, row_group_size=50)
    buffer = 100
    stream = stream_of(files, shuffle=True, seed=5, shuffle_buffer=buffer, ready_sequences=8)
    tokenizer_path = prepared_dir / "tokenizer.json"
    tokenizer = load_tokenizer(tokenizer_path)

    reader = stream.reader(0, 64, tokenizer_path)
    consumed = list(itertools.islice(reader, 600))
    state = reader.state_dict()
    assert state["epoch"] == 0 and state["skip"] == 0
    trained = tags(tokenizer, np.concatenate([consumed[0], *(w[1:] for w in consumed[1:])]))

    after = []
    for batch in stream.reader(0, 64, tokenizer_path, state).batches():
        if batch.epoch > 0:
            break
        after += tags(tokenizer, batch.tokens)
    assert len(trained) > 200 and len(after) > 200
    assert not set(trained) & set(after), "a document came back after the resume"
    skipped = set(range(len(texts))) - set(trained) - set(after)
    assert len(skipped) <= buffer + DOCUMENTS_PER_READ


# ---------------------------------------------------------------------------------------------
# Faults


def flaky_reads(monkeypatch, fails):
    """Make the n-th batch read from any datasets stream raise ConnectionError when fails(n)."""
    from datasets import IterableDataset as HFIterableDataset

    original = HFIterableDataset.iter
    reads = itertools.count()

    def iter_(self, *args, **kwargs):
        for rows in original(self, *args, **kwargs):
            n = next(reads)
            if fails(n):
                raise ConnectionError(f"injected at read {n}")
            yield rows

    monkeypatch.setattr(HFIterableDataset, "iter", iter_)


def test_transient_errors_are_retried_with_back_off_and_lose_nothing(tmp_path, tagged_texts, prepared_dir, write_parquet_pool, monkeypatch, caplog):
    files = write_parquet_pool(tmp_path, tagged_texts[:600], files=3, row_group_size=50)
    tokenizer = prepared_dir / "tokenizer.json"
    clean = list(itertools.islice(stream_of(files, ready_sequences=4).reader(0, 64, tokenizer), 800))

    sleeps = []
    monkeypatch.setattr("flightmind.data.streaming.time.sleep", sleeps.append)
    flaky_reads(monkeypatch, lambda n: n in (2, 5, 6))
    stream = stream_of(files, ready_sequences=4, retry_attempts=3, retry_delay=0.5)
    with caplog.at_level(logging.WARNING, logger="flightmind.data.streaming"):
        retried = list(itertools.islice(stream.reader(0, 64, tokenizer), 800))
    assert all(np.array_equal(a, b) for a, b in zip(retried, clean, strict=True))
    assert sleeps == [0.5, 0.5, 1.0]  # the count restarts after a good read
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    # Two reads of 64 documents: the file reader stands at the end of the third row group of 50.
    assert "ConnectionError: injected at read 2 at reader 0 of 1, epoch 0, stream at shard 2, row 50; retry 1 of 3 in 0.5 s" in messages[0]


def test_after_the_last_attempt_the_reader_stops_with_one_clear_error(tmp_path, tagged_texts, prepared_dir, write_parquet_pool, monkeypatch):
    files = write_parquet_pool(tmp_path, tagged_texts[:300], files=3, row_group_size=50)
    sleeps = []
    monkeypatch.setattr("flightmind.data.streaming.time.sleep", sleeps.append)
    flaky_reads(monkeypatch, lambda n: n >= 3)
    reader = stream_of(files, ready_sequences=4, retry_attempts=3, retry_delay=2).reader(0, 64, prepared_dir / "tokenizer.json")
    with pytest.raises(FlightMindError) as failure:
        list(itertools.islice(reader, 10_000))
    assert sleeps == [2, 4, 8]
    message = str(failure.value)
    assert "failed 4 times in a row at reader 0 of 1, epoch 0, stream at shard 3, row 50 (ConnectionError: injected at read 6)" in message
    assert "the last checkpoint is intact" in message and "--ckpt_path last" in message


def test_only_errors_that_may_pass_are_retried():
    assert is_transient(ConnectionError()) and is_transient(TimeoutError()) and is_transient(OSError("reset"))
    assert not is_transient(FileNotFoundError()) and not is_transient(PermissionError())
    assert not is_transient(ValueError()) and not is_transient(KeyError("text"))


# ---------------------------------------------------------------------------------------------
# Start-up errors


def test_a_parquet_file_without_the_text_column_is_named_at_start_up(tmp_path, write_parquet_pool):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = write_parquet_pool(tmp_path, ["a document"] * 10, files=2)
    pq.write_table(pa.table({"id": [1], "body": ["text under another name"]}), tmp_path / "other.parquet")
    with pytest.raises(FlightMindError, match=r"other\.parquet has no column 'text' \(columns: id, body\)"):
        stream_of([*files, str(tmp_path / "other.parquet")])
    with pytest.raises(FlightMindError, match=r"part-00\.parquet has no column 'content' .*data\.general\.text_column"):
        stream_of(files, text_column="content")


def test_a_json_file_without_the_text_column_is_named_at_start_up(tmp_path):
    good, other = tmp_path / "good.jsonl", tmp_path / "other.jsonl"
    good.write_text('{"text": "a document"}\n')
    other.write_text('\n{"id": 3, "body": "no text key"}\n')
    with pytest.raises(FlightMindError, match=r"other\.jsonl has no column 'text' \(columns: id, body\)"):
        stream_of([str(good), str(other)], fmt="json")


def test_a_pool_without_documents_is_named_at_start_up(tmp_path, write_parquet_pool):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FlightMindError, match=r"general pool json \(train\) from .*empty\.jsonl yields no documents"):
        stream_of([str(empty)], fmt="json")
    blank = write_parquet_pool(tmp_path / "blank", ["", None, "   "], files=1)
    with pytest.raises(FlightMindError, match=r"no usable text in column 'text' in its first 3 rows \(skipped: not_string 1, empty 2\)"):
        stream_of(blank)
    with pytest.raises(FlightMindError, match=r"missing\.parquet.*data\.general\.data_files"):
        stream_of([str(tmp_path / "missing.parquet")])
    with pytest.raises(FlightMindError, match=r"Bad split: validation.*data\.general\.split"):
        stream_of(blank, split="validation")


def test_a_reader_left_without_documents_says_so_instead_of_spinning(tmp_path, prepared_dir, write_parquet_pool):
    files = write_parquet_pool(tmp_path, ["[doc 0] the only document"], files=1)
    stream = stream_of(files, readers=2)
    assert stream.strategy == "examples"
    with pytest.raises(FlightMindError, match=r"reader 1 of 2 \(ranks × workers\) got no usable document .*lower data\.num_workers"):
        next(iter(stream.reader(1, 16, prepared_dir / "tokenizer.json")))


def test_the_shuffle_buffer_lets_every_document_out_once_in_a_new_order():
    from flightmind.data.streaming import ShuffleBuffer

    buffer = ShuffleBuffer(10, np.random.default_rng(0))
    documents = [str(i) for i in range(100)]
    out = buffer.push(documents[:7]) + buffer.push(documents[7:])
    assert len(out) == 90 and len(buffer.held) == 10  # nothing leaves before the buffer is full
    out += buffer.drain()
    assert sorted(out, key=int) == documents and out != documents


def test_a_pass_shorter_than_the_buffer_still_comes_out_whole_in_reads_of_the_usual_size(tmp_path, tagged_texts, prepared_dir, write_parquet_pool):
    # The end-of-pass drain is split like any read, so no worker stalls the others on one long tokenization.
    texts = tagged_texts[:300]
    files = write_parquet_pool(tmp_path, texts, files=2, row_group_size=50)
    stream = stream_of(files, shuffle=True, seed=3, shuffle_buffer=1000)
    tokenizer = load_tokenizer(prepared_dir / "tokenizer.json")
    batches = list(itertools.takewhile(lambda b: b.epoch == 0, stream.reader(0, 64, prepared_dir / "tokenizer.json").batches()))
    assert max(b.documents for b in batches) == DOCUMENTS_PER_READ
    assert sum(b.documents for b in batches) == len(texts)
    found = tags(tokenizer, np.concatenate([b.tokens for b in batches]))
    assert sorted(found) == list(range(len(texts))) and found != sorted(found)
