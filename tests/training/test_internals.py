"""Every private Lightning/torch attribute FlightMind uses (flightmind/training/internals.py lists
them) still exists and still means what we rely on: an upgrade that moves one fails here by name."""

import inspect

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loops import _FitLoop
from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector
from torch.utils.data import DataLoader

from flightmind.model import GPTConfig
from flightmind.training.internals import is_logging_step, skip_update_on_device
from flightmind.training.pretrain import PretrainModule


def test_lightning_still_has_the_private_members_we_read():
    assert callable(getattr(_FitLoop, "_should_accumulate", None)), "FitLoop._should_accumulate is gone"
    assert isinstance(inspect.getattr_static(_LoggerConnector, "should_update_logs", None), property), (
        "_LoggerConnector.should_update_logs is gone"
    )
    # LightningCLI still calls _parse_ckpt_path while parsing (FlightMindCLI overrides it to a no-op).
    assert "_parse_ckpt_path" in inspect.getsource(LightningCLI), "LightningCLI._parse_ckpt_path is gone"
    monitor = ThroughputMonitor(batch_size_fn=len)
    for name in ("_throughputs", "_t0s", "_batches", "_samples", "_lengths"):
        assert hasattr(monitor, name), f"ThroughputMonitor.{name} is gone"
    assert callable(getattr(monitor, "_compute", None)), "ThroughputMonitor._compute is gone"
    checkpoint = ModelCheckpoint()
    for name in ("_save_topk_checkpoint", "_save_last_checkpoint", "_monitor_candidates", "_link_checkpoint", "_save_checkpoint"):
        assert callable(getattr(checkpoint, name, None)), f"ModelCheckpoint.{name} is gone"
    for name in ("_last_global_step_saved", "_last_checkpoint_saved"):
        assert hasattr(checkpoint, name), f"ModelCheckpoint.{name} is gone"
    # every write of a ModelCheckpoint still goes through _save_checkpoint (BestCheckpoint links there)
    assert "trainer.save_checkpoint(" in inspect.getsource(ModelCheckpoint._save_checkpoint)
    # on_train_batch_end still skips a step already saved (StepCheckpoint.on_train_start relies on it)
    assert "self._last_global_step_saved == trainer.global_step" in inspect.getsource(ModelCheckpoint._should_skip_saving_checkpoint)
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    assert callable(getattr(_MultiProcessingDataLoaderIter, "_shutdown_workers", None)), "DataLoader's _shutdown_workers is gone"


class Recorder(L.Callback):
    def __init__(self):
        self.flags = []

    def on_train_batch_end(self, trainer, *_):
        self.flags.append(is_logging_step(trainer))


def test_is_logging_step_marks_the_last_micro_batch_of_every_logged_optimizer_step():
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=1, vocab_size=64, max_seq_len=16))
    data = DataLoader(torch.randint(0, 64, (24, 9)), batch_size=2)
    recorder = Recorder()
    trainer = L.Trainer(accelerator="cpu", max_steps=6, accumulate_grad_batches=2, log_every_n_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, data)
    # 12 micro-batches = 6 optimizer steps; steps 3 and 6 are logged, on their second micro-batch.
    assert recorder.flags == [i in (5, 11) for i in range(12)]


@pytest.mark.parametrize("flag, moves", [(1.0, False), (0.0, True)])
def test_the_fused_adamw_skips_its_update_where_found_inf_is_set(flag, moves):
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(4)
    skip_update_on_device(optimizer, torch.tensor(flag))
    optimizer.step()
    assert (not torch.equal(weight.detach(), torch.ones(4))) == moves
