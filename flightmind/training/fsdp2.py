"""Lightning's ``ModelParallelStrategy`` (FSDP2, laid out by ``parallel.py``) with distributed
checkpoints that are atomic and, with ``checkpoint.asynchronous``, written in the background.

Lightning writes a distributed checkpoint's shards straight into its final directory, so a crash
mid-save leaves a directory that looks like a checkpoint. Here every rank writes its shard into one
temporary directory beside the name; when all shards and the metadata are on disk, rank 0 renames
it to the name. Asynchronously, ``torch.distributed.checkpoint.async_save`` copies each rank's shard
to host memory and writes it in a thread (over a gloo group: the GPUs' NCCL group is training's),
and rank 0 renames once the save is complete. Links to the checkpoint wait for the rename.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.pytorch.strategies import ModelParallelStrategy

from flightmind.atomic import fsync_directory, replace_directory, temporary_directory
from flightmind.model.distributed_checkpoint import DCP_METADATA
from flightmind.training.checkpoint_io import AtomicCheckpointIO, save_atomically


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` (same arguments) whose distributed checkpoints are atomic."""

    def __init__(self, *args, save_distributed_checkpoint: bool = True, **kwargs) -> None:
        super().__init__(*args, save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)
        self.sharded_checkpoints = save_distributed_checkpoint
        self._checkpoint_group: dist.ProcessGroup | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        if not self.sharded_checkpoints:  # one full file from rank 0, through AtomicCheckpointIO
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(self.broadcast(str(filepath)))
        writer = self.checkpoint_io if isinstance(self.checkpoint_io, AtomicCheckpointIO) else None
        if writer is not None:
            writer.settle(block=True)  # this rank's previous shard is on disk (and its host copy free)
        tmp = None
        if self.global_rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = str(temporary_directory(path))
        tmp = Path(self.broadcast(tmp))
        shards = {"state_dict": checkpoint.pop("state_dict")}
        shards.update({f"optimizer_{i}": state for i, state in enumerate(checkpoint.pop("optimizer_states", []))})
        if writer is not None and writer.asynchronous:
            future = dcp.async_save(shards, checkpoint_id=tmp, process_group=self.checkpoint_group())
            if self.global_rank == 0:  # DCP's coordinator finishes only after every rank's shard is written
                writer.then_save(path, finish_distributed_checkpoint, checkpoint, tmp, path, future)
            else:
                writer.track(future)
            return
        dcp.save(shards, checkpoint_id=tmp)  # a failure on any rank raises on every rank
        if self.global_rank == 0:
            if writer is None:
                finish_distributed_checkpoint(checkpoint, tmp, path)
            else:  # a failure of rank 0 alone is kept for the ranks' common check, not raised at a barrier
                writer.then_save(path, finish_distributed_checkpoint, checkpoint, tmp, path)

    def checkpoint_group(self) -> dist.ProcessGroup | None:
        """A gloo group for the background save's collectives (created once, by every rank)."""
        if not dist.is_initialized():
            return None
        if self._checkpoint_group is None:
            self._checkpoint_group = dist.new_group(backend="gloo")
        return self._checkpoint_group


def finish_distributed_checkpoint(metadata: dict, tmp: Path, path: Path, shards: Future | None = None) -> None:
    """Write the metadata beside the complete shards, then rename the directory to its name."""
    if shards is not None:
        shards.result()
    save_atomically(metadata, tmp / DCP_METADATA)
    fsync_directory(tmp)
    replace_directory(tmp, path)
