"""2-process DDP on the CPU (gloo), launched both ways the spec shows, against a 1-process run
with the same global batch: different data per rank, one gradient all-reduce per optimizer step,
the same weights, and files written by rank 0 only.

Each run goes through the real CLI; the multi-process runs are subprocesses with a timeout, killed
as a process group, so that a hang fails the test instead of blocking the suite.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flightmind.cli import main
from tests.training.ddp_probe import LAUNCHERS, launch

REPO = Path(__file__).resolve().parents[2]
STEPS, ACCUMULATE, MICRO_BATCH, SEQ_LEN = 3, 2, 2, 64


def fit_args(data_dir: Path, micro_batch: int, devices: int) -> list[str]:
    return [
        "fit", "-c", str(REPO / "configs" / "smoke.yaml"),
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.build_demo", "false",
        "--data.init_args.aviation_ratio", "1.0",  # the shards alone: no general pool
        "--data.init_args.seq_len", str(SEQ_LEN), "--data.init_args.batch_size", str(micro_batch),
        "--model.init_args.shape.depth", "2", "--model.init_args.shape.vocab_size", "1024",
        "--model.init_args.shape.max_seq_len", str(SEQ_LEN), "--model.init_args.optimizer.warmup_steps", "0",
        # AdamW's first update is lr·g/(|g| + eps): for the few gradient elements near eps (≈ 5e-9 here,
        # sums that nearly cancel), summing in another order changes g by a few percent and the weight by
        # up to 3e-5 with eps 1e-8. eps 1e-6 keeps the update a smooth function of the gradient.
        "--model.init_args.optimizer.eps", "1e-6",
        "--trainer.max_steps", str(STEPS), "--trainer.accumulate_grad_batches", str(ACCUMULATE),
        "--trainer.devices", str(devices), "--trainer.strategy", "ddp" if devices > 1 else "auto",
        "--checkpoint.dirpath", "checkpoints/ddp", "--checkpoint.every_n_train_steps", "1",
        "--trainer.callbacks+=tests.training.ddp_probe.RankProbe",
    ]  # fmt: skip


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def one_process(prepared_dir, tmp_path_factory):
    """The reference: one process, micro-batch 4 (= 2 ranks × 2), the same accumulation, in-process."""
    cwd = tmp_path_factory.mktemp("one_process")
    (cwd / "probe").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("FLIGHTMIND_PROBE_DIR", str(cwd / "probe"))
        assert main(fit_args(prepared_dir, micro_batch=2 * MICRO_BATCH, devices=1)) == 0
    checkpoints = cwd / "checkpoints" / "ddp"
    return SimpleNamespace(
        probe=json.loads((cwd / "probe" / "rank0.json").read_text()),
        weights=state_dict(checkpoints / "final.ckpt"),
        first_step_weights=state_dict(checkpoints / "step_1.ckpt"),
    )


def windows(rows_per_micro_batch, micro_batches) -> list[tuple[int, ...]]:
    return sorted(tuple(row) for i in micro_batches for row in rows_per_micro_batch[i])


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(launcher, one_process, prepared_dir, tmp_path):
    output = launch([*LAUNCHERS[launcher], *fit_args(prepared_dir, MICRO_BATCH, devices=2)], tmp_path)
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    micro_batches = range(STEPS * ACCUMULATE)

    # Each rank draws different windows; together, per optimizer step, the 1-process run's windows.
    rank0, rank1 = (set(windows(rank["rows"], micro_batches)) for rank in ranks)
    assert len(rank0) == len(rank1) == STEPS * ACCUMULATE * MICRO_BATCH and not rank0 & rank1
    for step in range(STEPS):
        step_micro_batches = range(step * ACCUMULATE, (step + 1) * ACCUMULATE)
        both = sorted(windows(ranks[0]["rows"], step_micro_batches) + windows(ranks[1]["rows"], step_micro_batches))
        assert both == windows(one_process.probe["rows"], step_micro_batches), f"optimizer step {step}"

    # Gradients are all-reduced only on the last micro-batch of each optimizer step (no_sync before it).
    for rank in ranks:
        for step in range(STEPS):
            *accumulating, last = rank["allreduces"][step * ACCUMULATE : (step + 1) * ACCUMULATE]
            assert accumulating == [0] * (ACCUMULATE - 1) and last >= 1, rank["allreduces"]

    # The same weights after the same optimizer steps (and they did move).
    checkpoints = tmp_path / "rank0" / "checkpoints" / "ddp"
    weights = state_dict(checkpoints / "final.ckpt")
    assert weights.keys() == one_process.weights.keys()
    for name, expected in one_process.weights.items():
        torch.testing.assert_close(weights[name], expected, atol=1e-5, rtol=0, msg=name)
    moved = max((one_process.weights[n] - one_process.first_step_weights[n]).abs().max() for n in weights)
    assert moved > 1e-3

    # Only rank 0 writes: checkpoints and logs in its directory, nothing in rank 1's.
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "final.ckpt", "last.ckpt", "step_1.ckpt", "step_2.ckpt", "step_3.ckpt",
    ]  # fmt: skip
    assert (tmp_path / "rank0" / "lightning_logs" / "version_0" / "config.yaml").is_file()
    assert list((tmp_path / "rank1").iterdir()) == []
    start_up = "512 tokens per optimizer step = micro-batch 2 × accumulation 2 × 2 devices × 1 nodes"
    assert output.count(start_up) == 1, output[-3000:]
