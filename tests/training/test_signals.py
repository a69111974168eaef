"""Preemption: SIGTERM/SIGINT finish the optimizer step, save it, exit 128 + signal; the resume is loss-exact."""

import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

from flightmind.training.signals import SaveOnSignal, Stopped
from tests.helpers import REPO
from tests.training.test_resume import StepRecorder
from tests.training.tiny import durable_trainer, tiny_config, tiny_module_and_data


class SignalAt(L.Callback):
    """Sends ``signum`` to this process when micro-batch ``batch`` starts (mid-accumulation for odd counts)."""

    def __init__(self, batch: int, signum: int):
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


def fit(prepared_dir, ckpt_dir, *callbacks, ckpt_path=None):
    recorder = StepRecorder()
    trainer = durable_trainer(ckpt_dir, max_steps=8, every=100, callbacks=[recorder, *callbacks])
    module, data = tiny_module_and_data(prepared_dir, shuffle=False)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return recorder.steps


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_step_saves_that_step_exits_nonzero_and_the_resume_is_loss_exact(prepared_dir, tmp_path, signum):
    full = fit(prepared_dir, tmp_path / "full")
    assert [s for s, _, _ in full] == list(range(1, 9))
    # Micro-batch 4 starts optimizer step 3 (accumulation 2): the run finishes step 3, saves it, stops.
    with pytest.raises(Stopped) as stopped:
        fit(prepared_dir, tmp_path / "stopped", SignalAt(4, signum))
    assert stopped.value.code == 128 + signum
    saved = torch.load(tmp_path / "stopped" / "step_3.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert os.path.samefile(tmp_path / "stopped" / "last.ckpt", tmp_path / "stopped" / "step_3.ckpt")
    assert not isinstance(getattr(signal.getsignal(signum), "__self__", None), SaveOnSignal)  # handler restored
    resumed = fit(prepared_dir, tmp_path / "stopped", ckpt_path=str(tmp_path / "stopped" / "last.ckpt"))
    assert [s for s, _, _ in resumed] == list(range(4, 9))
    for (step, loss, lr), (r_step, r_loss, r_lr) in zip(full[3:], resumed):
        assert (step, lr) == (r_step, r_lr)
        assert loss == pytest.approx(r_loss, rel=1e-6, abs=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2], ids=["one process", "DDP, SIGTERM to rank 0 only, asynchronous saves"])
def test_sigterm_to_flightmind_fit_exits_143_with_a_checkpoint_that_last_resumes(prepared_dir, tmp_path, devices):
    config = tiny_config(tmp_path / "tiny.yaml", prepared_dir, tmp_path / "ckpts", max_steps=400, every=1000, shuffle=False)
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--checkpoint.asynchronous", "true"] if devices == 2 else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, "-m", "flightmind.cli", "fit", "-c", str(config), *ddp],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in child.stderr:  # training has started
        if line.startswith("FlightMind d2"):
            break
    time.sleep(3)
    child.send_signal(signal.SIGTERM)
    stderr = child.stderr.read()
    assert child.wait(timeout=300) == 143
    assert "Traceback" not in stderr
    stop = [line for line in stderr.splitlines() if line.startswith("flightmind: stopped by SIGTERM")]
    assert len(stop) == 1, stderr[-3000:]
    step = int(stop[0].split("optimizer step ")[1].split(";")[0])
    assert 0 < step < 400
    assert torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == step
    result = subprocess.run(
        [sys.executable, "-m", "flightmind.cli", "fit", "-c", str(config), "--ckpt_path", "last",
         "--trainer.max_steps", str(step + 2), *ddp],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "ckpts" / "final.ckpt", weights_only=True)["global_step"] == step + 2
