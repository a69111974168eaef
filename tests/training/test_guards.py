import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from flightmind.model import GPTConfig
from flightmind.training.optimizer import OptimizerSettings
from flightmind.errors import FlightMindError
from flightmind.training.guards import GuardSettings, TrainingGuard
from flightmind.training.pretrain import PretrainModule

NAN = float("nan")


def observe_all(guard: TrainingGuard, losses, norms=None) -> list[float]:
    norms = norms or [1.0] * len(losses)
    return [float(guard.observe(step, torch.tensor(loss), torch.tensor(norm))) for step, (loss, norm) in enumerate(zip(losses, norms))]


def test_a_non_finite_step_is_skipped_and_every_later_update_until_the_check():
    guard = TrainingGuard(GuardSettings(skip_nonfinite=0))
    found_inf = observe_all(guard, [5.0, 4.0, NAN, 3.0, 3.0])
    assert found_inf == [0.0, 0.0, 1.0, 1.0, 1.0]  # sticky once over the limit
    failure, spikes, skipped = guard.check()
    assert (failure.step, failure.last_finite_step, failure.last_finite_loss) == (2, 1, 4.0)
    assert spikes == [] and skipped == []
    message = failure.message("ckpts/x.ckpt", 0)
    assert "step 2" in message and "4.0000 at step 1" in message
    for cause in ("learning rate", "precision", "data", "ckpts/x.ckpt"):
        assert cause in message


def test_skip_nonfinite_counts_up_to_its_limit_then_stops():
    guard = TrainingGuard(GuardSettings(skip_nonfinite=2))
    found_inf = observe_all(guard, [5.0, NAN, 4.0], norms=[1.0, 1.0, math.inf])
    assert found_inf == [0.0, 1.0, 1.0]
    assert guard.check() == (None, [], [1, 2])
    assert observe_all(guard, [3.0, NAN, 2.0]) == [0.0, 1.0, 1.0]
    failure, _, skipped = guard.check()
    assert failure.step == 1 and failure.skipped_before == 2 and skipped == []
    assert "after 2 skipped" in failure.message("c.ckpt", 2)


def test_a_loss_over_factor_times_the_running_median_is_a_spike():
    guard = TrainingGuard(GuardSettings(spike_factor=2.0, spike_window=8))
    losses = [3.0, 3.1, 2.9, 3.0, 6.5, 3.0, 3.0, 3.0, 3.0, 6.3]
    observe_all(guard, losses)
    failure, spikes, _ = guard.check()
    assert failure is None
    assert [(s.step, pytest.approx(s.loss)) for s in spikes] == [(4, 6.5), (9, 6.3)]
    assert "loss spike at step 4" in str(spikes[0]) and "× the median 3.0000" in str(spikes[0])


# -- in a real Trainer -------------------------------------------------------------------------


