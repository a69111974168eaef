"""A checkpoint written before the model's shape became a dataclass (tests/assets, made by commit 6ff5e7f:
d1, vocabulary 256, 3 optimizer steps on random tokens) still loads, and resumes to exactly the losses
that code itself gives when it resumes the same checkpoint on the same batches."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from flightmind.model import GPTConfig
from flightmind.model.checkpoint import build_model, read_checkpoint
from flightmind.training.optimizer import OptimizerSettings
from flightmind.training.pretrain import PretrainModule

EARLIER = Path(__file__).resolve().parents[1] / "assets" / "pretrain_d1_before_shape.ckpt"
# Steps 4-6 when commit 6ff5e7f resumes this checkpoint with DataLoader(data[12:], batch_size=4).
EARLIER_RESUMED = [5.547267913818359, 5.658299922943115, 5.596848011016846]


def test_an_earlier_checkpoint_loads_with_todays_shape():
    saved = read_checkpoint(EARLIER)
    assert "head_size" not in torch.load(EARLIER, weights_only=True)["model_config"]  # written before the field
    assert saved.config == GPTConfig(depth=1, vocab_size=256, max_seq_len=32)
    model = build_model(saved)
    assert model.config.n_kv_head == model.config.n_head == 1 and model.config.tie_embeddings


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, *_):
        self.losses.append(float(module.last_step_loss))


def test_an_earlier_checkpoint_resumes_to_the_losses_it_would_have_had():
    data = torch.randint(0, 256, (64, 17), generator=torch.Generator().manual_seed(1))
    module = PretrainModule(shape=GPTConfig(depth=1, vocab_size=256, max_seq_len=32), optimizer=OptimizerSettings(max_lr=1e-2, warmup_steps=1))
    losses = Losses()
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, precision="32-true", gradient_clip_val=1.0, callbacks=[losses])
    trainer.fit(module, DataLoader(data[12:], batch_size=4), ckpt_path=EARLIER)
    assert trainer.global_step == 6
    assert losses.losses == pytest.approx(EARLIER_RESUMED, abs=1e-6)
