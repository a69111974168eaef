"""The general pool: text streamed from parquet row groups or JSON-lines blocks, in a seeded order whose
state is a few numbers, split between readers by blocks, packed into windows.

    data:
      init_args:
        aviation_ratio: 0.30
        general:                     # resolved like datasets.load_dataset(..., streaming=True)
          path: HuggingFaceFW/fineweb-edu
          name: default
          split: train

Units. ``datasets`` resolves the pool's files (hub or local, globs allowed); at start the footer of each
parquet file gives its row groups, and local JSON-lines files are cut into blocks of
``JSON_LINES_PER_UNIT`` lines (byte ranges). A unit is one of those: readable alone, by position.

Order. Pass ``p`` lays the units out in a seeded permutation (``seed``, ``p``) and cuts that sequence
into blocks of ``block_units`` consecutive units (about ``shuffle_block`` documents); the documents of
block ``k`` are read whole and put in a seeded permutation (``seed``, ``p``, ``k``). Global block
``g`` is block ``g mod B`` of pass ``g // B``: one endless global stream of blocks, the same on every
machine. With ``data.shuffle: false`` both permutations are the identity.

Readers. Every DataLoader worker of every rank is one reader; reader ``i`` of ``R`` reads blocks
``i, i + R, i + 2R, …``. Its position is its list of unfinished segments ``[block, document, tokens]``
(the first is the one in progress: documents of that block done, and tokens of the next ones already
packed) plus where its fresh blocks continue: a few numbers, saved with every checkpoint. Resumed on
the same layout a reader yields exactly the windows it would have yielded. On another number of ranks
or workers, ``rebalance`` hands every unfinished segment and every block not yet started to the new
readers (none twice, none lost), so within a pass no document is repeated or skipped.

Shuffle quality (tests/data/test_streaming.py): mean run of consecutive documents from one source file,
against the 10,000-document shuffle buffer this replaced. Faults: a transient read error is retried
from the unit that failed, ``retry_delay · 2^(attempt-1)`` seconds later, ``retry_attempts`` times in a
row at most, then one ``FlightMindError`` stops the run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flightmind.contracts import TOKEN_DTYPE, eot_id, load_tokenizer
from flightmind.data.documents import UTF8_BOM, BadLine, SkipCounts, document_text, parse_json_object
from flightmind.data.prepare import encode_documents
from flightmind.errors import FlightMindError

log = logging.getLogger(__name__)

# Documents per read: the grain of a reader's position within a block.
DOCUMENTS_PER_READ = 64
# Text per encode_batch call (prepare's block size): per-call costs vanish, rayon has work to share.
TOKENIZE_CHARS = 1 << 18
# Lines of a JSON-lines file per unit.
JSON_LINES_PER_UNIT = 1000
# Rows read at start-up to find one usable document.
FIRST_DOCUMENT_ROWS = 1000
# Parquet files a reader keeps open (their footers read once).
OPEN_FILES = 8
# OSErrors that no retry mends.
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
# Network errors of HTTP clients that do not derive from OSError, by "package.Class".
_TRANSIENT_CLASSES = {"aiohttp.ClientError", "httpx.TransportError", "httpx2.TransportError"}


@dataclass
class GeneralPool:
    """Where the general text comes from: the arguments of ``datasets.load_dataset(..., streaming=True)``.

    Args:
        path: a hub dataset (``HuggingFaceFW/fineweb-edu``) or a file format (``parquet``, ``json``).
        name: the dataset configuration, e.g. ``default`` or ``sample-10BT``.
        split: the split to stream.
        data_files: local or remote files (globs allowed), for ``path: parquet`` / ``json``.
        revision: a hub branch, tag or commit (pin one: a resumed run refuses a pool whose files changed).
        text_column: the column holding the document text.
        shuffle_block: documents per shuffled block (whole units; with ``data.shuffle``); 0: one unit.
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
    shuffle_block: int = 10_000
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


# ---------------------------------------------------------------------------------------------
# Units: (file index, row group or first byte, -1 or end byte, rows)

Unit = tuple[int, int, int, int]


def _is_remote(file: str) -> bool:
    return "://" in file


