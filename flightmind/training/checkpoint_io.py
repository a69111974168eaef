"""How every checkpoint reaches the disk and comes back: Lightning's ``CheckpointIO`` plugin.

Saving: ``torch.save`` streams into a temporary file created exclusively in the checkpoint's own
directory, which is fsynced and renamed over the name (``flightmind.atomic``), whatever ``$TMPDIR``
is; a name never holds a partial file, and a full disk ends the run with one line while the files
already there stay intact. Loading: ``weights_only=True`` whatever the environment says, and one
line naming the file when it fails.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic saves in the checkpoint's directory and weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is True whatever the caller or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says. No mmap:
        # the optimizer state is updated in place after loading.
        checkpoint = load_checkpoint_file(path, mmap=False, map_location=map_location or (lambda storage, loc: storage))
        if "pytorch-lightning_version" not in checkpoint:
            raise FlightMindError(
                f"{path} holds no training state (it was not written by `flightmind fit`): --ckpt_path resumes a run; "
                "to start from a model's weights, name it in model.init_args.base_checkpoint (fine-tuning)"
            )
        return checkpoint