class Recorder(L.Callback):
    """Weights and step loss at the end of every optimizer step, by the number of steps done."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.losses: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module):
        self.weights[0] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights[trainer.global_step] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}
        self.losses[trainer.global_step - 1] = float(pl_module.last_step_loss)


def train_with_nan(tmp_path, nan_steps, max_steps, log_every, factor=NAN, **module_args):
    """A Trainer whose loss is multiplied by ``factor`` (NaN: non-finite) at the steps ``nan_steps``."""
    torch.manual_seed(0)
    module = PretrainModule(shape=GPTConfig(depth=2, vocab_size=512, max_seq_len=64), optimizer=OptimizerSettings(warmup_steps=1), **module_args)
    module.configure_model()
    real_loss = module.loss

    def loss(batch):
        value = real_loss(batch)
        return value * factor if module.trainer.global_step in nan_steps else value

    module.loss = loss
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, log_every_n_steps=log_every, callbacks=[recorder],
        default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    batches = [torch.randint(0, 512, (2, 33)) for _ in range(max_steps)]
    return trainer, module, recorder, lambda: trainer.fit(module, DataLoader(batches, batch_size=None))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_injected_nan_stops_with_the_message_and_a_loadable_last_good_checkpoint(tmp_path):
    # NaN at step 2; the check runs on the next step Lightning logs (3, 7, …). Steps 2 and 3 must not update.
    trainer, module, recorder, fit = train_with_nan(tmp_path, {2}, max_steps=8, log_every=4)
    with pytest.raises(FlightMindError) as raised:
        fit()
    message = str(raised.value)
    assert "non-finite loss or gradient norm at step 2" in message
    assert f"the last finite loss was {recorder.losses[1]:.4f} at step 1" in message
    path = tmp_path / "last_good_before_step_2.ckpt"
    assert str(path) in message
    checkpoint = torch.load(path, weights_only=True)
    saved = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    assert_same_weights(saved, recorder.weights[2])  # the weights after step 1, before step 2
    assert checkpoint["loss"] == pytest.approx(recorder.losses[1])
    assert max(recorder.weights) == 3  # stopped at the check


def test_skip_nonfinite_skips_counts_and_continues(tmp_path):
    trainer, module, recorder, fit = train_with_nan(tmp_path, {1, 5}, max_steps=8, log_every=2, guard=GuardSettings(skip_nonfinite=2))
    fit()
    assert trainer.global_step == 8 and module.guard.skipped == 2
    assert_same_weights(recorder.weights[2], recorder.weights[1])  # step 1 skipped
    assert_same_weights(recorder.weights[6], recorder.weights[5])  # step 5 skipped
    assert not torch.equal(recorder.weights[3]["embed.weight"], recorder.weights[2]["embed.weight"])
    optimizer = trainer.optimizers[0]
    assert all(int(state["step"]) == 6 for state in optimizer.state.values())  # Adam saw 6 of 8 steps


def test_one_nonfinite_step_over_the_limit_stops(tmp_path):
    trainer, module, recorder, fit = train_with_nan(tmp_path, {1, 3}, max_steps=8, log_every=1, guard=GuardSettings(skip_nonfinite=1))
    with pytest.raises(FlightMindError, match="at step 3 .* after 1 skipped"):
        fit()
    checkpoint = torch.load(tmp_path / "last_good_before_step_3.ckpt", weights_only=True)
    saved = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    assert_same_weights(saved, recorder.weights[3])


def test_skipped_steps_restored_from_a_checkpoint_count_toward_the_limit():
    guard = TrainingGuard(GuardSettings(skip_nonfinite=2))
    guard.skipped = 2  # as PretrainModule.on_load_checkpoint restores it
    assert observe_all(guard, [3.0, NAN, 3.0]) == [0.0, 1.0, 1.0]
    failure, _, _ = guard.check()
    assert failure.step == 1 and failure.skipped_before == 2


def _guard_rank(rank: int, init_file: str, results) -> None:
    from flightmind.training.causal_lm import _sum_over_ranks

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        guard = TrainingGuard(GuardSettings(skip_nonfinite=1))
        losses = [5.0, NAN if rank == 1 else 4.0, 3.0]  # only rank 1 sees the bad step
        results[rank] = [float(guard.observe(s, torch.tensor(loss), torch.tensor(1.0), _sum_over_ranks)) for s, loss in enumerate(losses)]
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_one_ranks_non_finite_step_is_skipped_by_every_rank(tmp_path):
    # Every rank must skip the same updates, or the DDP replicas drift apart.
    results = torch.multiprocessing.Manager().dict()
    # Forked, not spawned: a spawned rank re-imports torch and this module (seconds) before it starts.
    torch.multiprocessing.start_processes(_guard_rank, args=(str(tmp_path / "init"), results), nprocs=2, start_method="fork")
    assert dict(results) == {0: [0.0, 1.0, 0.0], 1: [0.0, 1.0, 0.0]}


def test_the_message_says_when_later_updates_were_applied():
    guard = TrainingGuard()
    observe_all(guard, [5.0, NAN, 4.0])
    failure = guard.check()[0]
    assert "from before step 1 are saved in c.ckpt" in failure.message("c.ckpt", 0)
    fp16 = failure.message("c.ckpt", 0, updates_held=False)
    assert "from before" not in fp16 and "the finite ones after step 1 were applied) are saved in c.ckpt" in fp16


def test_a_loss_spike_in_training_is_a_warning_naming_its_step(tmp_path):
    trainer, module, recorder, fit = train_with_nan(tmp_path, {6}, max_steps=8, log_every=4, factor=5.0, guard=GuardSettings(spike_window=8))
    with pytest.warns(UserWarning, match=r"loss spike at step 6\b"):
        fit()
    assert trainer.global_step == 8 and module.guard.skipped == 0  # a warning, not a stop
