"""The run's checkpoints: ``step_N`` every N optimizer steps (the newest ``keep`` kept) and when
training ends, ``last`` and ``final`` as hard links to one of them (a second name, never a second
write), a disk-space check at the start, and ``--ckpt_path last`` resolved to the newest readable
checkpoint.

Files are written by ``AtomicCheckpointIO`` (checkpoint_io.py), in the background with
``asynchronous``; links wait for the save they name. Temporary files and directories an
interrupted save left behind are removed when the next run starts.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from flightmind.atomic import link_or_copy, remove_leftovers
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_checkpoint_file
from flightmind.model.distributed_checkpoint import is_distributed_checkpoint
from flightmind.training.checkpoint_io import checkpoint_writer, free_bytes, gigabytes
from flightmind.training.fsdp2 import FSDP2Strategy
from flightmind.training.internals import is_logging_step

LAST = "last.ckpt"
FINAL = "final.ckpt"
ADAMW_BYTES = 8  # two fp32 moments per trained parameter
OVERHEAD = 1_000_000  # loop state, hyperparameters, tokenizer


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for ``step_N`` files with retention, a linked ``last.ckpt`` and a disk check.

    Args:
        keep: how many ``step_N`` checkpoints to keep, newest first (0 keeps all); ``best``,
            ``final`` and ``last`` are separate names and always kept.
        asynchronous: write checkpoints in the background (``AtomicCheckpointIO(asynchronous=True)``):
            a save holds training up only for the copy to host memory.
        **kwargs: ModelCheckpoint's arguments (dirpath, filename, every_n_train_steps, …).
    """

    def __init__(self, keep: int = 5, asynchronous: bool = False, **kwargs) -> None:
        if keep < 0:
            raise FlightMindError(f"checkpoint.keep={keep}: give 0 (keep every step_N checkpoint) or a positive count")
        if kwargs.get("save_last") is not False:
            kwargs["save_last"] = "link"  # last.ckpt: a second name of the newest step_N, not a second write
        super().__init__(**kwargs)
        self.keep = keep
        self.asynchronous = asynchronous

    # Lightning makes `last` a symbolic link (removed, then re-created). A hard link replaced by
    # rename survives the retention of its step_N and is never missing; with asynchronous saves it
    # is made once the save it names is complete. Overrides a private static
    # method of ModelCheckpoint (lightning 2.6); tests/training/test_checkpoints.py fails if it goes.
    @staticmethod
    def _link_checkpoint(trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_after_save(trainer, Path(filepath), Path(linkpath))
        trainer.strategy.barrier()

    # -- start: leftovers and disk space ------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, ModelParallelStrategy) and not isinstance(trainer.strategy, FSDP2Strategy):
            raise FlightMindError(
                "trainer.strategy: Lightning's ModelParallelStrategy writes distributed checkpoints in place (a crash "
                "mid-save leaves a partial one): use class_path flightmind.training.fsdp2.FSDP2Strategy (same arguments)"
            )
        super().setup(trainer, pl_module, stage)
        writer = checkpoint_writer(trainer)
        if writer is not None:
            writer.defer_failures = trainer.world_size > 1  # see check_saves
        if self.asynchronous:
            if writer is None:
                raise FlightMindError(
                    f"checkpoint.asynchronous: true needs FlightMind's AtomicCheckpointIO, but the trainer saves with "
                    f"{type(trainer.strategy.checkpoint_io).__name__}: remove that checkpoint plugin from trainer.plugins"
                )
            writer.asynchronous = True
        if stage == "fit" and trainer.is_global_zero and self.dirpath:
            removed = remove_leftovers(self.dirpath)
            if removed:
                rank_zero_info(f"removed {len(removed)} unfinished checkpoint file(s) of an interrupted save in {self.dirpath}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # The step a run starts at is on disk already (the checkpoint it resumes, or nothing at step 0).
        # Lightning checks every micro-batch against global_step, so under accumulation a resumed run
        # would write that checkpoint again on its first micro-batch. Private: see internals.py.
        self._last_global_step_saved = trainer.global_step
        refusal = None
        if trainer.is_global_zero and self.dirpath:  # rank 0 writes the checkpoints
            try:
                self.check_disk(trainer, pl_module)
            except FlightMindError as e:
                refusal = str(e)
            if self.asynchronous:
                self.check_host_memory(trainer, pl_module)
        refusal = trainer.strategy.broadcast(refusal, src=0)  # every rank stops, none waits for the others
        if refusal:
            raise FlightMindError(refusal)

    def checkpoints_kept(self, trainer: L.Trainer) -> int:
        """How many full checkpoint files the run holds at once (last and final are links to a step_N;
        best is one too when it was saved at a step_N, but keeps its space once retention removes that)."""
        every = self._every_n_train_steps or 0
        saves = (trainer.max_steps // every if every and trainer.max_steps and trainer.max_steps > 0 else 1)
        steps = min(self.keep, saves) if self.keep else saves
        return steps + 2  # best, and the temporary file of the save in progress

    def check_disk(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        size = estimate_checkpoint_bytes(pl_module, trainer.world_size)
        directory = Path(self.dirpath)
        free = free_bytes(directory)
        if free is None:
            return
        # Files this run will replace free their space as it goes.
        existing = sum(p.stat().st_size for p in directory.glob("*.ckpt") if p.is_file()) if directory.is_dir() else 0
        needed = size * self.checkpoints_kept(trainer)
        if size > free:
            raise FlightMindError(
                f"not enough disk for even one checkpoint in {directory}: each takes about {gigabytes(size)} "
                f"(weights + AdamW state), {gigabytes(free)} are free: free space or set checkpoint.dirpath elsewhere"
            )
        if needed > free + existing:
            rank_zero_warn(
                f"checkpoints in {directory} will need about {gigabytes(needed)} ({self.checkpoints_kept(trainer)} files "
                f"of {gigabytes(size)}: checkpoint.keep={self.keep} step_N, best, one being written) but "
                f"{gigabytes(free)} are free: lower checkpoint.keep or free space before the disk fills mid-run"
            )

    def check_host_memory(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Asynchronous saves hold a copy of the checkpoint in host memory: warn when it may not fit."""
        size = estimate_checkpoint_bytes(pl_module, trainer.world_size)
        if isinstance(trainer.strategy, FSDP2Strategy) and trainer.strategy.sharded_checkpoints:
            size //= max(trainer.num_nodes, 1)  # every rank copies its shard: a node holds its ranks' share
        available = available_host_memory()
        if available is not None and size > 0.5 * available:
            rank_zero_warn(
                f"checkpoint.asynchronous: each save copies about {gigabytes(size)} into host memory per node and "
                f"{gigabytes(available)} are available: set checkpoint.asynchronous false if the machine runs short"
            )

    # -- retention ----------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.check_saves(trainer)
        self.prune(trainer)

    def check_saves(self, trainer: L.Trainer) -> None:
        """Stop the run when a save failed: one process at the next step; several together, on the
        optimizer steps Lightning logs (which read the device anyway), with one small all-reduce."""
        writer = checkpoint_writer(trainer)
        if writer is None:
            return
        if trainer.world_size == 1:
            writer.settle()  # raises
            return
        if not is_logging_step(trainer):
            return
        writer.settle()  # keeps
        if trainer.strategy.reduce_boolean_decision(writer.failure is not None, all=False):
            failure, writer.failure = writer.failure, None
            raise FlightMindError(str(failure) if failure else "a checkpoint save failed on another rank: its line says why")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``step_N`` of the last step (unless already saved), with ``last`` and ``final`` its second names."""
        if self.dirpath:
            path = self.save_now(trainer)
            if trainer.is_global_zero:
                link_after_save(trainer, Path(path), Path(self.dirpath) / FINAL)
            trainer.strategy.barrier()
        super().on_train_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self.prune(trainer)

    def save_now(self, trainer: L.Trainer) -> str:
        """Save ``step_N`` (and link ``last``) for the current step, as the periodic save does."""
        if self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self.prune(trainer)
        return self._last_checkpoint_saved

    def step_files(self) -> list[tuple[int, Path]]:
        """The ``step_N`` files in ``dirpath``, by step."""
        if not self.dirpath or "{step}" not in (self.filename or "") or not Path(self.dirpath).is_dir():
            return []
        before, _, after = self.filename.partition("{step}")
        pattern = re.compile(re.escape(before) + r"(\d+)" + re.escape(after) + re.escape(self.FILE_EXTENSION))
        found = [(m, p) for p in Path(self.dirpath).iterdir() if (m := pattern.fullmatch(p.name)) and is_checkpoint(p)]
        return sorted((int(m.group(1)), p) for m, p in found)

    def prune(self, trainer: L.Trainer) -> None:
        if not self.keep or not trainer.is_global_zero:
            return
        for _, path in self.step_files()[: -self.keep]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class BestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for ``best.ckpt`` (the lowest ``val/loss``): when validation follows a step that
    ``StepCheckpoint`` has just saved, best becomes a hard link to that ``step_N`` (the weights are
    the same) instead of a second full write."""

    # Overrides ModelCheckpoint's private _save_checkpoint (lightning 2.6; internals.py lists it,
    # test_internals.py fails if it goes): the one place a ModelCheckpoint writes a file.
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        saved = next((c for c in trainer.checkpoint_callbacks if isinstance(c, StepCheckpoint)), None)
        if saved is None or saved._last_global_step_saved != trainer.global_step or not saved._last_checkpoint_saved:
            return super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            link_after_save(trainer, Path(saved._last_checkpoint_saved), Path(filepath))
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


def available_host_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def link_after_save(trainer: L.Trainer, source: Path, name: Path) -> None:
    """``link_or_copy`` once the save of ``source`` is on disk (at once unless saves are asynchronous);
    not at all if that save failed."""
    writer = checkpoint_writer(trainer)
    if writer is None:
        link_or_copy(source, name)
    else:
        writer.after_save(source, link_or_copy, source, name)


def is_checkpoint(path: Path) -> bool:
    """A ``.ckpt`` file or a complete distributed checkpoint directory (not a symbolic link)."""
    return not path.is_symlink() and (path.is_file() or is_distributed_checkpoint(path))


def estimate_checkpoint_bytes(pl_module: L.LightningModule, world_size: int = 1) -> int:
    """Weights (as stored) + AdamW's two fp32 moments per trained parameter + a little."""
    params = list(pl_module.parameters())
    local = sum(p.numel() for p in params) or 1
    trained_local = sum(p.numel() for p in params if p.requires_grad)
    config = getattr(pl_module, "config", None)
    # Sharded strategies hold a slice of each parameter: the model's shape gives the whole count.
    total = config.num_params() if config is not None and hasattr(config, "num_params") else local * world_size
    total = max(total, local)
    bytes_per = max((p.element_size() for p in params), default=4)
    return total * bytes_per + int(total * trained_local / local) * ADAMW_BYTES + OVERHEAD


# -- --ckpt_path last -----------------------------------------------------------------------------
def resolve_last(dirpath: str | Path) -> str | None:
    """The checkpoint ``--ckpt_path last`` resumes: ``last.ckpt`` if it loads, else the newest
    checkpoint in ``dirpath`` that loads (saying which and why); None when there is none."""
    directory = Path(dirpath)
    if not directory.is_dir():
        rank_zero_info(f"--ckpt_path last: no checkpoint directory {directory} yet: starting from step 0")
        return None
    last = directory / LAST
    others = sorted(
        (p for p in directory.glob("*.ckpt") if p.name != LAST and is_checkpoint(p)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    problems = []
    for path in ([last] if last.exists() else []) + others:
        try:
            load_checkpoint_file(path, mmap=True)
        except FlightMindError as e:
            problems.append(str(e))
            continue
        if path != last:
            why = f"{last.name} {'is unreadable: ' + problems[0] if last.exists() else 'is missing'}"
            rank_zero_warn(f"--ckpt_path last: {why}; resuming from {path}, the newest readable checkpoint in {directory}")
        return str(path)
    if problems:
        raise FlightMindError(
            f"--ckpt_path last: no checkpoint in {directory} can be read ({len(problems)} tried; {problems[0]}): "
            "name one with --ckpt_path, or start a new run without it"
        )
    rank_zero_info(f"--ckpt_path last: no checkpoint in {directory} yet: starting from step 0")
    return None
