"""How every checkpoint reaches the disk and comes back: Lightning's ``CheckpointIO`` plugin.

Saving: ``torch.save`` streams into a temporary file created exclusively in the checkpoint's own
directory, which is fsynced and renamed over the name (``flightmind.atomic``), whatever ``$TMPDIR``
is; a name never holds a partial file, and a full disk ends the run with one line while the files
already there stay intact. Loading: ``weights_only=True`` whatever the environment says, and one
line naming the file when it fails.

``asynchronous``: the save copies the checkpoint's tensors into host memory (pinned, reused from
save to save) and returns; one background thread writes the copy, atomically as above, while
training goes on. One save is in flight at a time; what depends on a save (linking ``last``) is
queued behind it with ``then``; a failed save stops the run at the next step, save or exit
(under several processes all ranks together, on the next logged step: see ``defer_failures``).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from flightmind.atomic import fsync_directory, temporary_path
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_checkpoint_file

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def free_bytes(directory: Path) -> int | None:
    """Free space where ``directory`` is (or would be created)."""
    for path in (directory, *directory.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return None


def gigabytes(n: int | float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def save_atomically(checkpoint: dict, path: str | Path) -> None:
    """``torch.save`` into a temporary file beside ``path``, fsync, rename; on failure ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path)
    except OSError as e:
        raise FlightMindError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    try:
        with open(tmp, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except Exception as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        raise FlightMindError(_save_failure(path, e, written)) from None
    except BaseException:  # an interrupt: leave nothing behind
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _save_failure(path: Path, error: Exception, written: int) -> str:
    free = free_bytes(path.parent)
    # torch.save reports a failed write as a RuntimeError raised while handling the OSError.
    cause = error if isinstance(error, OSError) else error.__context__
    if isinstance(cause, OSError) and cause.errno in DISK_FULL:
        reason = (
            f"{cause.strerror} after {gigabytes(written)} (the disk or a file-size limit is full; "
            f"{gigabytes(free or 0)} free in {path.parent} now)"
        )
    elif isinstance(cause, OSError):
        reason = cause.strerror or str(cause)
    else:
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return (
        f"cannot write checkpoint {path}: {reason}; the unfinished file was removed and the checkpoints already "
        "there are intact: free space (or lower checkpoint.keep) and resume with --ckpt_path last"
    )


class HostCopy:
    """A point-in-time copy of a checkpoint's tensors in host memory (pinned when they are on a GPU),
    the buffers reused from save to save: a run's checkpoints hold the same tensors each time.
    Tensors that share storage (tied embeddings) share one copy, as ``torch.save`` stores them."""

    def __init__(self) -> None:
        self.buffers: list[torch.Tensor] = []

    def __call__(self, checkpoint: dict) -> dict:
        previous, self.buffers = self.buffers, []
        copies: dict[tuple, torch.Tensor] = {}

        def copy(tensor: torch.Tensor) -> torch.Tensor:
            tensor = tensor.detach()
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
            if key not in copies:
                i = len(self.buffers)
                reusable = i < len(previous) and previous[i].shape == tensor.shape and previous[i].dtype == tensor.dtype
                buffer = previous[i] if reusable else torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
                copies[key] = buffer.copy_(tensor, non_blocking=tensor.is_cuda)
                self.buffers.append(buffer)
            return copies[key]

        copied = apply_to_collection(checkpoint, torch.Tensor, copy)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the copies from the GPU are complete before the writer reads them
        return copied


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic saves in the checkpoint's directory and weights-only loads.

    Args:
        asynchronous: copy the checkpoint to host memory and write it in a background thread (see
            the module's docstring); the copy costs host memory of one checkpoint's size.

    Under several processes ``StepCheckpoint`` sets ``defer_failures``: a failed save or link (rank
    0 writes alone) is kept in ``failure`` instead of raised inside Lightning's save, where the
    other ranks wait at a barrier; the ranks then stop together at their next common check.
    """

    def __init__(self, asynchronous: bool = False) -> None:
        super().__init__()
        self.asynchronous = asynchronous
        self.defer_failures = False
        self.failure: BaseException | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._unsaved: set[Path] = set()  # checkpoints whose last save failed: nothing links to them
        self._copy = HostCopy()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        if self.asynchronous:
            self.settle(block=True)  # one save in flight: its host copy is the buffer this one reuses
            checkpoint = self._copy(checkpoint)
        self.then_save(path, save_atomically, checkpoint, path)

    def then_save(self, path, write: Callable, *args) -> None:
        """Queue ``write(*args)``, which saves the checkpoint ``path``; what ``after_save`` queues for
        ``path`` is skipped if it fails."""
        self.then(self._save, Path(path), write, args)

    def _save(self, path: Path, write: Callable, args: tuple) -> None:
        try:
            write(*args)
        except BaseException:
            self._unsaved.add(path)
            raise
        self._unsaved.discard(path)

    def after_save(self, path, task: Callable, *args) -> None:
        """Queue ``task(*args)`` (a link to ``path``) behind the save of ``path``; skipped if that save
        failed (its failure is reported once, and the link keeps naming the previous checkpoint)."""
        self.then(self._if_saved, Path(path), task, args)

    def _if_saved(self, path: Path, task: Callable, args: tuple) -> None:
        if path not in self._unsaved:
            task(*args)

    def then(self, task: Callable, *args) -> None:
        """Run ``task(*args)`` after the saves queued before it: at once unless saves are asynchronous."""
        if not self.asynchronous:
            try:
                task(*args)
            except Exception as e:
                self._failed(e)
            return
        self.settle(block=False)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending.append(self._executor.submit(task, *args))

    def track(self, future: Future) -> None:
        """Count a save started elsewhere (a distributed checkpoint's shard) as in flight."""
        self._pending.append(future)

    def settle(self, block: bool = False) -> None:
        """Collect the background tasks that are done (``block``: all of them, waiting); a failure is
        raised, or kept in ``failure`` under ``defer_failures``."""
        for future in list(self._pending):
            if block or future.done():
                self._pending.remove(future)
                error = future.exception()
                if error is not None:
                    self._failed(error)

    def _failed(self, error: BaseException) -> None:
        if not self.defer_failures:
            raise error
        self.failure = self.failure or error

    def wait(self) -> None:
        """Block until every queued save and task is done; raise the first failure, kept ones included."""
        self.settle(block=True)
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def remove_checkpoint(self, path) -> None:
        self.then(super().remove_checkpoint, path)

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        self.wait()  # never read a checkpoint still being written
        # weights_only is True whatever the caller or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says. No mmap:
        # the optimizer state is updated in place after loading.
        checkpoint = load_checkpoint_file(path, mmap=False, map_location=map_location or (lambda storage, loc: storage))
        if "pytorch-lightning_version" not in checkpoint:
            raise FlightMindError(
                f"{path} holds no training state (it was not written by `flightmind fit`): --ckpt_path resumes a run; "
                "to start from a model's weights, name it in model.init_args.base_checkpoint (fine-tuning)"
            )
        return checkpoint


def checkpoint_writer(trainer) -> AtomicCheckpointIO | None:
    """The run's ``AtomicCheckpointIO``, if its strategy writes through one."""
    io = getattr(trainer.strategy, "checkpoint_io", None)
    return io if isinstance(io, AtomicCheckpointIO) else None
