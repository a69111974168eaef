"""The directory a distributed (FSDP2) checkpoint is, and reading its index without running code.

``flightmind fit`` under FSDP2 writes, per checkpoint, a directory: one ``__R_0.distcp`` shard per
rank, torch distributed checkpoint's index ``.metadata`` and Lightning's ``meta.pt`` (everything a
``.ckpt`` holds besides tensors; read with ``weights_only=True``). torch reads ``.metadata`` with a
plain ``pickle.load``, which runs whatever code a crafted file names; ``check_index`` unpickles it
first with only the classes DCP's index is made of, and refuses anything else in one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from flightmind.errors import FlightMindError

DCP_METADATA = "meta.pt"  # Lightning's name for the non-tensor part of a distributed checkpoint
DCP_INDEX = ".metadata"  # torch distributed checkpoint's index of the shards

# What DCP's index is made of: its own metadata dataclasses and enums, the filesystem writer's
# storage records, paths, torch.Size, dtypes and layouts.
_INDEX_MODULES = {"torch.distributed.checkpoint.metadata"}
_INDEX_GLOBALS = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}


def is_distributed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / DCP_METADATA).is_file() and (path / DCP_INDEX).is_file()


class _Refused(pickle.UnpicklingError):
    """A global outside the index's classes."""


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in _INDEX_MODULES or (module, name) in _INDEX_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise _Refused(f"{module}.{name}")


def check_index(path: Path) -> None:
    """Refuse a distributed checkpoint whose ``.metadata`` names anything but DCP's index classes."""
    index = path / DCP_INDEX
    try:
        with open(index, "rb") as file:
            _IndexUnpickler(file).load()
    except _Refused as e:
        raise FlightMindError(
            f"cannot read distributed checkpoint {path}: its {DCP_INDEX} holds Python objects other than torch "
            f"distributed checkpoint's index ({e}), which can run code when loaded; FlightMind does not load it"
        ) from None
    except Exception as e:  # truncated, empty, not a pickle
        raise FlightMindError(f"cannot read distributed checkpoint {path}: its {DCP_INDEX} is damaged ({type(e).__name__}: {str(e)[:120]})") from None
