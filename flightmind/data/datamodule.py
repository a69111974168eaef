"""The pretraining data: packed aviation shards, mixed with a streamed general pool, as resumable,
rank-split training batches.

Without a general pool (or at ``aviation_ratio: 1.0``) training reads the aviation shards alone and
streams nothing (``ResumableDataLoader``); with one, ``MixedLoader`` mixes the two (mixing.py). At the
start of fitting it prints what each pool will be asked for and the validation coverage (draws.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from flightmind.contracts import TOKENIZER_FILE, load_tokenizer
from flightmind.data.draws import PUBLISHED_TOKENS, plan_draws, validation_coverage
from flightmind.data.mixing import MixedBatches, MixedLoader, MixingMonitor, exact_ratio
from flightmind.data.loaders import loader_options, training_micro_batches
from flightmind.data.sequences import PackedSequences, ResumableDataLoader, StreamSampler
from flightmind.data.streaming import GeneralPool, GeneralStream, open_general_pool
from flightmind.errors import FlightMindError


class PretrainDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str = "data/tokenized",
        seq_len: int = 2048,
        batch_size: int = 8,
        num_workers: int = 2,
        shuffle: bool = True,
        seed: int = 1337,
        build_demo: bool = False,
        test_file: str | None = None,
        test_strict: bool = False,
        aviation_ratio: float = 0.30,
        general: GeneralPool | None = None,
    ) -> None:
        """
        Args:
            data_dir: output of ``flightmind prepare``: train.bin, val.bin, meta.json, tokenizer.json.
            seq_len: tokens per training sequence (each window holds seq_len + 1).
            batch_size: sequences per micro-batch on each device.
            num_workers: DataLoader worker processes per device.
            shuffle: a fresh seeded order of all windows on every pass, and of the general pool's units and
                of the documents in each of its blocks; off gives stream order everywhere.
            seed: seeds those orders (the same on every rank; ranks take disjoint positions).
            build_demo: if ``data_dir`` has no prepared data, build it from the generated demo corpus
                (kept in ``data_dir/corpus``; its aviation files are prepared into the shards).
            test_file: held-out set for ``flightmind test``: JSONL (tokenized with ``data_dir``'s
                tokenizer) or a packed ``.bin``; see ``flightmind.data.heldout``.
            test_strict: stop at the first bad line of a JSONL ``test_file`` (naming file:line) instead of
                skipping and counting bad lines as ``prepare`` does.
            aviation_ratio: the share of aviation sequences, exact over time; the rest comes from
                ``general``. 1.0, or no ``general``, trains on aviation alone and streams nothing.
            general: the general pool, as ``datasets.load_dataset`` arguments (see ``GeneralPool``).
        """
        super().__init__()
        self.data_dir = Path(data_dir)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.build_demo = build_demo
        self.test_file = test_file
        self.test_strict = test_strict
        self.aviation_ratio = exact_ratio(aviation_ratio)
        self.general = GeneralPool(**general) if isinstance(general, dict) else general
        self.meta: dict | None = None
        self.general_stream: GeneralStream | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def mixes(self) -> bool:
        """Whether training draws from the general pool."""
        return self.general is not None and self.aviation_ratio < 1

    @property
    def tokenizer_path(self) -> Path:
        return self.data_dir / TOKENIZER_FILE

    def tokenizer(self) -> Tokenizer:
        """The prepared directory's tokenizer (flightmind.contracts.TokenData), loaded once."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def demo_corpus_dir(self) -> Path:
        return self.data_dir / "corpus"

    def prepare_data(self) -> None:
        if not self.build_demo:
            return
        from flightmind.demo.corpus import build_demo_corpus
        from flightmind.data.prepare import prepare

        corpus = self.demo_corpus_dir
        if not corpus.is_dir():  # built aside, then renamed: never half a corpus
            building = corpus.with_name(corpus.name + ".tmp")
            shutil.rmtree(building, ignore_errors=True)
            build_demo_corpus(building)
            os.replace(building, corpus)
        if not (self.data_dir / "meta.json").is_file():
            aviation = sorted((corpus / "aviation").glob("*.jsonl"))
            prepare(aviation, self.data_dir, val_fraction=0.02, extra_meta={"demo": True}, progress=False)

    def setup(self, stage: str) -> None:
        from flightmind.contracts import check_token_ids, read_meta

        if not (self.data_dir / "meta.json").is_file():
            hint = "set data.build_demo: true for the demo corpus, or " if not self.build_demo else ""
            raise FlightMindError(
                f"{self.data_dir} holds no prepared data (meta.json is missing): {hint}run "
                f"`flightmind prepare --input YOUR.jsonl --out {self.data_dir}` first"
            )
        self.meta = read_meta(self.data_dir)
        check_token_ids(self.data_dir, self.meta, self.tokenizer().get_vocab_size())
        trainer = self.trainer
        if stage == "fit" and self.mixes and self.general_stream is None:
            self.general_stream = self._open_general_pool()
            rank_zero_info(
                f"data: {float(self.aviation_ratio):.2f} aviation ({self.data_dir}), "
                f"{float(1 - self.aviation_ratio):.2f} general ({self.general_stream.summary()})"
            )
            if trainer is not None and not any(isinstance(c, MixingMonitor) for c in trainer.callbacks):
                trainer.callbacks.append(MixingMonitor())
        if stage == "fit" and trainer is not None:
            for line in self.start_report(trainer):
                (rank_zero_warn if line.startswith("WARNING") else rank_zero_info)(line)

    def _open_general_pool(self) -> GeneralStream:
        """Rank 0 indexes the pool (one footer read per remote file) and sends it to the other ranks."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return open_general_pool(self.general, seed=self.seed, shuffle=self.shuffle)
        opened = None
        if trainer.is_global_zero:
            try:
                opened = open_general_pool(self.general, seed=self.seed, shuffle=self.shuffle)
            except FlightMindError as err:
                opened = str(err)  # every rank stops with it, none waits for a pool that never comes
        opened = trainer.strategy.broadcast(opened)
        if isinstance(opened, str):
            raise FlightMindError(opened)
        return opened

    def start_report(self, trainer: L.Trainer) -> list[str]:
        """Per pool the tokens drawn over ``max_steps`` against its size, and the validation coverage."""
        if not trainer.max_steps or trainer.max_steps < 1:
            return []
        general = None if not self.mixes else (self.general.path, self.general.name)
        estimate = None
        if general is not None and tuple(general) not in PUBLISHED_TOKENS and self.general_stream is not None:
            estimate, _ = self.general_stream.estimate_tokens(self.tokenizer_path)
        meta = self.meta or {}
        draws = plan_draws(
            max_steps=trainer.max_steps, accumulate=trainer.accumulate_grad_batches, world_size=trainer.world_size,
            batch_size=self.batch_size, seq_len=self.seq_len, ratio=self.aviation_ratio,
            aviation_tokens=meta.get("train", {}).get("tokens"), general=general, general_tokens=estimate,
        )
        lines = [f"data over {trainer.max_steps:,} steps: " + draw.line() for draw in draws]
        lines += [f"WARNING: {draw.warning}" for draw in draws if draw.warning]
        val = self.data_dir / "val.bin"
        if val.is_file() and trainer.limit_val_batches:
            windows = PackedSequences(val, self.seq_len).num_windows
            scored, total = validation_coverage(
                windows, limit_val_batches=trainer.limit_val_batches, batch_size=self.batch_size, world_size=trainer.world_size
            )
            lines.append(f"validation: {scored:,} of {total:,} windows scored each time (limit_val_batches {trainer.limit_val_batches})")
        return lines

    def _loader_kwargs(self, **kwargs) -> dict:
        return dict(loader_options(self.trainer, self.num_workers), batch_size=self.batch_size, drop_last=True, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset = PackedSequences(self.data_dir / "train.bin", self.seq_len)
        trainer = self.trainer
        micro_batches = training_micro_batches(trainer, "pretraining")
        if self.mixes:
            mixed = MixedBatches(
                dataset,
                self.general_stream,
                self.tokenizer_path,
                length=micro_batches,
                batch_size=self.batch_size,
                ratio=self.aviation_ratio,
                seed=self.seed,
                shuffle=self.shuffle,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                workers=self.num_workers,
                accumulate=trainer.accumulate_grad_batches,
            )
            return MixedLoader(mixed, **loader_options(trainer, self.num_workers))  # it batches itself
        sampler = StreamSampler(
            dataset,
            length=micro_batches * self.batch_size,
            seed=self.seed,
            shuffle=self.shuffle,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        return ResumableDataLoader(dataset, **self._loader_kwargs(sampler=sampler))

    def val_dataloader(self) -> DataLoader:
        dataset = PackedSequences(self.data_dir / "val.bin", self.seq_len)
        if len(dataset) < self.batch_size:
            raise FlightMindError(
                f"{self.data_dir / 'val.bin'} holds {len(dataset)} sequences of {self.seq_len + 1} tokens, fewer than "
                f"one batch of {self.batch_size}: prepare with a larger --val-fraction or lower data.batch_size"
            )
        return DataLoader(dataset, **self._loader_kwargs(shuffle=False))

    def test_dataloader(self) -> DataLoader:
        from flightmind.data.heldout import HeldOutDocuments, RankShard, collate_windows

        if self.test_file is None:
            raise FlightMindError("set data.test_file (e.g. --data.init_args.test_file held_out.jsonl): a JSONL file or a packed .bin")
        dataset = HeldOutDocuments(self.test_file, self.tokenizer(), self.seq_len, strict=self.test_strict)
        sampler = RankShard(dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_windows)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Tensors for training and validation, a dict of tensors for test; non-blocking copies.
        return move_data_to_device(batch, device)
