"""A crash costs nothing but the steps since the last checkpoint: resumed runs match uninterrupted ones."""

import lightning as L
import pytest
import torch

from flightmind.model import GPTConfig
from flightmind.training.optimizer import OptimizerSettings
from flightmind.data.datamodule import PretrainDataModule
from flightmind.data.mixing import aviation_count, exact_ratio
from flightmind.errors import FlightMindError
from flightmind.training.checkpoints import StepCheckpoint
from flightmind.training.pretrain import PretrainModule

MAX_STEPS = 8


class StepRecorder(L.Callback):
    """(optimizer step, loss of that step's effective batch, learning rate it used)."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._lr = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, *args):
        if not self.steps or self.steps[-1][0] != trainer.global_step:
            if pl_module.last_step_loss is not None and trainer.global_step > 0:
                step = (trainer.global_step, pl_module.last_step_loss.item(), self._lr)
                if not self.steps or self.steps[-1][0] < step[0]:
                    self.steps.append(step)


def run(prepared_dir, ckpt_dir, ckpt_path=None, depth=2, num_workers=0, callbacks=(), accumulate=2, batch_size=4, **data_kwargs):
    torch.manual_seed(0)
    recorder = StepRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="32-true",
        max_steps=MAX_STEPS,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=1.0,
        val_check_interval=8,
        check_val_every_n_epoch=None,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            recorder,
            StepCheckpoint(
                keep=0,
                dirpath=ckpt_dir,
                filename="step_{step}",
                every_n_train_steps=MAX_STEPS // 2,
                save_top_k=-1,
                auto_insert_metric_name=False,
            ),
            *callbacks,
        ],
    )
    module = PretrainModule(shape=GPTConfig(depth=depth, vocab_size=1024, max_seq_len=64), optimizer=OptimizerSettings(max_lr=1e-3, warmup_steps=2))
    data = PretrainDataModule(prepared_dir, seq_len=64, batch_size=batch_size, num_workers=num_workers, seed=7, **data_kwargs)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return recorder.steps, trainer


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_matches_uninterrupted_run(prepared_dir, tmp_path, num_workers):
    full, _ = run(prepared_dir, tmp_path / "full", num_workers=num_workers)
    assert [s for s, _, _ in full] == list(range(1, MAX_STEPS + 1))
    resumed, trainer = run(
        prepared_dir, tmp_path / "resumed", ckpt_path=tmp_path / "full" / "step_4.ckpt", num_workers=num_workers
    )
    assert trainer.global_step == MAX_STEPS
    assert [s for s, _, _ in resumed] == list(range(5, MAX_STEPS + 1))
    for (step, loss, lr), (r_step, r_loss, r_lr) in zip(full[4:], resumed):
        assert r_step == step
        assert r_loss == pytest.approx(loss, abs=1e-6), f"loss differs at step {step}"
        assert r_lr == pytest.approx(lr, rel=1e-12), f"learning rate differs at step {step}"


def test_checkpoints_are_complete_and_load_with_weights_only(prepared_dir, tmp_path):
    run(prepared_dir, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["final.ckpt", "last.ckpt", "step_4.ckpt", "step_8.ckpt"]
    checkpoint = torch.load(tmp_path / "step_4.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert checkpoint["hyper_parameters"]["shape"]["depth"] == 2
    assert checkpoint["model_config"]["vocab_size"] == 1024
    assert isinstance(checkpoint["loss"], float) and 0 < checkpoint["loss"] < 10
    assert checkpoint["optimizer_states"][0]["state"]  # AdamW moments are saved
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"position": 4 * 2 * 4}]
    assert torch.load(tmp_path / "final.ckpt", weights_only=True)["global_step"] == MAX_STEPS


def test_resuming_with_another_shape_names_the_field(prepared_dir, tmp_path):
    run(prepared_dir, tmp_path)
    with pytest.raises(FlightMindError, match=r"depth=2 but this run configures depth=4"):
        run(prepared_dir, tmp_path / "other", ckpt_path=tmp_path / "step_4.ckpt", depth=4)


# ---------------------------------------------------------------------------------------------
# With the general pool streamed and mixed in


@pytest.fixture(scope="module")
def general_pool(prepared_dir):
    path = prepared_dir.parent / "corpus" / "general" / "python_stdlib_docstrings.jsonl"
    if not path.is_file():
        pytest.skip("this Python ships no standard-library sources, so the demo corpus has no general part")
    return {"path": "json", "data_files": str(path), "ready_sequences": 8, "shuffle_block": 20}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_resumed_mixed_run_matches_the_uninterrupted_run(prepared_dir, general_pool, tmp_path, num_workers, shuffle, monkeypatch):
    monkeypatch.setattr("flightmind.data.streaming.JSON_LINES_PER_UNIT", 10)  # blocks of 20 documents: several per pass
    mixed = dict(num_workers=num_workers, shuffle=shuffle, aviation_ratio=0.3, general=general_pool)
    full, _ = run(prepared_dir, tmp_path / "full", **mixed)
    assert [s for s, _, _ in full] == list(range(1, MAX_STEPS + 1))
    position = torch.load(tmp_path / "full" / "step_4.ckpt", weights_only=True)["loops"]["fit_loop"]["state_dict"]
    [loader_state] = position["combined_loader"]
    assert loader_state["micro_batches"] == 4 * 2 and loader_state["sequences"] == 4 * 2 * 4
    assert loader_state["aviation_sequences"] == 9  # floor(32 · 0.3)
    assert len(loader_state["readers"]) == 1 and len(loader_state["readers"][0]) == max(1, num_workers)

    resumed, trainer = run(prepared_dir, tmp_path / "resumed", ckpt_path=tmp_path / "full" / "step_4.ckpt", **mixed)
    assert trainer.global_step == MAX_STEPS
    assert [s for s, _, _ in resumed] == list(range(5, MAX_STEPS + 1))
    for (step, loss, _), (r_step, r_loss, _) in zip(full[4:], resumed):
        assert r_step == step
        assert r_loss == pytest.approx(loss, abs=1e-6), f"loss differs at step {step}"


def test_a_stream_that_keeps_failing_stops_the_run_and_leaves_the_last_checkpoint(prepared_dir, general_pool, tmp_path, monkeypatch):
    from flightmind.data import streaming

    original = streaming.read_unit
    network_down = []

    def read_unit(*args):
        if network_down:
            raise ConnectionError("network is unreachable")
        return original(*args)

    class CutNetworkAfterStep4(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step >= 4:
                network_down.append(True)

    monkeypatch.setattr(streaming, "read_unit", read_unit)
    monkeypatch.setattr("flightmind.data.streaming.JSON_LINES_PER_UNIT", 1)  # units of one document,
    monkeypatch.setattr("flightmind.data.streaming.DOCUMENTS_PER_READ", 1)  # read one at a time,
    monkeypatch.setattr("flightmind.data.streaming.TOKENIZE_CHARS", 1)  # and no further than needed
    monkeypatch.setattr("flightmind.data.streaming.time.sleep", lambda seconds: None)
    pool = {**general_pool, "ready_sequences": 1, "retry_attempts": 2, "shuffle_block": 0}
    with pytest.raises(FlightMindError, match=r"failed 3 times in a row at reader 0 of 1.*last checkpoint is intact"):
        run(prepared_dir, tmp_path, shuffle=False, aviation_ratio=0.3, general=pool, callbacks=[CutNetworkAfterStep4()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step_4.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 4


def test_a_mixed_run_resumes_with_another_micro_batch_and_accumulation(prepared_dir, general_pool, tmp_path, monkeypatch):
    # 4 × 2 sequences per step saved, 8 × 1 resumed: the same tokens per step, made another way.
    monkeypatch.setattr("flightmind.data.streaming.JSON_LINES_PER_UNIT", 10)
    mixed = dict(shuffle=True, aviation_ratio=0.3, general=general_pool)
    run(prepared_dir, tmp_path / "full", **mixed)
    resumed, trainer = run(prepared_dir, tmp_path / "resumed", ckpt_path=tmp_path / "full" / "step_4.ckpt", accumulate=1, batch_size=8, **mixed)
    assert trainer.global_step == MAX_STEPS
    assert [s for s, _, _ in resumed] == list(range(5, MAX_STEPS + 1))
    [state] = torch.load(tmp_path / "resumed" / "final.ckpt", weights_only=True)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state["micro_batches"] == MAX_STEPS and state["sequence_base"] == 4 * 8
    assert state["aviation_next"] == 9 + (aviation_count(64, exact_ratio(0.3)) - aviation_count(32, exact_ratio(0.3)))  # 9 + 10