def _open_binary(file: str):
    if not _is_remote(file):
        return open(file, "rb")
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(file)
    return filesystem.open(path, "rb")


def _kind(file: str, builder_name: str) -> str:
    suffixes = "".join(Path(file.split("?")[0]).suffixes).lower()
    if suffixes.endswith(".parquet"):
        return "parquet"
    if suffixes.endswith((".json", ".jsonl")):
        return "json"
    if any(s in suffixes for s in (".gz", ".bz2", ".zst", ".xz", ".zip")):
        return "compressed"
    return builder_name if builder_name in ("parquet", "json") else "unknown"


def _units_of(index: int, file: str, kind: str) -> list[Unit]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        with _open_binary(file) as handle:
            metadata = pq.read_metadata(handle)
        return [(index, group, -1, metadata.row_group(group).num_rows) for group in range(metadata.num_row_groups)
                if metadata.row_group(group).num_rows]
    units, start, lines, offset, last = [], 0, 0, 0, b"\n"
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 24):
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + offset + 1  # byte after each newline
            numbers = np.arange(lines + 1, lines + len(ends) + 1)
            for cut in ends[numbers % JSON_LINES_PER_UNIT == 0]:
                units.append((index, start, int(cut), JSON_LINES_PER_UNIT))
                start = int(cut)
            lines += len(ends)
            offset += len(chunk)
            last = chunk[-1:]
    if offset > start:
        units.append((index, start, offset, lines % JSON_LINES_PER_UNIT + (last != b"\n")))
    return units


def read_unit(stream: GeneralStream, unit: Unit, open_files: OrderedDict) -> list:
    """The unit's rows in file order: texts (or anything else found in the text column), or a ``BadLine``."""
    file_index, start, stop, _ = unit
    file = stream.files[file_index]
    if stop < 0:
        import pyarrow.parquet as pq

        parquet = open_files.pop(file_index, None) or pq.ParquetFile(_open_binary(file))
        open_files[file_index] = parquet
        if len(open_files) > OPEN_FILES:
            open_files.popitem(last=False)
        return parquet.read_row_group(start, columns=[stream.text_column]).column(0).to_pylist()
    with open(file, "rb") as handle:
        handle.seek(start)
        data = handle.read(stop - start)
    if start == 0 and data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    rows = []
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue  # blank lines are not documents
        try:
            obj = parse_json_object(raw)
            rows.append(obj[stream.text_column] if stream.text_column in obj else BadLine("missing_key", ""))
        except BadLine as bad:
            rows.append(bad)
    return rows


# ---------------------------------------------------------------------------------------------
# The opened pool (once per run, before training; sent to every DataLoader worker)


