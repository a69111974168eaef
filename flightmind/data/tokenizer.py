"""The FlightMind tokenizer: byte-level BPE with five special tokens.

Byte-level means every string, whatever its script or stray bytes, maps to tokens and decodes back
to exactly itself; nothing is ever unknown. The special tokens take ids 0..4 so that `<|endoftext|>`
(the document separator in packed shards) and the chat markers mean the same id in every tokenizer
FlightMind trains.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from flightmind.atomic import replace_with
from flightmind.contracts import MAX_VOCAB_SIZE, SPECIAL_TOKENS
from flightmind.errors import FlightMindError

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
    replace_with(path, lambda tmp: tokenizer.save(str(tmp)))
