"""A distributed checkpoint's index (.metadata, which torch unpickles freely) is read only when it
holds DCP's own classes: a crafted one is refused in one line before any code in it can run."""

import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from flightmind.cli import main
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_checkpoint_file, read_saved
from flightmind.model.distributed_checkpoint import DCP_INDEX, DCP_METADATA, check_index


class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def distributed_checkpoint(path: Path) -> Path:
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming the intent is to save in a single process"
        dcp.save({"state_dict": model.state_dict(), "optimizer_0": optimizer.state_dict()}, checkpoint_id=path, no_dist=True)
    torch.save({"model_config": {"depth": 2}, "global_step": 1}, path / DCP_METADATA)
    return path


def test_a_real_index_passes_and_a_crafted_one_is_refused_before_it_runs(tmp_path):
    path = distributed_checkpoint(tmp_path / "step_1.ckpt")
    check_index(path)  # DCP's own index: dataclasses, enums, paths, sizes, dtypes
    assert load_checkpoint_file(path)["global_step"] == 1
    marker = tmp_path / "ran"
    index = pickle.loads((path / DCP_INDEX).read_bytes())
    index.storage_meta = Evil(marker)  # a real index carrying one object that runs code
    (path / DCP_INDEX).write_bytes(pickle.dumps(index))
    for load in (load_checkpoint_file, read_saved):
        with pytest.raises(FlightMindError, match=r"its \.metadata holds Python objects other than .*\(pathlib\.Path\.touch\), which can run code"):
            load(path)
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not marker.exists() and not (tmp_path / "out").exists()
    (path / DCP_INDEX).write_bytes(b"\x80\x04garbage")
    with pytest.raises(FlightMindError, match=r"its \.metadata is damaged"):
        check_index(path)
