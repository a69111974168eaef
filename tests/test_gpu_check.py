"""benchmarks/gpu_check.py works before the first GPU session: its dry run on the CPU, its imports,
and the config cases it runs on the GPU are the shipped configs'."""

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from flightmind.training.lightning_cli import instantiate_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import gpu_check  # noqa: E402

DRY_RUN = """
import sys
import benchmarks.gpu_check as check
imported = 'datasets' in sys.modules or 'flightmind.data.datamodule' in sys.modules
code = check.main(['--dry-run', '--out', sys.argv[1]])
print('IMPORTED', imported, 'datasets' in sys.modules or 'flightmind.data.datamodule' in sys.modules)
sys.exit(code)
"""


@pytest.mark.slow
def test_dry_run_trains_every_case_on_the_cpu_without_datasets(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", DRY_RUN, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IMPORTED False False" in result.stdout
    rows = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["case"], r["micro_batch"]) for r in rows] == [
        ("d8 config", 2), ("d24 config", 2), ("d32 config", 2), ("d8 eager", 4), ("d8 eager", 2), ("d24 eager", 2),
    ]  # d8 eager at 4 "ran out of memory" (simulated): the next size was tried
    assert rows[3]["status"] == "OOM"
    for row in rows[:3] + rows[4:]:
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
        assert len(row["losses"]) == 6 and row["losses"][-1] < row["losses"][0]
        assert row["accumulation"] == 2 and row["planned_gib"] > 0  # accumulation as configured (capped at 2 here)
    assert [r["strategy"] for r in rows[:3]] == ["single device", "DDP", "FSDP2"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| d") == 6 and "(dry run: CPU, tiny models)" in table
    assert "attention: SDPA kernel flash (CPU)" in table and "clocks: n/a (CPU)" in table
    printed = result.stdout.rstrip().splitlines()
    assert printed[-1] == "IMPORTED False False" and printed[-2] == table.splitlines()[-1]  # the table prints last


def test_config_cases_run_what_the_configs_configure():
    for config in (gpu_check.D8_CONFIG, gpu_check.D24_CONFIG, gpu_check.D32_CONFIG):
        model, data, trainer = instantiate_config("-c", str(REPO / config["file"]))
        assert model.config.depth == config["depth"] and data.batch_size == config["micro_batch"]
        assert trainer.accumulate_grad_batches == config["accumulation"] and model.hparams.compile == config["compile"]
        assert model.activation_checkpointing.mode == config["checkpointing"]
        assert config["file"].split("/")[-1].startswith(config["card"])  # the card the file is written for

    _, _, trainer = instantiate_config("-c", str(REPO / gpu_check.D24_CONFIG["file"]))
    configured, checked = trainer.strategy, gpu_check.d24_strategy()
    assert isinstance(configured, DDPStrategy) and isinstance(checked, DDPStrategy)
    for knob in ("gradient_as_bucket_view", "bucket_cap_mb", "find_unused_parameters", "static_graph"):
        assert configured._ddp_kwargs.get(knob, False) == checked._ddp_kwargs.get(knob, False), knob

    _, _, trainer = instantiate_config("-c", str(REPO / gpu_check.D32_CONFIG["file"]))
    assert isinstance(trainer.strategy, ModelParallelStrategy) and isinstance(gpu_check.d32_strategy(), ModelParallelStrategy)
    assert trainer.strategy._tensor_parallel_size == gpu_check.d32_strategy()._tensor_parallel_size == 1
