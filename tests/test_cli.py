"""The public commands, run as a user runs them: `flightmind …` in a subprocess."""

import pytest
import torch

from tests.helpers import REPO, flightmind, scalars


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
    assert losses[0][1] == pytest.approx(10.4, abs=0.15)  # ≈ ln(32768) at initialization
    assert losses[0][1] - losses[-1][1] >= 1.5
    assert len(scalars(run_dir, "val/loss")) >= 2
    for tag in ("val/ppl", "train/ppl", "train/grad_norm", "lr/pg1", "train/device/items_per_sec"):
        assert scalars(run_dir, tag), tag


def test_resume_from_last_continues_at_the_saved_step(smoke_run):
    cwd, _ = smoke_run
    result = flightmind(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--ckpt_path", "last", "--trainer.max_steps", "22", cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = torch.load(cwd / "checkpoints" / "smoke" / "final.ckpt", weights_only=True)
    assert final["global_step"] == 22
    resumed_steps = [step for step, _ in scalars(cwd / "lightning_logs" / "version_1", "train/loss")]
    assert resumed_steps == [20, 21]


def test_resume_with_another_depth_is_one_clear_error(smoke_run):
    cwd, _ = smoke_run
    result = flightmind(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--ckpt_path", "last", "--model.init_args.depth", "2", cwd=cwd
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "was trained with depth=4 but this run configures depth=2" in result.stderr


def test_missing_data_directory_is_one_clear_error(tmp_path):
    result = flightmind(
        "fit", "-c", REPO / "configs" / "smoke.yaml", "--data.init_args.build_demo", "false",
        "--data.init_args.data_dir", tmp_path / "nowhere", cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "flightmind prepare" in result.stderr and "nowhere" in result.stderr


def test_strict_prepare_names_file_and_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    result = flightmind("prepare", "--input", bad, "--out", tmp_path / "out", "--vocab-size", "300", "--strict", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:2" in result.stderr


def test_help_lists_training_and_tool_commands(tmp_path):
    result = flightmind("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "prepare"):
        assert f"  {command} " in result.stdout
