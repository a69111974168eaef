"""The public commands, run as a user runs them: the smoke run as `flightmind …` in a subprocess, the
commands on its outputs through `flightmind.cli.main` in this process (the same code path, without
a fresh interpreter's start-up)."""

import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flightmind.training.samples import SPEC_PROMPTS
from tests.helpers import REPO, flightmind_here, scalars


@pytest.mark.slow
def test_smoke_run_builds_demo_data_trains_and_checkpoints(smoke_run):
    cwd, result = smoke_run
    import json

    meta = json.loads((cwd / "data" / "demo" / "meta.json").read_text())
    assert meta["demo"] is True and meta["dtype"] == "uint16"
    names = sorted(p.name for p in (cwd / "checkpoints" / "smoke").iterdir())
    assert names == ["best.ckpt", "final.ckpt", "last.ckpt", "step_10.ckpt", "step_20.ckpt"]
    assert "tokens per optimizer step = micro-batch 8" in result.stdout + result.stderr

    run_dir = cwd / "lightning_logs" / "version_0"
    losses = scalars(run_dir, "train/loss")
    assert [step for step, _ in losses] == list(range(20))
    # The vocabulary follows the demo tokenizer, rounded up to a multiple of 128 and said at start.
    checkpoint = torch.load(cwd / "checkpoints" / "smoke" / "final.ckpt", weights_only=True)
    tokens = len(json.loads(checkpoint["tokenizer"]["json"])["model"]["vocab"])
    vocab = checkpoint["model_config"]["vocab_size"]
    assert vocab == -(-tokens // 128) * 128 and vocab < 32768
    assert f"model.shape.vocab_size {vocab:,} (rounded up to a multiple of 128" in result.stdout + result.stderr
    assert losses[0][1] == pytest.approx(math.log(vocab), abs=0.15)  # ≈ uniform at initialization
    assert losses[0][1] - losses[-1][1] >= 1.5 and losses[-1][1] < 7
    for tag in ("train/ppl", "train/grad_norm", "lr/pg1", "train/device/items_per_sec"):
        assert scalars(run_dir, tag), tag


@pytest.mark.slow
def test_smoke_run_validates_every_10_optimizer_steps_with_ppl_exp_loss(smoke_run):
    cwd, _ = smoke_run
    run_dir = cwd / "lightning_logs" / "version_0"
    val_loss, val_ppl = scalars(run_dir, "val/loss"), scalars(run_dir, "val/ppl")
    assert [step for step, _ in val_loss] == [9, 19]  # after optimizer steps 10 and 20
    assert [step for step, _ in val_ppl] == [9, 19]
    for (_, loss), (_, ppl) in zip(val_loss, val_ppl):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-5)
    checkpoints = cwd / "checkpoints" / "smoke"
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    assert best["global_step"] == 10 * (1 + min(range(2), key=lambda i: val_loss[i][1]))
    # Validation follows a saved step: best is that step_N under a second name, as last and final are step_20.
    assert os.path.samefile(checkpoints / "best.ckpt", checkpoints / f"step_{best['global_step']}.ckpt")
    assert os.path.samefile(checkpoints / "last.ckpt", checkpoints / "step_20.ckpt")
    assert os.path.samefile(checkpoints / "final.ckpt", checkpoints / "step_20.ckpt")


@pytest.mark.slow
def test_smoke_run_logs_samples_of_the_spec_prompts(smoke_run):
    cwd, result = smoke_run
    events = EventAccumulator(str(cwd / "lightning_logs" / "version_0"))
    events.Reload()
    samples = events.Tensors("samples/text_summary")
    assert [event.step for event in samples] == [10, 20]
    text = samples[-1].tensor_proto.string_val[0].decode()
    for prompt in SPEC_PROMPTS:
        assert f"**{prompt}**" in text
        assert prompt in result.stdout + result.stderr  # and on the console
    assert "greedy:" in text and "sampled (temperature 0.8, top-k 50, seed 0):" in text


def test_val_every_n_steps_counts_optimizer_steps_whatever_the_accumulation(tmp_path, monkeypatch, capsys):
    import lightning as L

    from flightmind.training.lightning_cli import FlightMindCLI

    args = ["-c", REPO / "configs" / "smoke.yaml", "--val_every_n_steps", "3", "--trainer.accumulate_grad_batches", "4"]
    cli = FlightMindCLI(
        model_class=L.LightningModule, datamodule_class=L.LightningDataModule, subclass_mode_model=True,
        subclass_mode_data=True, run=False, args=[str(a) for a in args],
    )
    assert cli.trainer.val_check_interval == 12  # micro-batches
    result = flightmind_here("fit", "-c", REPO / "configs" / "smoke.yaml", "--trainer.val_check_interval", "40",
                             cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "set val_every_n_steps" in result.stderr


@pytest.mark.slow
def test_test_command_reports_held_out_loss_perplexity_tokens_and_bits_per_byte(smoke_run, tmp_path, monkeypatch, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO)  # the summary line is Lightning's rank_zero_info
    cwd, _ = smoke_run
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"text": "METAR KORD 121651Z 27012KT 10SM BKN040 M05/M12 A3021"}\n{"text": "Cleared to land runway 28."}\n')
    result = flightmind_here(
        "test", "-c", REPO / "configs" / "smoke.yaml", "--ckpt_path", cwd / "checkpoints" / "smoke" / "step_20.ckpt",
        "--data.init_args.data_dir", cwd / "data" / "demo", "--data.init_args.test_file", held_out,
        cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr + caplog.text
    for name in ("test/loss", "test/ppl", "test/tokens", "test/bits_per_byte"):
        assert name in output
    assert "held-out set: 2 documents" in output


@pytest.mark.slow
def test_resume_from_last_continues_at_the_saved_step(smoke_run, monkeypatch, capsys):
    cwd, _ = smoke_run
    result = flightmind_here(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--ckpt_path", "last", "--trainer.max_steps", "22",
        cwd=cwd, monkeypatch=monkeypatch, capsys=capsys,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(cwd / "checkpoints" / "smoke" / "final.ckpt", weights_only=True)
    assert final["global_step"] == 22
    resumed_steps = [step for step, _ in scalars(cwd / "lightning_logs" / "version_1", "train/loss")]
    assert resumed_steps == [20, 21]


@pytest.mark.slow
def test_resume_with_another_depth_is_one_clear_error(smoke_run, monkeypatch, capsys):
    cwd, _ = smoke_run
    result = flightmind_here(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--ckpt_path", "last", "--model.init_args.shape.depth", "2",
        cwd=cwd, monkeypatch=monkeypatch, capsys=capsys,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "was trained with depth=4 but this run configures depth=2" in result.stderr


def test_missing_data_directory_is_one_clear_error(tmp_path, monkeypatch, capsys):
    result = flightmind_here(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--data.init_args.build_demo", "false",
        "--data.init_args.data_dir", tmp_path / "nowhere", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "flightmind prepare" in result.stderr and "nowhere" in result.stderr


def test_strict_prepare_names_file_and_line_without_traceback(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    result = flightmind_here("prepare", "--input", bad, "--out", tmp_path / "out", "--vocab-size", "300", "--strict",
                             "--workers", "1", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:2" in result.stderr


def test_help_lists_training_and_tool_commands(tmp_path, monkeypatch, capsys):
    result = flightmind_here("--help", cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "prepare"):
        assert f"  {command} " in result.stdout
