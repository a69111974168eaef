"""The FlightMind tokenizer: byte-level BPE with five special tokens.

Byte-level means every string, whatever its script or stray bytes, maps to tokens and decodes back
to exactly itself; nothing is ever unknown. The special tokens take ids 0..4 so that `<|endoftext|>`
(the document separator in packed shards) and the chat markers mean the same id in every tokenizer
FlightMind trains.
"""

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from flightmind.errors import FlightMindError

EOT = "<|endoftext|>"
SPECIAL_TOKENS = (EOT, "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# Shards store token ids as uint16.
MAX_VOCAB_SIZE = 2**16
# The 256 byte symbols and the special tokens must fit before any merge can be learned.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size > MAX_VOCAB_SIZE:
        raise FlightMindError(
            f"vocabulary size {vocab_size:,} does not fit uint16 token shards "
            f"(at most {MAX_VOCAB_SIZE:,} ids); choose a smaller --vocab-size"
        )
    if vocab_size < MIN_VOCAB_SIZE:
        raise FlightMindError(
            f"vocabulary size {vocab_size:,} is too small: 256 byte tokens and "
            f"{len(SPECIAL_TOKENS)} special tokens need at least {MIN_VOCAB_SIZE}"
        )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 32768) -> Tokenizer:
    """Learn a byte-level BPE from a stream of texts; the texts are never held in memory at once."""
    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write the tokenizer so that `path` is either the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tokenizer.save(str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FlightMindError(f"cannot write tokenizer {path}: {e.strerror or e}") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FlightMindError(f"tokenizer file {path} does not exist; train one with `flightmind prepare`")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception for unreadable or invalid JSON
        raise FlightMindError(f"cannot read tokenizer {path}: {e}") from None
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None or tokenizer.encode(token).ids != [token_id]:
            raise FlightMindError(
                f"tokenizer {path} lacks the special token {token}; "
                f"FlightMind needs all of {', '.join(SPECIAL_TOKENS)}: retrain it with `flightmind prepare`"
            )
    vocab_size = tokenizer.get_vocab_size()
    if vocab_size > MAX_VOCAB_SIZE:
        raise FlightMindError(
            f"tokenizer {path} has {vocab_size:,} tokens, which does not fit uint16 token shards "
            f"(at most {MAX_VOCAB_SIZE:,})"
        )
    return tokenizer


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's compact JSON, which lists vocabulary, merges and added tokens in id
    order: the same tokenizer gives the same hash however its file was formatted."""
    return hashlib.sha256(tokenizer.to_str(pretty=False).encode("utf-8")).hexdigest()


def eot_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(EOT)
    if token_id is None:
        raise FlightMindError(f"tokenizer has no {EOT} token; retrain it with `flightmind prepare`")
    return token_id
