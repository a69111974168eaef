"""A held-out set for ``flightmind test``: whole documents, every token of every document scored once.

The set is a JSONL file (``{"text": …}`` per line, tokenized with the run's tokenizer) or a packed
``.bin`` written by ``flightmind prepare`` (documents separated by ``<|endoftext|>``).

Each document is scored from its own start, never in the middle of a packed window: its context
begins with ``<|endoftext|>`` — in training every document follows one — and its targets are its
own tokens (the end-of-text after it is not scored). A document longer than ``seq_len`` is scored
in consecutive windows of ``seq_len`` targets; each window starts a fresh context, so a token early
in a later window sees fewer tokens before it than a sliding window would give it (a slightly
pessimistic perplexity, at one forward pass per token).

Bits per byte divide the total loss by ``ln 2`` × the UTF-8 bytes of the documents' text, which
makes them comparable across tokenizers. A ``.bin`` holds no text: its documents are decoded with
the tokenizer, which for FlightMind's byte-level BPE (no normalization) gives back exactly the
bytes that were prepared.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset, DistributedSampler

from flightmind.data.documents import SkipCounts, iter_documents
from flightmind.contracts import IGNORE_INDEX, eot_id
from flightmind.errors import FlightMindError



def jsonl_documents(path: Path, tokenizer: Tokenizer, strict: bool = False) -> tuple[list[list[int]], list[int]]:
    """Token ids and UTF-8 byte counts of the documents of a JSONL file. Bad lines are skipped and
    counted, as ``prepare`` does; ``strict`` stops at the first, naming its file:line."""
    counts = SkipCounts()
    try:
        texts = [doc.text for doc in iter_documents(path, strict=strict, counts=counts)]
    except FlightMindError as e:  # documents.py's advice names prepare's flag
        raise FlightMindError(str(e).replace("run without --strict", "set data.init_args.test_strict: false")) from None
    if counts.total:
        reasons = ", ".join(f"{reason} {n}" for reason, n in counts.as_dict().items() if n)
        rank_zero_warn(
            f"held-out set {path}: skipped {counts.total} bad line(s) ({reasons}); scored the other documents "
            "(data.init_args.test_strict: true stops at the first instead)"
        )
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [e.ids for e in encodings], [len(text.encode("utf-8")) for text in texts]


def packed_documents(path: Path, tokenizer: Tokenizer) -> tuple[list[list[int]], list[int]]:
    """The documents of a packed uint16 shard, split at ``<|endoftext|>``, and the bytes of their decoded text."""
    if path.stat().st_size % 2:
        raise FlightMindError(f"{path} has an odd number of bytes: it is not a uint16 token shard from `flightmind prepare`")
    tokens = np.fromfile(path, dtype=np.uint16)
    if tokens.size and int(tokens.max()) >= tokenizer.get_vocab_size():
        raise FlightMindError(
            f"{path} holds token id {int(tokens.max())}, beyond the tokenizer's {tokenizer.get_vocab_size()}: "
            "it was prepared with another tokenizer"
        )
    ends = np.flatnonzero(tokens == eot_id(tokenizer))
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [tokens.size]])
    documents = [tokens[s:e].tolist() for s, e in zip(starts, ends) if e > s]
    texts = tokenizer.decode_batch(documents, skip_special_tokens=False)
    return documents, [len(text.encode("utf-8")) for text in texts]


class HeldOutDocuments(Dataset):
    """Scoring windows of whole documents: each item is (tokens, bytes of text it accounts for, starts a document).

    ``tokens`` are the window's context start followed by its targets: inputs ``tokens[:-1]``,
    targets ``tokens[1:]``. A document's bytes are counted with its first window.
    """

    def __init__(self, path: str | Path, tokenizer: Tokenizer, seq_len: int, strict: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise FlightMindError(f"held-out set {path} does not exist (data.test_file)")
        if path.suffix == ".bin":
            documents, n_bytes = packed_documents(path, tokenizer)
        else:
            documents, n_bytes = jsonl_documents(path, tokenizer, strict)
        if not documents:
            raise FlightMindError(f"held-out set {path} holds no documents")
        eot = eot_id(tokenizer)
        self.windows: list[tuple[list[int], int, bool]] = []
        for ids, size in zip(documents, n_bytes):
            sequence = [eot, *ids]
            for start in range(0, len(ids), seq_len):
                first = start == 0
                self.windows.append((sequence[start : start + seq_len + 1], size if first else 0, first))
        # Longest first: windows of similar length share a batch, so little is padded.
        self.windows.sort(key=lambda window: -len(window[0]))
        self.num_documents = len(documents)
        self.num_tokens = sum(len(ids) for ids in documents)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[list[int], int, bool]:
        return self.windows[index]


def collate_windows(items: list[tuple[list[int], int, bool]]) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest window: padded targets are ``IGNORE_INDEX``, padded inputs any token."""
    width = max(len(tokens) for tokens, _, _ in items) - 1
    inputs = torch.zeros(len(items), width, dtype=torch.long)
    targets = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, (tokens, _, _) in enumerate(items):
        window = torch.tensor(tokens)
        inputs[row, : len(tokens) - 1] = window[:-1]
        targets[row, : len(tokens) - 1] = window[1:]
    return {
        "input_ids": inputs,
        "targets": targets,
        "bytes": torch.tensor([size for _, size, _ in items], dtype=torch.long),
        "documents": torch.tensor([int(first) for _, _, first in items], dtype=torch.long),
    }


class RankShard(DistributedSampler):
    """Rank ``r`` of ``W`` takes items ``r, r + W, …``: no padding, so no window is scored twice.

    A DistributedSampler, so that Lightning does not put one of its own (which pads) in its place.
    """

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def bits_per_byte(nats: float, n_bytes: float) -> float:
    return nats / (math.log(2) * n_bytes)
