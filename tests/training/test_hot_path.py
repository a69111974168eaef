"""The training step reads nothing back from the device, and waits for no other rank, except on the
optimizer steps that are logged: the tests count such calls (device_reads.py) per micro-batch during
a real ``flightmind fit`` (the CLI's callbacks, progress bar, logger and checkpoints included), in one
process and in each rank of a 2-process DDP run.
"""

import pytest

import json
from pathlib import Path

from flightmind.training.lightning_cli import lightning_cli
from flightmind.training.pretrain import PretrainModule
from tests.training.ddp_probe import LAUNCHERS, launch
from tests.training.device_reads import ReadsPerMicroBatch, record_reads

REPO = Path(__file__).resolve().parents[2]
STEPS, ACCUMULATE, LOG_EVERY = 6, 2, 3
# Lightning 2.6 itself broadcasts rank 0's SIGTERM flag and reads it back before every micro-batch
# under DDP (training_epoch_loop._broadcast_sigterm_tensor; upstream PR #21640 makes it configurable).
LIGHTNING_SIGTERM_CHECK = "item in _broadcast_sigterm_tensor (training_epoch_loop.py)"


def run_args(data_dir: Path) -> list[str]:
    return [
        "-c", str(REPO / "configs" / "smoke.yaml"),
        "--data.init_args.data_dir", str(data_dir), "--data.init_args.build_demo", "false",
        "--data.init_args.aviation_ratio", "1.0",  # the shards alone: no general pool
        "--data.init_args.seq_len", "64", "--data.init_args.batch_size", "2",
        "--model.init_args.shape.depth", "2", "--model.init_args.shape.vocab_size", "1024", "--model.init_args.shape.max_seq_len", "64",
        "--trainer.max_steps", str(STEPS), "--trainer.accumulate_grad_batches", str(ACCUMULATE),
        "--trainer.log_every_n_steps", str(LOG_EVERY),
        # validation and checkpoints (which read values) after logged steps, as in the shipped configs
        "--val_every_n_steps", str(LOG_EVERY), "--trainer.limit_val_batches", "2",
        "--checkpoint.every_n_train_steps", str(LOG_EVERY),
        "--throughput.window_size", "2",
    ]  # fmt: skip


def assert_reads_only_on_logged_steps(per_batch: dict[int, list[str]], allowed: tuple[str, ...] = ()) -> None:
    micro_batches = STEPS * ACCUMULATE
    assert sorted(per_batch) == list(range(micro_batches))
    # Lightning logs optimizer steps LOG_EVERY, 2·LOG_EVERY, … (0-based: step + 1 divisible by LOG_EVERY).
    logged = {b for b in range(micro_batches) if (b + 1) % ACCUMULATE == 0 and ((b + 1) // ACCUMULATE) % LOG_EVERY == 0}
    for batch, reads in per_batch.items():
        reads = [read for read in reads if read not in allowed]
        if batch in logged:
            assert reads, f"micro-batch {batch} is logged, yet nothing was read: the probe sees nothing"
        else:
            assert reads == [], f"micro-batch {batch} (not logged) read from the device: {reads}"


@pytest.mark.slow
def test_no_device_reads_between_logging_steps(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(run_args(prepared_dir), run=False)
    probe = ReadsPerMicroBatch(record_reads(monkeypatch.setattr))
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert "val/loss" in cli.trainer.callback_metrics  # validation ran mid-training
    assert_reads_only_on_logged_steps(probe.per_batch)
    assert isinstance(cli.model, PretrainModule)


@pytest.mark.slow
def test_no_device_reads_or_barriers_between_logging_steps_in_each_ddp_rank(prepared_dir, tmp_path):
    # The non-finite guard sums its verdict over the ranks every step: queued on the device, no barrier.
    command = [
        *LAUNCHERS["flightmind fit, devices 2"], "fit", *run_args(prepared_dir),
        "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.callbacks+=tests.training.ddp_probe.RankProbe",
    ]  # fmt: skip
    output = launch(command, tmp_path, FLIGHTMIND_PROBE_READS="1")
    # Validation and samples ran under DDP, and only rank 0 wrote (checkpoints, logs) or printed samples.
    assert output.count(f"samples at step {LOG_EVERY}:") == 1 and output.count(f"samples at step {STEPS}:") == 1
    assert (tmp_path / "rank0" / "checkpoints").is_dir() and list((tmp_path / "rank1").iterdir()) == []
    for rank in range(2):
        record = json.loads((tmp_path / "probe" / f"rank{rank}.json").read_text())
        assert record["world_size"] == 2
        per_batch = dict(enumerate(record["reads"]))
        assert_reads_only_on_logged_steps(per_batch, allowed=(LIGHTNING_SIGTERM_CHECK,))
