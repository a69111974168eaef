"""The general pool: text streamed with Hugging Face ``datasets``, split between readers, packed into windows.

    data:
      init_args:
        aviation_ratio: 0.30
        general:                     # what datasets.load_dataset(..., streaming=True) takes
          path: HuggingFaceFW/fineweb-edu
          name: sample-10BT
          split: train

The hub and local files (``path: parquet`` or ``json`` with ``data_files: [...]``) take the same
``streaming=True`` path, so offline tests exercise what production runs. Nothing is downloaded whole.

Readers. Every DataLoader worker of every rank is one reader: reader ``rank · workers + worker`` of
``world_size · workers``. Parquet files are first split into their row groups (``reshard``). With at
least as many shards as readers, ``split_dataset_by_node(strategy="shards")`` gives each reader its
own shards (some one more than others); with fewer, every reader reads all of them and keeps one
document in N. Either way no document reaches two readers within a pass. Each reader repeats its
share, the shards in a new order each pass (``set_epoch``), so that no rank runs dry (DDP would
hang); training stops on ``max_steps``.

Shuffling. Each reader passes its documents through a buffer of ``shuffle_buffer`` documents: once
it is full, every document read takes the place of a random one held, which goes on to be packed.
(The buffer is ours: ``IterableDataset.shuffle`` restores a position by replaying its buffer with a
fresh random generator, which repeats some documents and skips others.)

Packing. A reader reads documents in batches of ``DOCUMENTS_PER_READ``, skips (and counts) those that
``prepare`` would skip, tokenizes them ``TOKENIZE_CHARS`` of text at a time with prepare's
``encode_documents`` (ids, then ``<|endoftext|>``) and cuts the token stream into windows of
``seq_len + 1`` with stride ``seq_len``: the very windows ``PackedSequences`` reads from a shard that
``prepare`` made of the same documents. When no window is left it reads until ``ready_sequences``
windows are ready.

Position. A reader's state is the position of its next window: the stream state
(``IterableDataset.state_dict()``) before the read batch that holds the window's first token and how
many of that batch's tokens come before it, a few hundred bytes. Without shuffling, a reader restored
from it yields exactly the windows it would have yielded. With shuffling, the buffer's documents are
not saved: the reader restarts after that read batch with an empty buffer, so the documents the
buffer held (at most ``shuffle_buffer``) and the rest of that batch (at most ``DOCUMENTS_PER_READ``)
are skipped, and no document is read twice.

Faults. A transient read or network error is retried from the last batch read (the buffer is kept:
nothing is lost or repeated), after ``retry_delay · 2^(attempt-1)`` seconds, ``retry_attempts`` times
in a row at most, each logged with the reader, epoch, shard and row; then the run stops with one
``FlightMindError``. A missing text column or a source with no documents stops the run before
training starts.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flightmind.data.documents import BadLine, SkipCounts, document_text, parse_json_object
from flightmind.contracts import TOKEN_DTYPE, eot_id, load_tokenizer
from flightmind.data.prepare import encode_documents
from flightmind.errors import FlightMindError

log = logging.getLogger(__name__)

# Documents per read: the grain of a reader's position. Small, so that a resume with shuffling
# skips little beyond the shuffle buffer.
DOCUMENTS_PER_READ = 64
# Text per encode_batch call (prepare's block size): per-call costs vanish, rayon has work to share.
TOKENIZE_CHARS = 1 << 18
# Rows read at start-up to find one usable document.
FIRST_DOCUMENT_ROWS = 1000
# OSErrors that no retry mends.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
# Network errors of HTTP clients that do not derive from OSError, by "package.Class".
_TRANSIENT_CLASSES = {"aiohttp.ClientError", "httpx.TransportError", "httpx2.TransportError"}


@dataclass
class GeneralPool:
    """Where the general text comes from: the arguments of ``datasets.load_dataset(..., streaming=True)``.

    Args:
        path: a hub dataset (``HuggingFaceFW/fineweb-edu``) or a file format (``parquet``, ``json``).
        name: the dataset configuration, e.g. ``sample-10BT``.
        split: the split to stream.
        data_files: local or remote files (globs allowed), for ``path: parquet`` / ``json``.
        revision: a hub branch, tag or commit.
        text_column: the column holding the document text.
        shuffle_buffer: documents in each reader's shuffle buffer (with ``data.shuffle``; 0: none).
        ready_sequences: windows a reader packs ahead.
        retry_attempts: retries of a failing read, in a row, before the run stops.
        retry_delay: seconds before the first retry; doubled for each further one.
    """

    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    revision: str | None = None
    text_column: str = "text"
    shuffle_buffer: int = 10_000
    ready_sequences: int = 256
    retry_attempts: int = 5
    retry_delay: float = 1.0

    def describe(self) -> str:
        details = ", ".join(str(part) for part in (self.name, self.split) if part)
        files = self.data_files
        if isinstance(files, dict):
            files = files.get(self.split)
        if isinstance(files, (list, tuple)):
            files = f"{files[0]} and {len(files) - 1} more" if len(files) > 1 else (files[0] if files else None)
        return f"{self.path} ({details})" + (f" from {files}" if files else "")


def is_transient(error: BaseException) -> bool:
    """Whether a read error may go away on its own (network, timeouts, I/O), so a retry makes sense."""
    if isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    if isinstance(error, OSError):  # ConnectionError, TimeoutError, HfHubHTTPError, fsspec and arrow I/O
        return True
    return any(f"{cls.__module__.split('.')[0]}.{cls.__name__}" in _TRANSIENT_CLASSES for cls in type(error).__mro__)


def stream_position(state: dict | None) -> str:
    """Where a ``datasets`` stream state has its file reader, for messages: shard and row."""
    pending = [state]
    while pending:
        node = pending.pop(0)
        if isinstance(node, dict):
            if "shard_idx" in node:
                return f"stream at shard {node['shard_idx']}, row {node.get('shard_example_idx', 0):,}"
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return "stream at its start"


# ---------------------------------------------------------------------------------------------
# Opening the pool (once per rank, before training)


@dataclass
class GeneralStream:
    """The opened pool, split into ``readers`` parts; sent to every DataLoader worker."""

    dataset: object  # datasets.IterableDataset: the text column only, resharded
    source: str
    text_column: str
    readers: int
    strategy: str  # "shards": each reader its own shards; "examples": each keeps one document in N
    shuffle_buffer: int  # 0: no shuffling
    seed: int
    ready_sequences: int
    retry_attempts: int
    retry_delay: float
    layout: dict = field(default_factory=dict)  # what a saved reader position is only valid for

    def summary(self) -> str:
        split = "each its own shards" if self.strategy == "shards" else "each keeping one document in N"
        shuffle = f"shuffle buffer {self.shuffle_buffer:,}" if self.shuffle_buffer else "no shuffling"
        return f"{self.source}: {self.layout['shards']} shards, {self.readers} readers {split}, {shuffle}"

    def reader(self, index: int, seq_len: int, tokenizer_path: str | Path, state: dict | None = None) -> GeneralReader:
        return GeneralReader(self, index, seq_len, tokenizer_path, state)


def open_general_pool(pool: GeneralPool, *, readers: int, seed: int, shuffle: bool) -> GeneralStream:
    """Open the pool the way ``load_dataset(..., streaming=True)`` does, check it, and split it for ``readers``."""
    from datasets import load_dataset_builder  # imported here: it takes a second, pure-aviation runs skip it

    source = pool.describe()
    if pool.ready_sequences < 1 or min(pool.shuffle_buffer, pool.retry_attempts, pool.retry_delay) < 0:
        raise FlightMindError(
            f"data.general: ready_sequences ({pool.ready_sequences}) must be at least 1; shuffle_buffer "
            f"({pool.shuffle_buffer}), retry_attempts ({pool.retry_attempts}) and retry_delay ({pool.retry_delay}) at least 0"
        )
    try:
        builder = load_dataset_builder(pool.path, pool.name, data_files=pool.data_files, revision=pool.revision)
    except FileNotFoundError as e:
        raise FlightMindError(f"general pool {source}: {e}; check data.general.path and data.general.data_files") from None
    except Exception as e:  # the hub raises many kinds: unknown dataset, no network, gated repository …
        raise FlightMindError(
            f"cannot open the general pool {source} ({type(e).__name__}: {e}); check data.general.path and "
            "data.general.name, the network, or point data.general at a local copy (path: parquet, data_files: [...])"
        ) from None
    files = list((builder.config.data_files or {}).get(pool.split, []))
    for file in files:
        _check_local_file(file, pool.text_column)
    try:
        dataset = builder.as_streaming_dataset(split=pool.split)
    except StopIteration:  # the json builder reads the first file to learn the columns
        raise FlightMindError(f"the general pool {source} yields no documents: its first file is empty") from None
    except ValueError as e:
        raise FlightMindError(f"general pool {source}: {e}; set data.general.split") from None
    columns = dataset.column_names
    if columns is not None and pool.text_column not in columns:
        raise FlightMindError(
            f"the general pool {source} has no column {pool.text_column!r} (columns: {', '.join(columns)}): "
            "set data.general.text_column"
        )
    dataset = dataset.select_columns([pool.text_column])
    _check_first_document(dataset, pool.text_column, source)

    dataset = dataset.reshard()  # parquet: one shard per row group; a resume re-reads at most one
    strategy = "shards" if dataset.num_shards >= readers else "examples"
    if strategy == "examples" and readers > 1:
        log.warning(
            f"general pool {source}: {dataset.num_shards} shard(s) for {readers} readers (ranks × workers): every reader "
            f"reads all of them and keeps one document in {readers}; use more files or fewer data.num_workers"
        )
    shuffle_buffer = pool.shuffle_buffer if shuffle else 0
    layout = {"readers": readers, "shards": dataset.num_shards, "strategy": strategy, "shuffle_buffer": shuffle_buffer, "seed": seed}
    return GeneralStream(
        dataset=dataset,
        source=source,
        text_column=pool.text_column,
        readers=readers,
        strategy=strategy,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        ready_sequences=pool.ready_sequences,
        retry_attempts=pool.retry_attempts,
        retry_delay=pool.retry_delay,
        layout=layout,
    )


def _check_local_file(file: str, text_column: str) -> None:
    """A local parquet or JSON-lines file must have the text column (a later file would fail mid-run)."""
    path = Path(str(file))
    if not path.is_file():
        return  # a remote file: the dataset's columns are checked instead
    suffixes = "".join(path.suffixes).lower()
    if ".parquet" in suffixes:
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
    elif ".json" in suffixes:
        columns = _first_json_keys(path)
        if columns is None:
            return
    else:
        return
    if text_column not in columns:
        raise FlightMindError(
            f"general pool file {path} has no column {text_column!r} (columns: {', '.join(columns) or 'none'}): "
            "set data.general.text_column, or remove the file from data.general.data_files"
        )


def _first_json_keys(path: Path) -> list[str] | None:
    with open(path, "rb") as file:
        for raw in file:
            if raw.strip():
                try:
                    return list(parse_json_object(raw))
                except BadLine:
                    return None  # not JSON lines; datasets reports what it makes of it
    return None


def _check_first_document(dataset, text_column: str, source: str) -> None:
    skipped = SkipCounts()
    try:
        for row_number, row in enumerate(dataset, start=1):
            try:
                document_text(row, text_column)
                return
            except BadLine as bad:
                skipped.add(bad.reason)
            if row_number >= FIRST_DOCUMENT_ROWS:
                break
    except Exception as e:
        raise FlightMindError(f"cannot read the general pool {source} ({type(e).__name__}: {e})") from None
    reasons = ", ".join(f"{reason} {n}" for reason, n in skipped.as_dict().items() if n)
    if not skipped.total:
        raise FlightMindError(f"the general pool {source} yields no documents: check data.general.data_files and split")
    raise FlightMindError(
        f"the general pool {source} yields no usable text in column {text_column!r} in its first "
        f"{skipped.total:,} rows (skipped: {reasons}); check data.general.text_column"
    )


# ---------------------------------------------------------------------------------------------
# One reader


class ShuffleBuffer:
    """Documents in, documents out in random order: once ``size`` are held, each new one takes the
    place of a random one held, which leaves. ``drain`` empties it at the end of a pass."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.held = size, rng, []

    def push(self, documents: list[str]) -> list[str]:
        room = self.size - len(self.held)
        self.held += documents[:room]
        out = []
        for document, slot in zip(documents[room:], self.rng.integers(self.size, size=max(0, len(documents) - room))):
            out.append(self.held[slot])
            self.held[slot] = document
        return out

    def drain(self) -> list[str]:
        out = [self.held[i] for i in self.rng.permutation(len(self.held))]
        self.held = []
        return out


