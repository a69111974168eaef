import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from flightmind.model import GPTConfig
from flightmind.training.pretrain import PretrainModule


def tiny_module(**kwargs) -> PretrainModule:
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, max_seq_len=64), **kwargs)
    module.configure_model()
    return module


def test_decay_group_holds_exactly_the_matrices():
    module = tiny_module()
    module._trainer = type("T", (), {"max_steps": 10})()
    optimizer = module.configure_optimizers()["optimizer"]
    decay, no_decay = optimizer.param_groups
    matrices = {id(p) for p in module.parameters() if p.dim() >= 2}
    vectors = {id(p) for p in module.parameters() if p.dim() < 2}
    assert {id(p) for p in decay["params"]} == matrices and decay["weight_decay"] == 0.1
    assert {id(p) for p in no_decay["params"]} == vectors and no_decay["weight_decay"] == 0.0
    assert len(vectors) == 2 * 2 + 1  # two RMSNorms per block and the final one
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-8
    assert optimizer.param_groups[0]["lr"] == 0.0  # warm-up starts from zero


class GradCapture(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()}


def grads_after_one_step(batches, accumulate):
    capture = GradCapture()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=accumulate,
        callbacks=[capture],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(tiny_module(), DataLoader(batches, batch_size=None))
    return capture.grads


def test_accumulating_four_batches_of_two_equals_one_batch_of_eight():
    torch.manual_seed(1)
    batch = torch.randint(0, 32768, (8, 65))
    whole = grads_after_one_step([batch], accumulate=1)
    accumulated = grads_after_one_step(list(batch.split(2)), accumulate=4)
    assert whole.keys() == accumulated.keys()
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], atol=1e-5, rtol=1e-5, msg=name)


def validate(prepared_dir, **trainer_args) -> dict:
    from flightmind.data.datamodule import PretrainDataModule

    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=1024, max_seq_len=64))
    module.configure_model()  # the same weights in every process
    data = PretrainDataModule(data_dir=str(prepared_dir), seq_len=32, batch_size=2, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **trainer_args)
    (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
    return metrics


@pytest.mark.slow
def test_validation_loss_is_the_mean_over_all_ranks_and_ppl_its_exp(prepared_dir):
    # One process over batches 0-3 (sequences 0-7); two ranks over two batches each: the same 8 sequences.
    one = validate(prepared_dir, devices=1, limit_val_batches=4)
    two = validate(prepared_dir, devices=2, strategy="ddp_fork", limit_val_batches=2)  # fork: no re-import per rank
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)
    assert one["val/ppl"] == pytest.approx(math.exp(one["val/loss"]), rel=1e-5)
    assert two["val/ppl"] == pytest.approx(math.exp(two["val/loss"]), rel=1e-5)
