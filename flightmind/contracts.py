"""The contracts between FlightMind's stages, in one place.

What ``prepare`` writes and training reads (the prepared directory), what every FlightMind
tokenizer holds (the special tokens, at most 65,536 ids), the label that no loss counts
(``IGNORE_INDEX``), and what a training module may ask of its datamodule (``TokenData``).
The README's "Preparing your own data" section describes the same format for users.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tokenizers import Tokenizer

from flightmind.errors import FlightMindError

# -- tokens ------------------------------------------------------------------------------------
EOT = "<|endoftext|>"  # separates documents in the shards; every prompt starts after one
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"  # chat markers
SPECIAL_TOKENS = (EOT, SYSTEM, USER, ASSISTANT, END)  # ids 0..4 in every tokenizer FlightMind trains
IGNORE_INDEX = -100  # a target F.cross_entropy skips: padding, and non-assistant turns when fine-tuning

# -- the prepared directory ----------------------------------------------------------------------
TOKEN_DTYPE = np.uint16
MAX_VOCAB_SIZE = 2**16  # the ids uint16 shards can hold
SPLITS = ("train", "val")
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"  # written last: a directory holding one is complete
# meta.json: {"dtype", "vocab_size", "tokenizer_sha256", "<split>": {"documents", "tokens", ...},
#             "files": {...}, "skipped": {...}, "args": {...}, "demo": bool, "max_token_id": int}


def shard_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.bin"


def read_meta(directory: str | Path) -> dict:
    """meta.json of a prepared directory, after checking that its shards are the ones it describes."""
    directory = Path(directory)
    path = directory / META_FILE
    if not path.is_file():
        raise FlightMindError(f"{directory} has no {META_FILE}: run `flightmind prepare --input FILE.jsonl --out {directory}` first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        expected_bytes = {split: meta[split]["tokens"] * np.dtype(meta["dtype"]).itemsize for split in SPLITS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlightMindError(f"cannot read {path} ({type(e).__name__}: {e}); rerun `flightmind prepare --out {directory}`") from None
    for split, size in expected_bytes.items():
        shard = shard_path(directory, split)
        actual = shard.stat().st_size if shard.is_file() else None
        if actual != size:
            found = "is missing" if actual is None else f"has {actual:,} bytes"
            raise FlightMindError(
                f"{shard} {found} but {path} says {size:,}: the directory is incomplete or was changed; "
                f"rerun `flightmind prepare --out {directory}`"
            )
    return meta


def open_shard(directory: str | Path, split: str) -> np.ndarray:
    """The tokens of one split, memory-mapped read-only (an empty array for an empty split)."""
    path = shard_path(directory, split)
    if path.stat().st_size == 0:  # np.memmap refuses empty files
        return np.empty(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def shard_max_token_id(directory: str | Path, split: str) -> int:
    """The largest id in a shard (-1 when empty): one sequential pass over a memory map."""
    tokens = open_shard(directory, split)
    return int(tokens.max()) if len(tokens) else -1


def check_token_ids(directory: str | Path, meta: dict, vocab_size: int) -> None:
    """Every id in the shards names a token of the directory's tokenizer (``vocab_size`` tokens).

    ``prepare`` records ``max_token_id``; a meta.json from before it is checked by scanning the shards."""
    directory = Path(directory)
    recorded = meta.get("max_token_id")
    if recorded is not None:
        found = {f"{directory} (meta.json's max_token_id)": recorded}
    else:
        found = {str(shard_path(directory, split)): shard_max_token_id(directory, split) for split in SPLITS}
    for where, largest in found.items():
        if largest >= vocab_size:
            raise FlightMindError(
                f"{where} holds token id {largest} but the tokenizer {directory / TOKENIZER_FILE} has {vocab_size:,} "
                f"tokens: the shards were prepared with another tokenizer or were changed; rerun "
                f"`flightmind prepare --out {directory}`"
            )


# -- the tokenizer -------------------------------------------------------------------------------
def check_tokenizer(tokenizer: Tokenizer, source: str | Path) -> Tokenizer:
    """A FlightMind tokenizer: every special token a single token, at most MAX_VOCAB_SIZE ids."""
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None or tokenizer.encode(token).ids != [token_id]:
            raise FlightMindError(
                f"tokenizer {source} lacks the special token {token}; "
                f"FlightMind needs all of {', '.join(SPECIAL_TOKENS)}: retrain it with `flightmind prepare`"
            )
    vocab_size = tokenizer.get_vocab_size()
    if vocab_size > MAX_VOCAB_SIZE:
        raise FlightMindError(
            f"tokenizer {source} has {vocab_size:,} tokens, which does not fit uint16 token shards "
            f"(at most {MAX_VOCAB_SIZE:,})"
        )
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FlightMindError(f"tokenizer file {path} does not exist; train one with `flightmind prepare`")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception for unreadable or invalid JSON
        raise FlightMindError(f"cannot read tokenizer {path}: {e}") from None
    return check_tokenizer(tokenizer, path)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's compact JSON, which lists vocabulary, merges and added tokens in id
    order: the same tokenizer gives the same hash however its file was formatted."""
    return hashlib.sha256(tokenizer.to_str(pretty=False).encode("utf-8")).hexdigest()


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOT)
    if token_id is None:
        raise FlightMindError(f"tokenizer has no {EOT} token; retrain it with `flightmind prepare`")
    return token_id


# -- what a training module asks of its datamodule -----------------------------------------------
@runtime_checkable
class TokenData(Protocol):
    """Implemented by ``PretrainDataModule`` and ``FinetuneDataModule``; read by the training modules."""

    batch_size: int  # sequences per micro-batch on each device

    @property
    def seq_len(self) -> int:
        """Longest input sequence a batch holds."""

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer.json the data is (or will be) tokenized with."""

    def tokenizer(self) -> Tokenizer:
        """That tokenizer, loaded once (call after ``setup``)."""


@runtime_checkable
class ChatData(TokenData, Protocol):
    """``FinetuneDataModule``: chat records, some of whose prompts are scored on their JSON action."""

    action_set: list[dict]  # {"prompt": token ids up to the assistant marker, "action": the reference}