class PendingReads:
    """Reads not yet tokenized, as (documents, skipped, stream state), gathered until they hold
    ``TOKENIZE_CHARS`` of text."""

    def __init__(self) -> None:
        self.reads: list[tuple[list[str], SkipCounts, dict]] = []
        self.characters = 0

    def add(self, documents: list[str], skipped: SkipCounts, stream_state: dict) -> bool:
        """Keep one read; True once enough text is gathered to tokenize."""
        self.reads.append((documents, skipped, stream_state))
        self.characters += sum(map(len, documents))
        return self.characters >= TOKENIZE_CHARS

    def take(self) -> list[tuple[list[str], SkipCounts, dict]]:
        reads, self.reads, self.characters = self.reads, [], 0
        return reads


@dataclass
class ReadBatch:
    epoch: int
    tokens: np.ndarray  # uint16: each document's ids, then <|endoftext|>
    documents: int
    skipped: SkipCounts
    stream_state: dict  # the datasets stream state after this batch


class GeneralReader:
    """One reader's share of the pool as an endless iterator of ``seq_len + 1``-token windows (uint16).

    ``state_dict()`` is the position of the next window; a reader built with it continues there.
    """

    def __init__(
        self, stream: GeneralStream, index: int, seq_len: int, tokenizer_path: str | Path, state: dict | None = None
    ) -> None:
        if not 0 <= index < stream.readers:
            raise ValueError(f"reader {index} of {stream.readers}")
        self.stream = stream
        self.index = index
        self.seq_len = seq_len
        self.tokenizer_path = str(tokenizer_path)
        start = state or {"reader": index, "epoch": 0, "stream": None, "skip": 0, "documents": 0, "skipped": {}}
        if start["reader"] != index:
            raise ValueError(f"the position of reader {start['reader']} given to reader {index}")
        self._start = start
        # (first token of a read batch, the reader state before it), oldest first
        self._marks: deque[tuple[int, dict]] = deque([(0, {k: v for k, v in start.items() if k != "skip"})])
        self._next = int(start["skip"])  # token index (from the start position) of the next window

    # -- position ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        first, state = self._marks[0]
        skip = self._next - first
        if skip and self.stream.shuffle_buffer and len(self._marks) > 1:
            # The batch would not come back (its documents came out of the buffer): restart after it.
            first, state = self._marks[1]
            skip = 0
        return {**state, "skip": skip}

    # -- reading -------------------------------------------------------------------------------
    def batches(self) -> Iterator[ReadBatch]:
        """The reader's documents, shuffled and tokenized, one read batch at a time, pass after pass."""
        from datasets.distributed import split_dataset_by_node

        _reset_fsspec_lock()
        tokenizer = load_tokenizer(self.tokenizer_path)
        eot = eot_id(tokenizer)
        stream = self.stream
        epoch, stream_state = int(self._start["epoch"]), self._start["stream"]
        whole_pass = stream_state is None
        documents_this_pass = 0
        failures = 0
        buffer = self._shuffle_buffer(epoch)
        pending = PendingReads()
        while True:
            part = split_dataset_by_node(stream.dataset, rank=self.index, world_size=stream.readers, strategy=stream.strategy)
            part.set_epoch(epoch)
            if stream_state is not None:
                part.load_state_dict(stream_state)
            try:
                for rows in part.iter(batch_size=DOCUMENTS_PER_READ):
                    failures = 0
                    stream_state = part.state_dict()
                    documents, skipped = _valid_texts(rows[stream.text_column])
                    documents_this_pass += len(documents)
                    if buffer is not None:
                        documents = buffer.push(documents)
                    if pending.add(documents, skipped, stream_state):
                        yield from self._tokenize(tokenizer, eot, epoch, pending.take())
            except Exception as error:
                if not is_transient(error):
                    raise
                failures += 1
                where = f"reader {self.index} of {stream.readers}, epoch {epoch}, {stream_position(stream_state)}"
                if failures > stream.retry_attempts:
                    raise FlightMindError(
                        f"the general pool {stream.source} failed {_times(failures)} at {where} "
                        f"({type(error).__name__}: {error}); training stopped and the last checkpoint is intact: "
                        "fix the source or the network and resume with --ckpt_path last"
                    ) from None
                delay = stream.retry_delay * 2 ** (failures - 1)
                log.warning(
                    f"general pool {stream.source}: {type(error).__name__}: {error} at {where}; "
                    f"retry {failures} of {stream.retry_attempts} in {delay:g} s"
                )
                time.sleep(delay)
                continue
            if whole_pass and documents_this_pass == 0:
                raise FlightMindError(
                    f"reader {self.index} of {stream.readers} (ranks × workers) got no usable document from the general "
                    f"pool {stream.source} in a whole pass: the pool has too few documents or shards for this many readers; "
                    "lower data.num_workers or add files"
                )
            if buffer is not None:
                # What the buffer held, in reads of the usual size: no single long tokenization
                # stalls the other workers, which wait for this one's turn.
                held = buffer.drain()
                for start in range(0, len(held), DOCUMENTS_PER_READ):
                    if pending.add(held[start : start + DOCUMENTS_PER_READ], SkipCounts(), stream_state):
                        yield from self._tokenize(tokenizer, eot, epoch, pending.take())
            yield from self._tokenize(tokenizer, eot, epoch, pending.take())
            epoch, stream_state, whole_pass, documents_this_pass = epoch + 1, None, True, 0
            buffer = self._shuffle_buffer(epoch)

    def _shuffle_buffer(self, epoch: int) -> ShuffleBuffer | None:
        if not self.stream.shuffle_buffer:
            return None
        return ShuffleBuffer(self.stream.shuffle_buffer, np.random.default_rng([self.stream.seed, self.index, epoch]))

    @classmethod
    def _tokenize(cls, tokenizer, eot: int, epoch: int, reads: list) -> Iterator[ReadBatch]:
        """Several reads tokenized in one call, then each read's tokens as its own batch."""
        texts = [text for documents, _, _ in reads for text in documents]
        try:
            tokens = encode_documents(tokenizer, texts, eot)
            ends = np.flatnonzero(tokens == eot)  # the separator after each document
        except Exception:
            ends = None
        if ends is None or len(ends) != len(texts):  # a text the tokenizer rejects, or one holding <|endoftext|>
            for documents, skipped, stream_state in reads:
                yield cls._batch(tokenizer, eot, epoch, documents, skipped, stream_state)
            return
        start = documents_so_far = 0
        for documents, skipped, stream_state in reads:
            documents_so_far += len(documents)
            end = int(ends[documents_so_far - 1]) + 1 if documents_so_far else 0
            yield ReadBatch(epoch, tokens[start:end], len(documents), skipped, stream_state)
            start = end

    @staticmethod
    def _batch(tokenizer, eot: int, epoch: int, documents: list[str], skipped: SkipCounts, stream_state: dict) -> ReadBatch:
        try:
            return ReadBatch(epoch, encode_documents(tokenizer, documents, eot), len(documents), skipped, stream_state)
        except Exception:  # the Rust tokenizer rejected a text: find it, keep the others
            pass
        pieces = []
        for document in documents:
            try:
                pieces.append(encode_documents(tokenizer, [document], eot))
            except Exception:
                skipped.add("tokenize_error")
        tokens = np.concatenate(pieces) if pieces else np.empty(0, dtype=TOKEN_DTYPE)
        return ReadBatch(epoch, tokens, len(pieces), skipped, stream_state)

    # -- packing -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        span = self.seq_len + 1
        batches = self.batches()
        read = self._marks[-1][0]  # tokens read so far, counted from the start position
        buffer, buffer_start = np.empty(0, dtype=TOKEN_DTYPE), 0
        while True:
            if read - self._next < span:
                # Keep the unused tail; right after a resume the next window may lie beyond what was read.
                if self._next <= read:
                    pieces, new_start = [buffer[self._next - buffer_start :]], self._next
                else:
                    pieces, new_start = [], read
                # Enough for ready_sequences windows: each needs seq_len tokens beyond the first.
                while read - self._next < self.stream.ready_sequences * self.seq_len + 1:
                    batch = next(batches)
                    pieces.append(batch.tokens)
                    read += len(batch.tokens)
                    before = self._marks[-1][1]
                    skipped = dict(before["skipped"])
                    for reason, n in batch.skipped.by_reason.items():
                        skipped[reason] = skipped.get(reason, 0) + n
                    self._marks.append(
                        (read, {"reader": self.index, "epoch": batch.epoch, "stream": batch.stream_state,
                                "documents": before["documents"] + batch.documents, "skipped": skipped})
                    )
                buffer, buffer_start = np.concatenate(pieces), new_start
            offset = self._next - buffer_start
            window = buffer[offset : offset + span]
            self._next += self.seq_len
            while len(self._marks) > 1 and self._marks[1][0] <= self._next:
                self._marks.popleft()
            yield window


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times in a row"


def _valid_texts(texts: list) -> tuple[list[str], SkipCounts]:
    """The texts ``prepare`` would keep, and the others counted by reason."""
    skipped = SkipCounts()
    valid = []
    for text in texts:
        try:
            valid.append(document_text({"text": text}, "text"))
        except BadLine as bad:
            skipped.add(bad.reason)
    return valid, skipped


def _reset_fsspec_lock() -> None:
    # What datasets does in its own DataLoader workers: a forked child must not wait on the
    # parent's fsspec event-loop lock.
    try:
        import fsspec.asyn

        fsspec.asyn.reset_lock()
    except (ImportError, AttributeError):
        pass
