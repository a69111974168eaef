"""A distributed (FSDP2) checkpoint appears under its name only when complete, written in the
foreground or the background; in one process here, in two in test_fsdp2.py."""

from concurrent.futures import Future

import pytest
import torch
import torch.distributed.checkpoint as dcp

from flightmind.atomic import TEMP_SUFFIX, remove_leftovers
from flightmind.errors import FlightMindError
from flightmind.model.distributed_checkpoint import DCP_METADATA, is_distributed_checkpoint
from flightmind.training import fsdp2
from flightmind.training.checkpoint_io import AtomicCheckpointIO
from flightmind.training.fsdp2 import FSDP2Strategy


def checkpoint(step: int) -> dict:
    return {
        "global_step": step,
        "model_config": {"depth": 2},
        "state_dict": {"w": torch.full((6,), float(step))},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.full((6,), -float(step))}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
    }


def read(path) -> tuple[int, torch.Tensor, torch.Tensor]:
    shards = {"state_dict": {"w": torch.zeros(6)}, "optimizer_0": {"state": {0: {"exp_avg": torch.zeros(6)}}, "param_groups": [{"lr": 0.0, "params": [0]}]}}
    dcp.load(shards, checkpoint_id=path, no_dist=True)
    meta = torch.load(path / DCP_METADATA, weights_only=True)
    return meta["global_step"], shards["state_dict"]["w"], shards["optimizer_0"]["state"][0]["exp_avg"]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_distributed_checkpoint_appears_under_its_name_only_when_complete(tmp_path, monkeypatch, asynchronous):
    strategy = FSDP2Strategy(data_parallel_size=1, tensor_parallel_size=1)
    strategy.checkpoint_io = writer = AtomicCheckpointIO(asynchronous=asynchronous)
    strategy.save_checkpoint(checkpoint(5), tmp_path / "step_5.ckpt")
    writer.wait()
    step_5 = tmp_path / "step_5.ckpt"
    assert is_distributed_checkpoint(step_5) and not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))
    step, w, m = read(step_5)
    assert step == 5 and torch.equal(w, torch.full((6,), 5.0)) and torch.equal(m, torch.full((6,), -5.0))

    save = dcp.async_save if asynchronous else dcp.save

    def dies_after_the_first_shard(shards, checkpoint_id, **kwargs):  # a crash (or a full disk) mid-save
        (checkpoint_id / "__0_0.distcp").write_bytes(b"half a shard")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsdp2.dcp, save.__name__, dies_after_the_first_shard)
    with pytest.raises(OSError, match="No space left"):
        strategy.save_checkpoint(checkpoint(6), tmp_path / "step_6.ckpt")
    assert not (tmp_path / "step_6.ckpt").exists()  # never a name for the partial directory
    [leftover] = tmp_path.glob(f".step_6.ckpt.*{TEMP_SUFFIX}")
    assert remove_leftovers(tmp_path) == [leftover] and not leftover.exists()  # what the next run does at its start
    monkeypatch.undo()

    strategy.save_checkpoint(checkpoint(7), step_5)  # a name that exists is replaced whole
    writer.teardown()
    assert read(step_5)[0] == 7 and not list(tmp_path.glob(".*"))


def test_a_failed_background_shard_write_stops_the_run_at_the_next_save(tmp_path, monkeypatch):
    strategy = FSDP2Strategy(data_parallel_size=1, tensor_parallel_size=1)
    strategy.checkpoint_io = AtomicCheckpointIO(asynchronous=True)

    def full_disk(shards, checkpoint_id, **kwargs):  # what async_save returns when its thread fails
        failed = Future()
        failed.set_exception(FlightMindError(f"cannot write checkpoint {checkpoint_id}: No space left on device"))
        return failed

    monkeypatch.setattr(fsdp2.dcp, "async_save", full_disk)
    strategy.save_checkpoint(checkpoint(1), tmp_path / "step_1.ckpt")  # returns: the write is in the background
    with pytest.raises(FlightMindError, match="No space left on device"):
        strategy.save_checkpoint(checkpoint(2), tmp_path / "step_2.ckpt")
    assert not (tmp_path / "step_1.ckpt").exists()  # the metadata is never written, the directory never named
