"""benchmarks/gpu_check.py works before the first GPU session: its dry run on the CPU, its imports,
and the config cases it runs on the GPU are the shipped configs'."""

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from flightmind.cli import instantiate_config

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
    rows = {row["case"]: row for row in json.loads((tmp_path / "gpu_check.json").read_text())}
    assert list(rows) == ["d24 config", "d24 eager", "d32 config", "d8 eager", "d8 compiled", "d24 compiled"]
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
        assert len(row["losses"]) == 6 and row["losses"][-1] < row["losses"][0]
    assert rows["d24 eager"]["micro_batch"] == 2  # 4 ran "out of memory": the search kept the largest that fit
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| d") == 6 and "(dry run: CPU, tiny models)" in table
    printed = result.stdout.rstrip().splitlines()
    assert printed[-1] == "IMPORTED False False" and printed[-2] == table.splitlines()[-1]  # the table prints last


def test_config_cases_run_what_the_configs_configure():
    model, data, trainer = instantiate_config("-c", str(REPO / gpu_check.D24_CONFIG["file"]))
    assert (data.batch_size, model.hparams.compile) == (gpu_check.D24_CONFIG["micro_batch"], gpu_check.D24_CONFIG["compile"])
    configured, checked = trainer.strategy, gpu_check.d24_strategy()
    assert isinstance(configured, DDPStrategy) and isinstance(checked, DDPStrategy)
    for knob in ("gradient_as_bucket_view", "find_unused_parameters", "static_graph"):
        assert configured._ddp_kwargs.get(knob, False) == checked._ddp_kwargs.get(knob, False), knob

    model, data, trainer = instantiate_config("-c", str(REPO / gpu_check.D32_CONFIG["file"]))
    assert (data.batch_size, model.hparams.compile) == (gpu_check.D32_CONFIG["micro_batch"], gpu_check.D32_CONFIG["compile"])
    configured, checked = trainer.strategy, gpu_check.d32_strategy()
    assert isinstance(configured, FSDPStrategy) and isinstance(checked, FSDPStrategy)
    assert configured.kwargs["auto_wrap_policy"]._module_classes == checked.kwargs["auto_wrap_policy"]._module_classes
    assert (
        configured._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
        == checked._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
    )
    assert configured.sharding_strategy == checked.sharding_strategy
    assert not model.hparams.activation_checkpointing  # FSDP's policy checkpoints; the module's flag is off
