"""The fine-tuning data: chat JSONL → tokens and assistant-only labels → padded batches.

Every record is tokenized once in ``setup`` with the chat template (chat.py) and kept in memory
(instruction data is small: the spec's 303K records are about 30M tokens). A record longer than
``max_seq_len + 1`` tokens is cut (the model then sees ``max_seq_len`` inputs) and counted; one left
with no assistant token to learn is dropped and counted too. Batches are padded to their longest
record with ``<|endoftext|>``; padding has the label ``IGNORE_INDEX`` and ``attention_mask`` False.

Validation records are held out by a hash of the seed and the record's user turns, unless
``val_files`` are given: records that share a prompt land on the same side, so validation scores
prompts the model never trained on (synthetic commands repeat their phrasings). Validation and test batches give the masked loss; the first
``action_eval_records`` evaluated records that end in a JSON action also become ``action_set``
(prompt tokens and reference action), which the module decodes from to score action accuracy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from tokenizers import Tokenizer
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from flightmind.contracts import IGNORE_INDEX, eot_id, load_tokenizer
from flightmind.data.chat import ChatTemplate, Message, read_chat_records, reference_action
from flightmind.data.documents import SkipCounts
from flightmind.data.loaders import loader_options, training_micro_batches
from flightmind.data.sequences import ResumableDataLoader, StreamSampler
from flightmind.errors import FlightMindError

ENCODE_CHUNK = 4096  # records per tokenizer.encode_batch call


@dataclass
class ChatDataStats:
    """What reading and tokenizing did, for the summary printed at start-up."""

    skipped: SkipCounts = field(default_factory=SkipCounts)
    truncated: int = 0  # records cut to max_seq_len + 1 tokens
    truncated_away: int = 0  # of those, records left with no assistant token, dropped

    def summary(self, max_seq_len: int) -> str:
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(self.skipped.by_reason.items()))
        return (
            f"{self.truncated:,} truncated to {max_seq_len} tokens ({self.truncated_away:,} of them dropped, "
            f"no assistant token left); skipped {self.skipped.total:,} bad records" + (f" ({skipped})" if skipped else "")
        )


def pad_batch(examples: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """(tokens, labels) pairs → inputs, next-token targets and mask, (B, T) padded to the longest."""
    T = max(tokens.numel() for tokens, _ in examples) - 1
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.bool)
    for row, (tokens, labels) in enumerate(examples):
        n = tokens.numel() - 1
        input_ids[row, :n] = tokens[:-1]
        targets[row, :n] = labels[1:]
        attention_mask[row, :n] = True
    return {"input_ids": input_ids, "targets": targets, "attention_mask": attention_mask}


class FinetuneDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_files: list[str],
        tokenizer_path: str = "data/tokenized/tokenizer.json",
        val_files: list[str] | None = None,
        test_files: list[str] | None = None,
        val_fraction: float = 0.05,
        max_seq_len: int = 2048,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 1337,
        strict: bool = False,
        system_prompt: str | None = None,
        action_eval_records: int = 64,
        build_commands: int = 0,
    ) -> None:
        """
        Args:
            train_files: chat JSONL files ({"messages": [...]} or {"prompt", "response"} per line).
            tokenizer_path: the pretraining tokenizer (its special tokens are the chat markers).
            val_files: held-out chat files; when unset, ``val_fraction`` of the train files' records.
            test_files: records for ``flightmind test``; when unset, the validation records.
            val_fraction: share of records held out for validation (by a hash of seed and user turns).
            max_seq_len: longest input the model sees; longer records are cut and counted.
            batch_size: records per micro-batch on each device.
            num_workers: DataLoader worker processes per device.
            seed: seeds the held-out split and the order of training records.
            strict: stop at the first bad record, naming file:line, instead of skipping it.
            system_prompt: system turn put first in records that have none (e.g. prompt/response pairs).
            action_eval_records: held-out records whose JSON action is generated and scored.
            build_commands: if the one train file is missing, write this many synthetic commands there
                first (``flightmind synth-commands``); 0 never writes.
        """
        super().__init__()
        if isinstance(train_files, str) or not train_files:
            raise FlightMindError("data.train_files must be a non-empty list of chat JSONL files")
        if not 0.0 <= val_fraction < 1.0:
            raise FlightMindError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.train_files = [str(p) for p in train_files]
        self.tokenizer_path = str(tokenizer_path)
        self.val_files = [str(p) for p in val_files] if val_files else None
        self.test_files = [str(p) for p in test_files] if test_files else None
        self.val_fraction = val_fraction
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.strict = strict
        self.system_prompt = system_prompt
        self.action_eval_records = action_eval_records
        self.build_commands = build_commands
        self._tokenizer: Tokenizer | None = None
        self.template: ChatTemplate | None = None
        self.stats = ChatDataStats()
        self.train_set: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.eval_set: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.action_set: list[dict] = []

    # -- what training reads (flightmind.contracts.TokenData) --------------------------------------------
    @property
    def seq_len(self) -> int:
        return self.max_seq_len

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    # -- reading -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        missing = [p for p in self.train_files if not Path(p).is_file()]
        if not missing or self.build_commands <= 0:
            return
        if len(self.train_files) != 1:
            raise FlightMindError(f"data.build_commands writes one file, but train_files lists {len(self.train_files)}")
        from flightmind.data.commands import write_commands

        Path(missing[0]).parent.mkdir(parents=True, exist_ok=True)
        write_commands(missing[0], self.build_commands, seed=self.seed)
        rank_zero_info(f"wrote {self.build_commands:,} synthetic commands to {missing[0]}")

    def _read(self, paths: list[str], split: bool) -> tuple[list[list[Message]], list[list[Message]]]:
        """Records of the files; with ``split``, (kept, held out) by a hash of their user turns."""
        from flightmind.data.prepare import is_held_out

        kept, held_out = [], []
        for path in paths:
            for _, messages in read_chat_records(
                path, system_prompt=self.system_prompt, strict=self.strict, counts=self.stats.skipped
            ):
                prompt = "\n".join(m.content for m in messages if m.role == "user")
                if split and is_held_out(self.seed, prompt, self.val_fraction):
                    held_out.append(messages)
                else:
                    kept.append(messages)
        return kept, held_out

    def _encode(self, records: list[list[Message]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        limit = self.max_seq_len + 1
        examples = []
        for start in range(0, len(records), ENCODE_CHUNK):
            for tokens, labels in self.template.encode_batch(records[start : start + ENCODE_CHUNK]):
                if len(tokens) > limit:
                    self.stats.truncated += 1
                    tokens, labels = tokens[:limit], labels[:limit]
                    if all(label == IGNORE_INDEX for label in labels):
                        self.stats.truncated_away += 1
                        continue
                examples.append((torch.tensor(tokens), torch.tensor(labels)))
        return examples

    def _action_examples(self, records: list[list[Message]]) -> list[dict]:
        examples = []
        for messages in records:
            if len(examples) >= self.action_eval_records:
                break
            action = reference_action(messages)
            prompt = self.template.prompt(messages) if action is not None else []
            if action is not None and len(prompt) < self.max_seq_len:
                examples.append({"prompt": prompt, "action": action})
        return examples

    def setup(self, stage: str) -> None:
        self.template = ChatTemplate(self.tokenizer(), source=self.tokenizer_path)
        self.stats = ChatDataStats()
        for path in self.train_files + (self.val_files or []) + (self.test_files or []):
            if not Path(path).is_file():
                raise FlightMindError(
                    f"chat data file {path} does not exist: check data.train_files, val_files and test_files "
                    f"(synthetic commands: `flightmind synth-commands --out {path}`, or set data.build_commands)"
                )

        train: list[list[Message]] = []
        if stage == "fit" or self.val_files is None:
            train, held_out = self._read(self.train_files, split=self.val_files is None)
        if self.val_files is not None:
            held_out = self._read(self.val_files, split=False)[0]
        evaluated = held_out
        if stage == "test" and self.test_files:
            evaluated = self._read(self.test_files, split=False)[0]

        if stage == "fit":
            self.train_set = self._encode(train)
            if not self.train_set:
                raise FlightMindError(f"no usable training records in {', '.join(self.train_files)}: {self.stats.summary(self.max_seq_len)}")
        self.eval_set = self._encode(evaluated)
        if not self.eval_set:
            source = "data.test_files" if stage == "test" and self.test_files else "the validation split"
            raise FlightMindError(
                f"{source} holds no usable records: raise data.val_fraction or give data.val_files"
            )
        self.action_set = self._action_examples(evaluated)
        rank_zero_info(
            f"fine-tuning data ({getattr(stage, 'value', stage)}): {len(self.train_set):,} training and {len(self.eval_set):,} "
            f"{'test' if stage == 'test' else 'validation'} records, {len(self.action_set):,} of them scored on "
            f"their JSON action; {self.stats.summary(self.max_seq_len)}"
        )

    # -- loaders -------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return eot_id(self.tokenizer())

    @property
    def _collate(self) -> functools.partial:
        return functools.partial(pad_batch, pad_id=self.pad_id)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = StreamSampler(
            self.train_set,
            length=training_micro_batches(trainer, "fine-tuning") * self.batch_size,
            seed=self.seed,
            shuffle=True,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        options = loader_options(trainer, self.num_workers)
        return ResumableDataLoader(
            self.train_set, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate, drop_last=True, **options
        )

    def _eval_dataloader(self) -> DataLoader:
        options = loader_options(self.trainer, self.num_workers)
        return DataLoader(self.eval_set, batch_size=self.batch_size, shuffle=False, collate_fn=self._collate, **options)

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader()
