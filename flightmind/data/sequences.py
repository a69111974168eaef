"""Training sequences from a packed shard: fixed windows over a memmapped uint16 token stream.

Window ``i`` holds tokens ``[i·T, i·T + T + 1)``: input = window[:-1], target = window[1:], and
consecutive windows share one token so that every token of the stream is a target exactly once.

The order is a seeded permutation of all windows per pass over the data, one global stream for the
whole run; rank ``r`` of ``W`` takes stream positions ``r, r + W, r + 2W, …``. A position in that
stream is the whole data state, so resuming is exact and survives a change of world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from flightmind.errors import FlightMindError


class PackedSequences(Dataset):
    def __init__(self, path: str | Path, seq_len: int) -> None:
        self.path = str(path)
        self.seq_len = seq_len
        try:
            num_tokens = os.path.getsize(self.path) // np.dtype(np.uint16).itemsize
        except OSError as err:
            raise FlightMindError(f"cannot read token shard {self.path}: {err.strerror}") from None
        self.num_windows = (num_tokens - 1) // seq_len
        if self.num_windows < 1:
            raise FlightMindError(
                f"{self.path} holds {num_tokens} tokens, fewer than one sequence of {seq_len + 1}: "
                "prepare more data or lower data.seq_len"
            )
        self._tokens: np.memmap | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        start = index * self.seq_len
        return torch.from_numpy(self._tokens[start : start + self.seq_len + 1].astype(np.int64))

    def __getstate__(self) -> dict:
        # Workers open their own memmap; never pickle an open one.
        return {**self.__dict__, "_tokens": None}


class StreamSampler(DistributedSampler):
    """This rank's share of an endless, seeded stream of window indices, starting at ``start``.

    Subclassing DistributedSampler tells Lightning the data is already split across ranks, so it
    does not inject a sampler of its own.
    """

    def __init__(
        self, dataset: PackedSequences, length: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.length = length
        self.start = 0
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:
        # Always the full length: Lightning counts batches consumed before a resume itself.
        return self.length

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        for local in range(start, self.length):
            yield self.window(local * self.num_replicas + self.rank)

    def window(self, position: int) -> int:
        """The window at a global stream position: pass ``position // n``, offset ``position % n``."""
        data_epoch, offset = divmod(position, len(self.dataset))
        if not self.shuffle:
            return offset
        if data_epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, data_epoch])
            self._perm, self._perm_epoch = rng.permutation(len(self.dataset)), data_epoch
        return int(self._perm[offset])


class ResumableDataLoader(DataLoader):
    """A DataLoader whose stream position is saved in every checkpoint and restored on resume.

    Lightning stores ``state_dict()`` of any training loader that has one. The loader is sized, so
    Lightning does not prefetch: batches yielded are exactly the batches trained on.
    """

    sampler: StreamSampler

    def __iter__(self) -> Iterator:
        self._base = self.sampler.start
        self._yielded = 0
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        local = getattr(self, "_base", self.sampler.start) + getattr(self, "_yielded", 0) * self.batch_size
        return {"position": local * self.sampler.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        if "position" not in state:
            raise FlightMindError(
                "the checkpoint was trained on aviation and general data mixed (data.general): resume with the "
                "data.general and data.aviation_ratio it was saved with"
            )
        position = int(state["position"])
        if position % self.sampler.num_replicas:
            raise FlightMindError(
                f"the checkpoint's data position {position} cannot be split evenly over "
                f"{self.sampler.num_replicas} ranks: resume with the world size it was saved with"
            )
        self.sampler.start = position // self.sampler.num_replicas
