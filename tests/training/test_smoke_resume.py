"""The smoke config as shipped (mixed data, shuffling on): a run resumed from its step-10 checkpoint logs
the very losses of the uninterrupted 20-step run, with 0 and with 2 DataLoader workers. The shared smoke
run is `flightmind fit` in a subprocess; the other runs go through `flightmind.cli.main` in this process
(the same code path, without a fresh interpreter's start-up)."""

import shutil

import pytest

from tests.helpers import REPO, flightmind_here, scalars

SMOKE = REPO / "configs" / "smoke.yaml"


def fit(cwd, *args, monkeypatch, capsys):
    result = flightmind_here("fit", "-c", SMOKE, *args, cwd=cwd, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def resumed_losses(tmp_path, smoke_cwd, checkpoint, *args, monkeypatch, capsys):
    """train/loss of a run resumed from ``checkpoint`` in a directory of its own, on the smoke run's data."""
    cwd = tmp_path / "resumed"
    cwd.mkdir()
    (cwd / "data").symlink_to(smoke_cwd / "data")
    shutil.copy(checkpoint, cwd / "step_10.ckpt")
    fit(cwd, "--ckpt_path", "step_10.ckpt", "--checkpoint.dirpath", "checkpoints", *args, monkeypatch=monkeypatch, capsys=capsys)
    return scalars(cwd / "lightning_logs" / "version_0", "train/loss")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_the_smoke_run_resumed_from_step_10_logs_the_losses_of_the_uninterrupted_run(smoke_run, tmp_path, workers, monkeypatch, capsys):
    smoke_cwd, result = smoke_run
    assert "data over 20 steps: aviation: " in result.stderr + result.stdout
    args = ("--data.init_args.num_workers", str(workers))
    if workers == 0:
        full_cwd = smoke_cwd  # the shared smoke run is the uninterrupted one
    else:
        full_cwd = tmp_path / "full"
        full_cwd.mkdir()
        (full_cwd / "data").symlink_to(smoke_cwd / "data")
        fit(full_cwd, *args, monkeypatch=monkeypatch, capsys=capsys)
    full = scalars(full_cwd / "lightning_logs" / "version_0", "train/loss")
    resumed = resumed_losses(tmp_path, smoke_cwd, full_cwd / "checkpoints" / "smoke" / "step_10.ckpt", *args,
                             monkeypatch=monkeypatch, capsys=capsys)
    assert [step for step, _ in full] == list(range(20))
    assert [step for step, _ in resumed] == list(range(10, 20))
    for (step, loss), (_, resumed_loss) in zip(full[10:], resumed):
        assert resumed_loss == pytest.approx(loss, abs=1e-6), f"loss differs at step {step}"
