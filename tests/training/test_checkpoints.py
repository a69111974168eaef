"""Retention keeps the newest step_N, last.ckpt is a second name of the newest (no second write),
--ckpt_path last falls back to the newest readable checkpoint, and the disk is checked at the start."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from flightmind.errors import FlightMindError
from flightmind.training import checkpoint_io, checkpoints
from flightmind.training.checkpoints import BestCheckpoint, StepCheckpoint, estimate_checkpoint_bytes, resolve_last
from tests.helpers import REPO
from tests.training.tiny import durable_trainer, tiny_config, tiny_module_and_data


@pytest.mark.slow
def test_retention_keeps_the_newest_5_step_checkpoints_and_last_is_a_hard_link_to_the_newest(prepared_dir, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    (ckpts / ".step_9.ckpt.x1y2.fmtmp").write_bytes(b"PK\x03\x04 the unfinished save of a killed run")
    best = BestCheckpoint(dirpath=str(ckpts), filename="best", monitor="val/loss", save_top_k=1, enable_version_counter=False)
    trainer = durable_trainer(ckpts, max_steps=8, every=1, keep=5, callbacks=[best])  # validates after step 8
    module, data = tiny_module_and_data(prepared_dir)
    trainer.fit(module, data)
    names = sorted(p.name for p in ckpts.iterdir())  # the leftover is gone too
    assert names == ["best.ckpt", "final.ckpt", "last.ckpt"] + [f"step_{n}.ckpt" for n in range(4, 9)]
    last, newest = ckpts / "last.ckpt", ckpts / "step_8.ckpt"
    # StepCheckpoint._link_checkpoint replaces Lightning's symbolic link: this fails if the hook is renamed.
    assert not last.is_symlink() and os.path.samefile(last, newest) and os.path.samefile(ckpts / "final.ckpt", newest)
    assert os.path.samefile(ckpts / "best.ckpt", newest)  # validated at a saved step: linked, not written again
    assert newest.stat().st_nlink == 4  # step_8, last, final, best: one file, written once
    assert torch.load(last, weights_only=True)["global_step"] == 8


@pytest.mark.parametrize("asynchronous", [False, True])
def test_the_end_of_training_saves_its_step_once_and_last_and_final_are_second_names(prepared_dir, tmp_path, monkeypatch, asynchronous):
    writes = []
    write = checkpoint_io.save_atomically
    monkeypatch.setattr(checkpoint_io, "save_atomically", lambda checkpoint, path: (writes.append(Path(path).name), write(checkpoint, path)))
    reference = tmp_path / "reference"
    for directory, asynchronous_now in ((reference, False), (tmp_path / "run", asynchronous)):
        trainer = durable_trainer(directory, max_steps=7, every=2, keep=0, asynchronous=asynchronous_now)
        trainer.fit(*tiny_module_and_data(prepared_dir))
    # max_steps 7 is no multiple of 2: step_7 is written at the end, once; last and final name it.
    assert writes == ["step_2.ckpt", "step_4.ckpt", "step_6.ckpt", "step_7.ckpt"] * 2
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["final.ckpt", "last.ckpt", "step_2.ckpt", "step_4.ckpt", "step_6.ckpt", "step_7.ckpt"]
    assert os.path.samefile(run / "last.ckpt", run / "step_7.ckpt") and os.path.samefile(run / "final.ckpt", run / "step_7.ckpt")
    # A resumed run does not write the checkpoint it starts from again (Lightning would, under accumulation).
    writes.clear()
    trainer = durable_trainer(tmp_path / "resumed", max_steps=7, every=2, keep=0, asynchronous=asynchronous)
    trainer.fit(*tiny_module_and_data(prepared_dir), ckpt_path=str(reference / "step_4.ckpt"))
    assert writes == ["step_6.ckpt", "step_7.ckpt"]
    for step, directory in ((2, run), (7, run), (7, tmp_path / "resumed")):  # each file holds the state of its step
        ours, theirs = (torch.load(d / f"step_{step}.ckpt", weights_only=True) for d in (directory, reference))
        assert ours["global_step"] == theirs["global_step"] == step
        for key, value in theirs["state_dict"].items():
            assert torch.equal(ours["state_dict"][key], value), key
        for ours_state, theirs_state in zip(ours["optimizer_states"][0]["state"].values(), theirs["optimizer_states"][0]["state"].values()):
            assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)


def test_lightnings_model_parallel_strategy_is_refused_for_its_in_place_distributed_checkpoints():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy

    trainer = SimpleNamespace(strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1))
    with pytest.raises(FlightMindError, match=r"trainer.strategy: .*use class_path flightmind.training.fsdp2.FSDP2Strategy"):
        StepCheckpoint().setup(trainer, None, "fit")


@pytest.mark.slow
@pytest.mark.parametrize("asynchronous", ["false", "true"])
def test_a_save_failing_on_rank_0_alone_stops_every_ddp_rank_with_its_line(prepared_dir, tmp_path, asynchronous):
    # Rank 0 writes alone while the others wait at Lightning's barrier: raising there would hang them.
    config = tiny_config(tmp_path / "tiny.yaml", prepared_dir, tmp_path / "ckpts", max_steps=12, every=2, shuffle=False)
    command = [
        sys.executable, "-m", "flightmind.cli", "fit", "-c", str(config), "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--checkpoint.asynchronous", asynchronous, "--trainer.callbacks+=tests.training.failing_save.FailOnRankZero",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("flightmind: error:")]
    assert any("cannot write checkpoint" in line and "step_2.ckpt: No space left on device (injected)" in line for line in lines), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ckpts" / "step_2.ckpt").exists() and not (tmp_path / "ckpts" / "final.ckpt").exists()


def test_keep_0_keeps_every_step_checkpoint(tmp_path):
    callback = StepCheckpoint(keep=0, dirpath=str(tmp_path), filename="step_{step}")
    for step in range(1, 9):
        (tmp_path / f"step_{step}.ckpt").write_bytes(b"x")

    class Trainer:
        is_global_zero = True

    callback.prune(Trainer())
    assert len(list(tmp_path.glob("step_*.ckpt"))) == 8
    StepCheckpoint(keep=5, dirpath=str(tmp_path), filename="step_{step}").prune(Trainer())
    assert sorted(int(p.stem[5:]) for p in tmp_path.glob("step_*.ckpt")) == [4, 5, 6, 7, 8]
    with pytest.raises(FlightMindError, match=r"checkpoint.keep=-1"):
        StepCheckpoint(keep=-1)


def _save(path: Path, step: int, mtime: float) -> None:
    torch.save({"global_step": step}, path)
    os.utime(path, (mtime, mtime))


def test_ckpt_path_last_falls_back_to_the_newest_readable_checkpoint_and_says_which(tmp_path, caplog):
    _save(tmp_path / "step_2.ckpt", 2, 1000)
    _save(tmp_path / "step_4.ckpt", 4, 2000)
    (tmp_path / "step_6.ckpt").write_bytes(b"")  # newest, but empty
    with pytest.warns(UserWarning, match=r"last.ckpt is missing; resuming from .*step_4.ckpt"):
        assert resolve_last(tmp_path) == str(tmp_path / "step_4.ckpt")  # killed before the first last.ckpt
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match=r"last.ckpt is unreadable: .*truncated.*resuming from .*step_4.ckpt"):
        assert resolve_last(tmp_path) == str(tmp_path / "step_4.ckpt")
    _save(tmp_path / "last.ckpt", 4, 3000)
    assert resolve_last(tmp_path) == str(tmp_path / "last.ckpt")
    assert resolve_last(tmp_path / "nothing-yet") is None


def test_ckpt_path_last_with_only_unreadable_checkpoints_is_one_clear_error(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(FlightMindError, match=r"no checkpoint in .* can be read \(1 tried"):
        resolve_last(tmp_path)


def test_checkpoint_size_estimate_is_weights_plus_adamw_moments():
    from flightmind.model import GPTConfig
    from flightmind.training.pretrain import PretrainModule

    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=64))
    module.configure_model()
    n = sum(p.numel() for p in module.parameters())
    assert estimate_checkpoint_bytes(module) == n * 4 + n * 8 + checkpoints.OVERHEAD


def test_the_disk_check_refuses_when_one_checkpoint_cannot_fit_and_warns_when_all_cannot(tmp_path, monkeypatch):
    from flightmind.model import GPTConfig
    from flightmind.training.pretrain import PretrainModule

    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=64))
    module.configure_model()
    size = estimate_checkpoint_bytes(module)
    callback = StepCheckpoint(keep=5, dirpath=str(tmp_path), every_n_train_steps=10)

    class Trainer:
        max_steps, world_size, is_global_zero = 1000, 1, True

    monkeypatch.setattr(checkpoints, "free_bytes", lambda directory: size // 2)
    with pytest.raises(FlightMindError, match=r"not enough disk for even one checkpoint in .*: each takes about"):
        callback.check_disk(Trainer(), module)
    monkeypatch.setattr(checkpoints, "free_bytes", lambda directory: size * 3)
    with pytest.warns(UserWarning, match=r"will need about .* \(7 files of .*checkpoint.keep=5"):
        callback.check_disk(Trainer(), module)
    # asynchronous saves: a host copy of one checkpoint, warned about above half the available memory
    Trainer.strategy, Trainer.num_nodes = None, 1
    monkeypatch.setattr(checkpoints, "available_host_memory", lambda: size)
    with pytest.warns(UserWarning, match=r"checkpoint.asynchronous: each save copies about .* into host memory"):
        callback.check_host_memory(Trainer(), module)
    monkeypatch.setattr(checkpoints, "available_host_memory", lambda: 2 * size + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning below half
        callback.check_host_memory(Trainer(), module)


@pytest.mark.slow
def test_a_run_whose_checkpoint_cannot_fit_on_the_disk_stops_before_step_1(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "free_bytes", lambda directory: 1000)
    trainer = durable_trainer(tmp_path / "ckpts", max_steps=4, every=1)
    module, data = tiny_module_and_data(prepared_dir)
    with pytest.raises(FlightMindError, match=r"not enough disk for even one checkpoint in .*ckpts: each takes about .* MB \(weights \+ AdamW state\), 0.0 MB are free"):
        trainer.fit(module, data)
    assert trainer.global_step == 0 and not list((tmp_path / "ckpts").glob("*.ckpt"))
