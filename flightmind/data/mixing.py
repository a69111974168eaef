"""Aviation and general sequences mixed at an exact ratio, in micro-batches that resume exactly.

Sequence ``k`` of a rank (counted from the start of the run) is an aviation sequence iff
``floor((k + 1)·r) > floor(k·r)``, with ``r = aviation_ratio`` as an exact fraction. After any ``k``
sequences the aviation count is ``floor(k·r)``, so ``|aviation − r·k| < 1`` for every ``k``; counts per
micro-batch vary (0.30 of 8 is 2 or 3), ratio 0 and 1 give a pure pool, and the mixing state is ``k``.
Each rank mixes its own sequences; its ``n``-th aviation sequence is position ``base + n·W + rank`` of
the aviation stream, as in ``StreamSampler``, so ranks never share one within a pass.

Each DataLoader worker runs one general reader and builds every ``workers``-th micro-batch
(workers yield in strict round-robin order: worker ``j`` makes micro-batches ``start + j``,
``start + j + workers`` …). Each batch travels with its reader's position after it; the loader, in
the main process, strips it and keeps, for each of the next ``workers`` micro-batches, the position
of the reader that makes it. A checkpoint stores the micro-batches trained on and those positions;
on resume worker ``j`` continues the reader whose turn comes ``j``-th. The loader is sized
(micro-batches = max_steps × accumulation), so Lightning never fetches ahead: batches yielded are
batches trained on.

Resumed on the layout it was saved with (ranks, workers, micro-batch, accumulation), a loader continues
exactly. On another one it continues at the saved optimizer step: the aviation stream at its global
position (``base``), the mixing counter afresh from there, and the general readers ``rebalance``d
(streaming.py), so that within a pass no general document is read twice or skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flightmind.data.sequences import PackedSequences, StreamSampler
from flightmind.data.streaming import GeneralStream, initial_state, rebalance
from flightmind.errors import FlightMindError


def exact_ratio(ratio: float) -> Fraction:
    if not 0 <= ratio <= 1:
        raise FlightMindError(f"data.aviation_ratio must lie between 0 and 1, not {ratio}")
    return Fraction(ratio).limit_denominator(1_000_000)  # 0.3 -> 3/10, not 0.29999999999999998889…


def aviation_count(sequences: int, ratio: Fraction) -> int:
    """Aviation sequences among the first ``sequences``: floor(sequences · ratio)."""
    return sequences * ratio.numerator // ratio.denominator


def is_aviation(k: int, ratio: Fraction) -> bool:
    return aviation_count(k + 1, ratio) > aviation_count(k, ratio)


@dataclass(frozen=True)
class _Failure:
    """A FlightMindError raised in a worker, carried to the main process to be raised there."""

    message: str


def _as_is(item):
    return item


class MixedBatches(IterableDataset):
    """One rank's micro-batches ``(batch_size, seq_len + 1)``, from micro-batch ``start`` to ``length``."""

    def __init__(
        self,
        aviation: PackedSequences,
        general: GeneralStream | None,
        tokenizer_path: str | Path,
        *,
        length: int,
        batch_size: int,
        ratio: Fraction,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        accumulate: int = 1,
    ) -> None:
        if general is None and ratio < 1:
            raise ValueError("a general pool is needed below aviation_ratio 1")
        self.aviation = aviation
        self.aviation_order = StreamSampler(aviation, length=0, seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
        self.general = general
        self.tokenizer_path = str(tokenizer_path)
        self.length = length
        self.batch_size = batch_size
        self.ratio = ratio
        self.rank = rank
        self.world_size = world_size
        self.slots = max(1, workers)  # readers on this rank: one per worker, or the main process
        self.accumulate = accumulate
        self.aviation_seed, self.aviation_shuffle = seed, shuffle
        self.start = 0
        self.reader_states: list[dict | None] = [None] * self.slots  # slot j makes micro-batch start + j first
        # Where this rank's aviation sequences continue the global aviation stream: sequence
        # ``sequence_base`` of this rank is the first after ``aviation_base`` (both 0 unless resumed on
        # another layout).
        self.sequence_base = 0
        self.aviation_base = 0

    @property
    def readers(self) -> int:
        return self.world_size * self.slots

    def aviation_next(self, sequences: int) -> int:
        """The global aviation stream position after every rank has made ``sequences`` sequences."""
        return self.aviation_base + (aviation_count(sequences, self.ratio) - aviation_count(self.sequence_base, self.ratio)) * self.world_size

    def __len__(self) -> int:
        # Always the full length: Lightning counts the batches consumed before a resume itself.
        return self.length

    def __iter__(self) -> Iterator[tuple[torch.Tensor | _Failure, dict | None]]:
        info = get_worker_info()
        slot = 0 if info is None else info.id
        if info is not None:
            if info.num_workers != self.slots:
                raise RuntimeError(f"built for {self.slots} workers, iterated by {info.num_workers}")
            # Parallelism comes from the workers; rayon threads in each would only oversubscribe.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        reader = None
        if self.general is not None and self.ratio < 1:
            # A slot continues the reader whose turn comes next, whichever worker ran it before.
            state = self.reader_states[slot]
            index = self.rank * self.slots + slot if state is None else state["reader"]
            reader = self.general.reader(index, self.readers, self.aviation.seq_len, self.tokenizer_path, state)
        windows = iter(reader) if reader is not None else None
        try:
            for i in range(self.start + slot, self.length, self.slots):
                first = i * self.batch_size
                rows = [self._sequence(k, windows) for k in range(first, first + self.batch_size)]
                yield torch.stack(rows), {"batch": i, "reader": None if reader is None else reader.state_dict()}
        except FlightMindError as err:
            yield _Failure(str(err)), None
        finally:
            if windows is not None:
                windows.close()

    def _sequence(self, k: int, windows: Iterator[np.ndarray] | None) -> torch.Tensor:
        if is_aviation(k, self.ratio):
            n = aviation_count(k, self.ratio) - aviation_count(self.sequence_base, self.ratio)
            return self.aviation[self.aviation_order.window(self.aviation_base + n * self.world_size + self.rank)]
        return torch.from_numpy(next(windows).astype(np.int64))


class MixedLoader(DataLoader):
    """A sized DataLoader over ``MixedBatches`` whose position Lightning saves in every checkpoint."""

    dataset: MixedBatches

    def __init__(self, dataset: MixedBatches, **kwargs) -> None:
        super().__init__(dataset, batch_size=None, collate_fn=_as_is, **kwargs)
        if max(1, self.num_workers) != dataset.slots:
            raise ValueError(f"MixedBatches built for {dataset.slots} workers, loader has {self.num_workers}")
        self._next = dataset.start
        self._reader_states = {dataset.start + j: state for j, state in enumerate(dataset.reader_states)}

    def __iter__(self) -> Iterator[torch.Tensor]:
        slots = self.dataset.slots
        for batch, info in super().__iter__():
            if isinstance(batch, _Failure):
                self._stop_workers()
                raise FlightMindError(batch.message)
            i = info["batch"]
            if i != self._next:
                raise RuntimeError(f"micro-batch {i} arrived where {self._next} was due")
            # The worker that made batch i makes batch i + slots next, from this position.
            self._reader_states.pop(i, None)
            self._reader_states[i + slots] = info["reader"]
            self._next = i + 1
            yield batch

    def _stop_workers(self) -> None:
        # The run is over: stop the workers now (as Lightning's teardown does) rather than whenever
        # the iterator happens to be garbage-collected.
        iterator = getattr(self, "_iterator", None)
        if hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._iterator = None

    # -- what the run has consumed, for logging ------------------------------------------------
    @property
    def sequences(self) -> int:
        return self._next * self.dataset.batch_size

    @property
    def aviation_sequences(self) -> int:
        return aviation_count(self.sequences, self.dataset.ratio)

    def general_documents(self) -> tuple[int, int]:
        """(documents read, documents skipped) by this rank's readers up to their current positions."""
        states = [s for s in self._reader_states.values() if s is not None]
        return sum(s["documents"] for s in states), sum(sum(s["skipped"].values()) for s in states)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The position of every rank: Lightning saves rank 0's loader state alone, so the ranks'
        reader positions are gathered here (every rank builds the checkpoint; rank 0 writes it)."""
        data = self.dataset
        readers = [self._reader_states.get(self._next + j) for j in range(data.slots)]
        return {
            "micro_batches": self._next,
            "sequences": self.sequences,
            "aviation_sequences": self.aviation_sequences,
            "sequence_base": data.sequence_base,
            "aviation_base": data.aviation_base,
            "aviation_next": data.aviation_next(self.sequences),
            "readers": _gather(readers, data.world_size),  # [rank][slot]
            "layout": self._layout(),
        }

    def load_state_dict(self, state: dict) -> None:
        if "layout" not in state:
            raise FlightMindError(
                "the checkpoint was trained on the aviation shards alone (no data.general, or data.aviation_ratio 1.0): "
                "resume with those data settings, or start a new run to mix in the general pool"
            )
        saved, current = state["layout"], self._layout()
        differences = [key for key in ("aviation_ratio", "aviation", "general") if saved.get(key) != current[key]]
        if differences:
            listed = ", ".join(f"{key} {saved.get(key)!r} → {current[key]!r}" for key in differences)
            raise FlightMindError(
                f"the checkpoint's data position belongs to other data ({listed}): resume with the data.aviation_ratio, "
                "data.shuffle, data.seed and data.general (the same files) it was saved with"
            )
        data = self.dataset
        if saved == current:  # the same layout: every reader continues exactly
            data.start = int(state["micro_batches"])
            data.reader_states = list(state["readers"][data.rank])
            data.sequence_base, data.aviation_base = int(state["sequence_base"]), int(state["aviation_base"])
        else:
            data.start = self._elastic_start(state)
            data.sequence_base = data.start * data.batch_size
            data.aviation_base = int(state["aviation_next"])
            old_slots = saved["workers"]
            states = [
                s if s is not None else initial_state(r * old_slots + (state["micro_batches"] + j) % old_slots, saved["world_size"] * old_slots)
                for r, row in enumerate(state["readers"]) for j, s in enumerate(row)
            ]
            data.reader_states = rebalance(states, data.readers)[data.rank * data.slots : (data.rank + 1) * data.slots]
        self._next = data.start
        self._reader_states = {data.start + j: s for j, s in enumerate(data.reader_states)}

    def _elastic_start(self, state: dict) -> int:
        """This layout's micro-batch at the saved optimizer step."""
        saved = state["layout"]
        steps, rest = divmod(int(state["micro_batches"]), int(saved.get("accumulate", 1)))
        if rest:
            raise FlightMindError(
                f"the checkpoint was saved inside an optimizer step (micro-batch {state['micro_batches']} of steps of "
                f"{saved.get('accumulate', 1)}): resume it with the devices, data.num_workers, data.batch_size and "
                "trainer.accumulate_grad_batches it was saved with"
            )
        return steps * self.dataset.accumulate

    def _layout(self) -> dict:
        data = self.dataset
        return {
            "world_size": data.world_size,
            "workers": data.slots,
            "batch_size": data.batch_size,
            "accumulate": data.accumulate,
            "aviation_ratio": str(data.ratio),
            "aviation": {"windows": len(data.aviation), "seed": data.aviation_seed, "shuffle": data.aviation_shuffle},
            "general": None if data.general is None else data.general.layout,
        }


def _gather(value, world_size: int) -> list:
    """``value`` of every rank, in rank order."""
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
        raise RuntimeError(f"saving the data position of {world_size} ranks needs their process group")
    values = [None] * world_size
    dist.all_gather_object(values, value)
    return values


class MixingMonitor(L.Callback):
    """Logs the realized aviation share and the general pool's document counts every
    ``log_every_n_steps`` optimizer steps, from the loader's host-side counters: no device sync.

    ``train/aviation_ratio`` is the share of aviation sequences in all this rank has trained on.
    """

    def __init__(self) -> None:
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        loader = trainer.train_dataloader
        step = trainer.global_step
        if not isinstance(loader, MixedLoader) or step == self._last_step or step < 1:
            return
        self._last_step = step
        if (step - 1) % trainer.log_every_n_steps:
            return
        documents, skipped = loader.general_documents()
        metrics = {
            "train/aviation_ratio": loader.aviation_sequences / loader.sequences,
            "data/general_documents": documents,
            "data/general_skipped": skipped,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step - 1)  # the step train/loss of this optimizer step is logged at