@dataclass
class GeneralStream:
    """The pool's units and the order they are read in."""

    source: str
    files: list[str]
    units: list[Unit]
    text_column: str
    shuffle: bool
    seed: int
    block_units: int
    ready_sequences: int
    retry_attempts: int
    retry_delay: float
    layout: dict = field(default_factory=dict)  # what a saved reader position is only valid for
    _order: tuple | None = field(default=None, repr=False, compare=False)  # (pass, unit order), cached

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_order": None}

    @property
    def blocks_per_pass(self) -> int:
        return -(-len(self.units) // self.block_units)

    @property
    def documents(self) -> int:
        """Rows in the pool (blank JSON lines included)."""
        return sum(unit[3] for unit in self.units)

    def summary(self) -> str:
        per_block = self.documents * self.block_units / len(self.units)
        order = "seeded order of units and of the documents in each block" if self.shuffle else "file order"
        return (
            f"{self.source}: {_count(len(self.files), 'file')}, {_count(len(self.units), 'unit')}, {self.documents:,} documents; "
            f"blocks of {_count(self.block_units, 'unit')} (≈ {per_block:,.0f} documents), {order}"
        )

    def estimate_tokens(self, tokenizer_path: str | Path) -> tuple[float, int]:
        """(tokens in one pass, documents it is estimated from): the first ``FIRST_DOCUMENT_ROWS`` rows
        tokenized, scaled to every row; for the start-up report of a pool without a published size."""
        tokenizer = load_tokenizer(tokenizer_path)
        rows, open_files = [], OrderedDict()
        for unit in self.units:
            rows += read_unit(self, unit, open_files)
            if len(rows) >= FIRST_DOCUMENT_ROWS:
                break
        rows = rows[:FIRST_DOCUMENT_ROWS]
        documents, _ = _valid_texts(rows)
        tokens = len(encode_documents(tokenizer, documents, eot_id(tokenizer)))
        return tokens * self.documents / max(len(rows), 1), len(rows)

    # -- the order -----------------------------------------------------------------------------
    def block(self, g: int) -> list[Unit]:
        """The units of global block ``g``, in reading order."""
        pass_, k = divmod(g, self.blocks_per_pass)
        if self._order is None or self._order[0] != pass_:
            order = np.random.default_rng([self.seed, 1, pass_]).permutation(len(self.units)) if self.shuffle else None
            self._order = (pass_, order)
        order = self._order[1]
        picked = range(k * self.block_units, min((k + 1) * self.block_units, len(self.units)))
        return [self.units[i if order is None else int(order[i])] for i in picked]

    def block_permutation(self, g: int, rows: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        pass_, k = divmod(g, self.blocks_per_pass)
        return np.random.default_rng([self.seed, 2, pass_, k]).permutation(rows)

    def where(self, unit: Unit) -> str:
        file_index, start, stop, _ = unit
        part = f"row group {start}" if stop < 0 else f"bytes {start:,}-{stop:,}"
        return f"{self.files[file_index]} {part}"

    def reader(self, index: int, readers: int, seq_len: int, tokenizer_path: str | Path, state: dict | None = None) -> GeneralReader:
        return GeneralReader(self, index, readers, seq_len, tokenizer_path, state)


def initial_state(index: int, readers: int) -> dict:
    """Reader ``index`` of ``readers`` at the start of the run: blocks index, index + readers, …"""
    return {"reader": index, "todo": [[index, 0, 0]], "fresh": [0, index, readers, 1], "documents": 0, "skipped": {}}


def _fresh(state: dict, j: int) -> int:
    base, lane, stride, _ = state["fresh"]
    return base + lane + j * stride


def _next_block(state: dict) -> dict:
    """The position after the segment in progress: the next unfinished segment, or the next fresh block."""
    todo, fresh = state["todo"][1:], list(state["fresh"])
    if not todo:
        todo = [[_fresh(state, fresh[3]), 0, 0]]
        fresh[3] += 1
    return {**state, "todo": todo, "fresh": fresh}


def _at(state: dict, g: int, document: int, tokens: int = 0) -> dict:
    return {**state, "todo": [[g, document, tokens], *state["todo"][1:]]}


def rebalance(states: list[dict], readers: int) -> list[dict]:
    """The positions of ``readers`` new readers that together read exactly what ``states`` had left.

    Every unfinished segment goes to one new reader, whole (documents and tokens already packed stay
    skipped); so does every block an old reader had not started below the furthest block any had
    started; blocks from there on are dealt out afresh. Document and skip counts are kept in total.
    """
    frontier = max(_fresh(state, state["fresh"][3]) for state in states)
    segments = []
    for state in states:
        segments += [list(segment) for segment in state["todo"]]
        j = state["fresh"][3]
        while _fresh(state, j) < frontier:
            segments.append([_fresh(state, j), 0, 0])
            j += 1
    segments.sort()
    skipped: dict[str, int] = {}
    for state in states:
        for reason, n in state["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
    new = []
    for i in range(readers):
        mine = segments[i::readers]
        fresh = [frontier, i, readers, 0]
        state = {"reader": i, "todo": mine, "fresh": fresh, "documents": 0, "skipped": {}}
        new.append(state if mine else _next_block({**state, "todo": [None]}))
    new[0]["documents"] = sum(state["documents"] for state in states)
    new[0]["skipped"] = skipped
    return new


def open_general_pool(pool: GeneralPool, *, seed: int, shuffle: bool) -> GeneralStream:
    """Resolve the pool's files the way ``load_dataset`` does, index their units and check the first document."""
    from datasets import load_dataset_builder  # imported here: it takes a second, pure-aviation runs skip it

    source = pool.describe()
    if pool.ready_sequences < 1 or min(pool.shuffle_block, pool.retry_attempts, pool.retry_delay) < 0:
        raise FlightMindError(
            f"data.general: ready_sequences ({pool.ready_sequences}) must be at least 1; shuffle_block "
            f"({pool.shuffle_block}), retry_attempts ({pool.retry_attempts}) and retry_delay ({pool.retry_delay}) at least 0"
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
    data_files = builder.config.data_files or {}
    if pool.split not in data_files:
        raise FlightMindError(
            f"general pool {source}: Bad split: {pool.split}. Available splits: {sorted(data_files)}; set data.general.split"
        )
    files = [str(file) for file in data_files[pool.split]]
    builder_name = type(builder).__module__.rsplit(".", 1)[-1]
    kinds = [_kind(file, builder_name) for file in files]
    for file, kind in zip(files, kinds):
        if kind not in ("parquet", "json") or (kind == "json" and _is_remote(file)):
            raise FlightMindError(
                f"general pool file {file}: only parquet files (local or remote) and local uncompressed JSON lines "
                "can be read by position; convert it, or download and decompress it first"
            )
        _check_local_file(file, pool.text_column)
    try:
        with ThreadPoolExecutor(max_workers=16) as threads:  # one footer request per remote file
            units = [unit for found in threads.map(_units_of, range(len(files)), files, kinds) for unit in found]
    except FlightMindError:
        raise
    except Exception as e:
        raise FlightMindError(f"cannot index the general pool {source} ({type(e).__name__}: {e})") from None
    if not units:
        raise FlightMindError(f"the general pool {source} yields no documents: check data.general.data_files and split")
    rows = sum(unit[3] for unit in units)
    block_units = max(1, min(len(units), round(pool.shuffle_block * len(units) / max(rows, 1))))
    fingerprint = hashlib.sha1(repr([("/".join(Path(f).parts[-2:]), kinds[i]) for i, f in enumerate(files)] + units).encode())
    layout = {"units": len(units), "documents": rows, "fingerprint": fingerprint.hexdigest()[:16],
              "block_units": block_units, "shuffle": shuffle, "seed": seed}
    stream = GeneralStream(
        source=source, files=files, units=units, text_column=pool.text_column, shuffle=shuffle, seed=seed,
        block_units=block_units, ready_sequences=pool.ready_sequences, retry_attempts=pool.retry_attempts,
        retry_delay=pool.retry_delay, layout=layout,
    )
    _check_first_document(stream)
    return stream


def _check_local_file(file: str, text_column: str) -> None:
    """A local parquet or JSON-lines file must have the text column (a later file would fail mid-run)."""
    path = Path(str(file))
    if not path.is_file():
        return  # a remote file: its rows are checked instead
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
                    return list(parse_json_object(raw.removeprefix(UTF8_BOM)))
                except BadLine:
                    return None  # not JSON lines; reading says what it makes of it
    return None


def _check_first_document(stream: GeneralStream) -> None:
    skipped = SkipCounts()
    open_files: OrderedDict = OrderedDict()
    try:
        for unit in stream.units:
            for row in read_unit(stream, unit, open_files):
                documents, bad = _valid_texts([row])
                if documents:
                    return
                skipped.merge(bad)
                if skipped.total >= FIRST_DOCUMENT_ROWS:
                    break
            else:
                continue
            break
    except Exception as e:
        raise FlightMindError(f"cannot read the general pool {stream.source} ({type(e).__name__}: {e})") from None
    reasons = ", ".join(f"{reason} {n}" for reason, n in skipped.as_dict().items() if n)
    if not skipped.total:
        raise FlightMindError(f"the general pool {stream.source} yields no documents: check data.general.data_files and split")
    raise FlightMindError(
        f"the general pool {stream.source} yields no usable text in column {stream.text_column!r} in its first "
        f"{skipped.total:,} rows (skipped: {reasons}); check data.general.text_column"
    )


# ---------------------------------------------------------------------------------------------
# One reader


class PendingReads:
    """Reads not yet tokenized, as (documents, skipped, position after, tokens to drop, pass), gathered
    until they hold ``TOKENIZE_CHARS`` of text."""

    def __init__(self) -> None:
        self.reads: list[tuple[list[str], SkipCounts, dict, int, int]] = []
        self.characters = 0

    def add(self, documents: list[str], skipped: SkipCounts, after: dict, drop: int, pass_: int) -> bool:
        """Keep one read; True once enough text is gathered to tokenize."""
        self.reads.append((documents, skipped, after, drop, pass_))
        self.characters += sum(map(len, documents))
        return self.characters >= TOKENIZE_CHARS

    def take(self) -> list[tuple[list[str], SkipCounts, dict, int, int]]:
        reads, self.reads, self.characters = self.reads, [], 0
        return reads


@dataclass
class ReadBatch:
    epoch: int  # the pass of the block read
    tokens: np.ndarray  # uint16: each document's ids, then <|endoftext|> (less the tokens a resume drops)
    documents: int
    skipped: SkipCounts
    after: dict  # the reader's position after this batch


class GeneralReader:
    """One reader's blocks as an endless iterator of ``seq_len + 1``-token windows (uint16).

    ``state_dict()`` is the position of the next window; a reader built with it continues there.
    """

    def __init__(
        self, stream: GeneralStream, index: int, readers: int, seq_len: int, tokenizer_path: str | Path, state: dict | None = None
    ) -> None:
        if not 0 <= index < readers:
            raise ValueError(f"reader {index} of {readers}")
        self.stream = stream
        self.index = index
        self.readers = readers
        self.seq_len = seq_len
        self.tokenizer_path = str(tokenizer_path)
        start = state or initial_state(index, readers)
        if start["reader"] != index:
            raise ValueError(f"the position of reader {start['reader']} given to reader {index}")
        self._start = start
        # (first token of a read batch, the reader position before it), oldest first
        self._marks: deque[tuple[int, dict]] = deque([(0, start)])
        self._next = 0  # token index (from the start position) of the next window

    # -- position ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        first, state = self._marks[0]
        g, document, tokens = state["todo"][0]
        return _at(state, g, document, tokens + self._next - first)

    # -- reading -------------------------------------------------------------------------------
    def batches(self) -> Iterator[ReadBatch]:
        """The reader's documents, in block order, tokenized, one read batch at a time, pass after pass."""
        tokenizer = load_tokenizer(self.tokenizer_path)
        eot = eot_id(tokenizer)
        stream = self.stream
        state = self._start
        pending = PendingReads()
        open_files: OrderedDict = OrderedDict()
        barren = 0  # blocks in a row without a usable document
        while True:
            g, first, drop = state["todo"][0]
            rows = self.read_block(g, open_files)
            useful = False
            for start in range(first, len(rows), DOCUMENTS_PER_READ):
                stop = start + DOCUMENTS_PER_READ
                documents, skipped = _valid_texts(rows[start:stop])
                useful = useful or bool(documents)
                after = _at(state, g, stop) if stop < len(rows) else _next_block(state)
                if pending.add(documents, skipped, after, drop if start == first else 0, g // stream.blocks_per_pass):
                    yield from self._tokenize(tokenizer, eot, pending.take())
            barren = 0 if useful else barren + 1
            if barren > stream.blocks_per_pass:
                raise FlightMindError(
                    f"reader {self.index} of {self.readers} (ranks × workers) found no usable document in "
                    f"{barren:,} blocks of the general pool {stream.source}: check its text column and files"
                )
            state = _next_block(state)

    def read_block(self, g: int, open_files: OrderedDict | None = None) -> list:
        """The rows of global block ``g`` in reading order (a failing unit retried)."""
        open_files = OrderedDict() if open_files is None else open_files
        stream = self.stream
        rows = []
        for unit in stream.block(g):
            failures = 0
            while True:
                try:
                    rows += read_unit(stream, unit, open_files)
                    break
                except Exception as error:
                    if not is_transient(error):
                        raise
                    open_files.pop(unit[0], None)  # reopen the file on retry
                    failures += 1
                    where = f"reader {self.index} of {self.readers}, pass {g // stream.blocks_per_pass}, block {g}, {stream.where(unit)}"
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
        order = stream.block_permutation(g, len(rows))
        return rows if order is None else [rows[i] for i in order]

    def _tokenize(self, tokenizer, eot: int, reads: list) -> Iterator[ReadBatch]:
        """Several reads tokenized in one call, then each read's tokens as its own batch."""
        texts = [text for documents, *_ in reads for text in documents]
        try:
            tokens = encode_documents(tokenizer, texts, eot)
            ends = np.flatnonzero(tokens == eot)  # the separator after each document
        except Exception:
            ends = None
        if ends is None or len(ends) != len(texts):  # a text the tokenizer rejects, or one holding <|endoftext|>
            pieces = [self._encode_one_read(tokenizer, eot, documents, skipped) for documents, skipped, *_ in reads]
        else:
            pieces, start, documents_so_far = [], 0, 0
            for documents, skipped, *_ in reads:
                documents_so_far += len(documents)
                end = int(ends[documents_so_far - 1]) + 1 if documents_so_far else 0
                pieces.append((tokens[start:end], len(documents), skipped))
                start = end
        for (piece, documents, skipped), (_, _, after, drop, pass_) in zip(pieces, reads):
            if drop > len(piece):
                raise RuntimeError(f"a saved position skips {drop} tokens of a read of {len(piece)}")
            yield ReadBatch(pass_, piece[drop:], documents, skipped, after)

    @staticmethod
    def _encode_one_read(tokenizer, eot: int, documents: list[str], skipped: SkipCounts) -> tuple[np.ndarray, int, SkipCounts]:
        try:
            return encode_documents(tokenizer, documents, eot), len(documents), skipped
        except Exception:  # the Rust tokenizer rejected a text: find it, keep the others
            pass
        pieces = []
        for document in documents:
            try:
                pieces.append(encode_documents(tokenizer, [document], eot))
            except Exception:
                skipped.add("tokenize_error")
        tokens = np.concatenate(pieces) if pieces else np.empty(0, dtype=TOKEN_DTYPE)
        return tokens, len(pieces), skipped

    # -- packing -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        span = self.seq_len + 1
        batches = self.batches()
        read = self._marks[-1][0]  # tokens read so far, counted from the start position
        buffer, buffer_start = np.empty(0, dtype=TOKEN_DTYPE), 0
        ahead = span  # the first fill: one window (one tokenization call) and the first batch goes out
        while True:
            if read - self._next < span:
                pieces, new_start = [buffer[self._next - buffer_start :]], self._next  # keep the unused tail
                # Then enough for ready_sequences windows: each needs seq_len tokens beyond the first.
                while read - self._next < ahead:
                    batch = next(batches)
                    pieces.append(batch.tokens)
                    read += len(batch.tokens)
                    before = self._marks[-1][1]
                    skipped = dict(before["skipped"])
                    for reason, n in batch.skipped.by_reason.items():
                        skipped[reason] = skipped.get(reason, 0) + n
                    self._marks.append(
                        (read, {**batch.after, "documents": before["documents"] + batch.documents, "skipped": skipped})
                    )
                buffer, buffer_start = np.concatenate(pieces), new_start
                ahead = self.stream.ready_sequences * self.seq_len + 1
            offset = self._next - buffer_start
            window = buffer[offset : offset + span]
            self._next += self.seq_len
            while len(self._marks) > 1 and self._marks[1][0] <= self._next:
                self._marks.popleft()
            yield window


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}" + ("" if n == 1 else "s")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times in a row"


def _valid_texts(rows: list) -> tuple[list[str], SkipCounts]:
    """The texts ``prepare`` would keep, and the others counted by reason."""
    skipped = SkipCounts()
    valid = []
    for row in rows:
        if isinstance(row, BadLine):
            skipped.add(row.reason)
            continue
        try:
            valid.append(document_text({"text": row}, "text"))
        except BadLine as bad:
            skipped.add(bad.reason)
    return valid, skipped
