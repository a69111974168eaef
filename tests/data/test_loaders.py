from types import SimpleNamespace

import lightning as L
import pytest
import torch

from flightmind.data.loaders import loader_options, training_micro_batches
from flightmind.errors import FlightMindError


def test_the_training_stream_covers_every_micro_batch_of_the_run():
    trainer = L.Trainer(accelerator="cpu", max_steps=7, accumulate_grad_batches=3, logger=False, enable_checkpointing=False)
    assert training_micro_batches(trainer, "pretraining") == 21
    with pytest.raises(FlightMindError, match="set trainer.max_steps: fine-tuning runs for a number of optimizer steps"):
        training_micro_batches(L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False), "fine-tuning")


def test_loader_options_pin_only_for_cuda_and_keep_workers_alive():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert loader_options(trainer, 2) == {"num_workers": 2, "pin_memory": False, "persistent_workers": True}
    on_gpu = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert loader_options(on_gpu, 2)["pin_memory"] is True
    assert loader_options(None, 0) == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
